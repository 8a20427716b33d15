"""Media references -- URLs, data URIs, base64, paths -- turned into bytes under an explicit policy.

This is the one fetcher of the project. The server (``serve``), the command line (``jvlm
infer``) and the library (``JinaVLMProcessor`` given an image URL, hence ``AutoProcessor``,
``apply_chat_template`` and the evaluation runner) all come here; they differ only in the
:class:`MediaPolicy` they pass:

* :data:`SERVER_POLICY` (the server's default, tightened or loosened by its flags): an image
  URL is text chosen by whoever can reach the server, and the server follows it from inside
  the operator's network, so no private, loopback or link-local address, no local files,
  small caps, slow-to-decode encodings refused.
* :data:`LOCAL_POLICY` (the CLI and the library): the user names their own sources, so
  addresses on their own network are allowed -- except link-local ones, where cloud metadata
  services live and no image server does -- with larger caps; everything stays bounded in
  time, bytes, redirects and pixels.

Every source goes through one gate, in this order:

1. ``data:`` URIs and bare base64 are decoded here (no network at all);
   ``file://`` URLs and bare paths only when ``allowed_local_media_path`` is set, and only
   for files whose *real* path is inside it; any scheme other than http/https is refused.
2. The host must match ``allowed_domains`` when an allow-list is configured.
3. The host is resolved exactly once; if *any* address is loopback, private, link-local,
   multicast, reserved, unspecified, shared (CGNAT) or an IPv6 wrapper of one of those, the
   URL is refused unless ``allow_private_urls`` is set (link-local stays refused then unless
   ``allow_link_local`` is set too).
4. The connection goes to the vetted address itself (the URL is rewritten to the IP, the
   original name travels in the Host header and TLS SNI), so a DNS answer that changes
   between check and use (rebinding) cannot redirect it.
5. Redirects are followed by hand, at most ``max_redirects``, each hop checked as above.
6. Connect, read and total time are bounded; the body is streamed under a byte cap.
7. The first bytes must be an image signature (or a PDF's, when ``accept_pdf``), and the
   pixel count in the header must be under ``max_pixels`` *before* anything decodes pixels.

Every failure is a :class:`MediaError` whose message names the URL, the rule, and what to do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from jvlm.errors import JVLMError

log = logging.getLogger(__name__)

#: async (host, port) -> addresses; injectable so tests can map names without real DNS
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_ADDRESSES_TRIED = 3
_USER_AGENT = "jvlm-image-fetcher/0.1"


@dataclass(frozen=True)
class MediaPolicy:
    """What the server may read when a request names an image. Safe by default."""

    allow_private_urls: bool = False
    #: host suffixes allowed (``"example.com"`` allows ``img.example.com``); None = any host
    allowed_domains: tuple[str, ...] | None = None
    #: directory that ``file://`` URLs and bare paths may read from; None = no local files
    allowed_local_media_path: Path | None = None
    max_bytes: int = 20 * 2**20
    max_pixels: int = 64_000_000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    #: whole download, redirects included: a server dripping one byte per read would
    #: otherwise never hit the read timeout
    total_timeout_s: float = 60.0
    max_redirects: int = 3
    max_images: int = 8
    #: extra CA certificates to trust (PEM), e.g. for an internal image host
    ca_bundle: Path | None = None
    #: refuse encodings whose decoder runs in pure Python (RLE-compressed BMP: seconds per
    #: megapixel, holding a thread every prompt build needs) instead of decoding them
    refuse_slow_encodings: bool = True
    #: with ``allow_private_urls``: may link-local addresses (169.254.0.0/16, fe80::/10, where
    #: cloud metadata services answer) be reached too?
    allow_link_local: bool = False
    #: accept PDF bytes as well as images (the CLI renders them to page images)
    accept_pdf: bool = False


class MediaError(JVLMError, ValueError):
    """An image reference could not be turned into acceptable image bytes.

    ``code`` is ``invalid_image_url`` (could not or may not fetch), ``invalid_image`` (the
    bytes are not an acceptable image) or ``too_many_images``; ``param`` is the JSON path of
    the offending field when the caller knows it; ``status_code`` is the HTTP status to answer.
    """

    status_code = 400

    def __init__(self, message: str, *, code: str = "invalid_image_url", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


# ----------------------------------------------------------------------------- addresses

_FORBIDDEN_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
_FORBIDDEN_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form ::a.b.c.d
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _v4_forbidden(ip: ipaddress.IPv4Address) -> bool:
    # the explicit table does not depend on which Python's ipaddress tables are installed
    return (any(ip in net for net in _FORBIDDEN_V4) or ip.is_private or ip.is_loopback
            or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
            or not ip.is_global)


def is_forbidden_address(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True if ``ip`` is not a public unicast address (or hides a non-public IPv4 inside IPv6).

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``,
    6to4 ``2002:AABB:CCDD::``) are judged by the IPv4 address they reach, because that is
    where the packets end up. Unparseable input counts as forbidden.
    """
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return True
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_forbidden(ip)
    if ip.ipv4_mapped is not None:
        return _v4_forbidden(ip.ipv4_mapped)
    if ip in _NAT64:
        return _v4_forbidden(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None and _v4_forbidden(ip.sixtofour):
        return True
    return (any(ip in net for net in _FORBIDDEN_V6) or ip.is_private or ip.is_loopback
            or ip.is_link_local or ip.is_site_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def is_link_local(ip: str) -> bool:
    """169.254.0.0/16 and fe80::/10, also inside IPv4-mapped IPv6."""
    try:
        parsed = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return True
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_link_local


def check_address(ip: str, *, url: str = "", param: str | None = None) -> None:
    """Raise :class:`MediaError` if ``ip`` may not be contacted (see :func:`is_forbidden_address`)."""
    if is_forbidden_address(ip):
        where = f"image URL {url!r} resolves to {ip}" if url else f"address {ip}"
        raise MediaError(
            f"{where}, a loopback/private/link-local/reserved address; fetching it is refused "
            "to protect the server's network. Use a public URL or send the image as a data: URI; "
            "an operator who means to serve internal images can start the server with "
            "--allow-private-urls.", param=param)


async def resolve_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (getaddrinfo runs in the loop's thread pool)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # dedupe, keep order


# ----------------------------------------------------------------------------- bytes

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def sniff_image_format(head: bytes) -> str | None:
    """The image format named by the leading magic bytes, or None if it is none we accept."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def slow_encoding(data: bytes) -> str | None:
    """A name for ``data``'s encoding when its decoder is slow pure Python, else None.

    Pillow decodes run-length-encoded BMP in Python, about a second per 2 megapixels; a
    20 MB file took 7-10 s of a shared thread. The compression field of the BMP info header
    (offset 30, when the header is at least 40 bytes long) says 1 for RLE8 and 2 for RLE4.
    """
    if data[:2] != b"BM" or len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:
        return None
    compression = int.from_bytes(data[30:34], "little")
    return {1: "a run-length encoded (RLE8) BMP", 2: "a run-length encoded (RLE4) BMP"}.get(compression)


def _is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def validate_image_bytes(data: bytes, policy: MediaPolicy, *, source: str = "image",
                         param: str | None = None) -> tuple[int, int]:
    """Check signature and header pixel count without decoding pixels; returns (width, height)."""
    if sniff_image_format(data[:16]) is None:
        raise MediaError(
            f"{source} is not a supported image (PNG, JPEG, GIF, WebP, BMP or TIFF): "
            f"its first bytes are {data[:12]!r}.", code="invalid_image", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
                width, height = im.size
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{source} is too large: {exc}. Send a smaller image.",
                         code="invalid_image", param=param) from exc
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise MediaError(f"{source} has an image signature but its header cannot be read "
                         f"({type(exc).__name__}: {exc}).", code="invalid_image", param=param) from exc
    if width <= 0 or height <= 0:
        raise MediaError(f"{source} is empty ({width}x{height} pixels).", code="invalid_image", param=param)
    slow = slow_encoding(data) if policy.refuse_slow_encodings else None
    if slow is not None:
        raise MediaError(f"{source} is {slow}, an encoding this server does not decode because its decoder is "
                         "very slow; send it as PNG or JPEG.", code="invalid_image", param=param)
    if width * height > policy.max_pixels:
        raise MediaError(
            f"{source} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{policy.max_pixels:,}; downscale it before sending.", code="invalid_image", param=param)
    return width, height


_B64_BODY = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_B64_BAD = re.compile(r"[^A-Za-z0-9+/_=-]")
_WHITESPACE = re.compile(r"\s+")


def decode_data_uri(url: str, *, max_bytes: int | None = None, param: str | None = None) -> bytes:
    """Decode ``data:image/...;base64,...`` or bare base64 into bytes.

    Tolerates what real clients send: no ``data:`` prefix, line breaks or spaces inside,
    the URL-safe alphabet (``-_``), missing ``=`` padding. Refuses non-base64 data URIs,
    non-image media types and characters outside the alphabet, before decoding anything.
    """
    text = url.strip()
    if text[:5].lower() == "data:":
        header, sep, payload = text[5:].partition(",")
        if not sep:
            raise MediaError("data URI has no ',' between its header and its data; expected "
                             "'data:image/png;base64,<data>'.", param=param)
        media_type, *options = (p.strip().lower() for p in header.split(";"))
        if "base64" not in options:
            raise MediaError(f"data URI 'data:{header[:60]},' is not base64; expected "
                             "'data:image/png;base64,<data>'.", param=param)
        if media_type and not media_type.startswith("image/") and media_type != "application/octet-stream":
            raise MediaError(f"data URI has media type {media_type!r}, not an image.",
                             code="invalid_image", param=param)
        if "%" in payload:  # some clients percent-encode '+', '/', '='
            payload = urllib.parse.unquote(payload)
    else:
        payload = text
    compact = _WHITESPACE.sub("", payload)
    if max_bytes is not None and len(compact) * 3 // 4 > max_bytes:
        raise MediaError(f"base64 image is about {len(compact) * 3 // 4:,} bytes, over the limit of "
                         f"{max_bytes:,} bytes; send a smaller image.", code="invalid_image", param=param)
    if not compact:
        raise MediaError("base64 image data is empty.", code="invalid_image", param=param)
    if not _B64_BODY.fullmatch(compact):
        bad = _B64_BAD.search(compact)
        what = f"character {bad.group()!r} at offset {bad.start()}" if bad else "'=' before the end"
        raise MediaError(f"image data is not valid base64: unexpected {what}.",
                         code="invalid_image", param=param)
    body = compact.rstrip("=").translate(str.maketrans("-_", "+/"))
    if len(body) % 4 == 1:
        raise MediaError(f"image data is not valid base64: {len(body)} characters cannot encode "
                         "whole bytes (truncated?).", code="invalid_image", param=param)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise MediaError(f"image data is not valid base64: {exc}.", code="invalid_image", param=param) from exc


# ----------------------------------------------------------------------------- local files

def _read_local(raw_path: str, policy: MediaPolicy, param: str | None) -> bytes:
    """Read a file only if its real path (symlinks resolved) lies inside the allowed folder."""
    root = policy.allowed_local_media_path
    if root is None:
        raise MediaError(f"local image path {raw_path!r} refused: reading server files is disabled. "
                         "Send an http(s) URL or a data: URI; an operator can allow a folder with "
                         "--allowed-local-media-path DIR.", param=param)
    path = Path(raw_path)
    if ".." in path.parts:
        raise MediaError(f"local image path {raw_path!r} contains '..'; give a path inside the "
                         "allowed media folder without '..'.", param=param)
    if not path.is_absolute():
        path = Path(root) / path
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root_real):
        raise MediaError(f"local image path {raw_path!r} is outside the allowed media folder "
                         "(symbolic links are followed before this check).", param=param)
    # O_NOFOLLOW: the vetted real path must not be swapped for a link; O_NONBLOCK: a FIFO must
    # not hang the open (it is then refused as not a regular file)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise MediaError(f"local image {raw_path!r} cannot be opened ({exc.strerror}).", param=param) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise MediaError(f"local image {raw_path!r} is not a regular file.", param=param)
    with os.fdopen(fd, "rb") as f:
        if info.st_size > policy.max_bytes:
            raise MediaError(f"local image {raw_path!r} is {info.st_size:,} bytes, over the limit of "
                             f"{policy.max_bytes:,} bytes.", code="invalid_image", param=param)
        data = f.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise MediaError(f"local image {raw_path!r} grew past the limit of {policy.max_bytes:,} bytes "
                         "while being read.", code="invalid_image", param=param)
    return data


def _file_url_path(url: str, param: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise MediaError(f"file URL {url!r} names host {parts.netloc!r}; only local files "
                         "(file:///path) are supported.", param=param)
    return urllib.parse.unquote(parts.path)


# ----------------------------------------------------------------------------- http(s)

@functools.lru_cache(maxsize=8)
def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    # built once: loading the CA store costs more than a small image download
    ctx = httpx.create_ssl_context(trust_env=False)
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(ca_bundle))
    return ctx


def _parse_http_url(text: str, param: str | None) -> httpx.URL:
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise MediaError(f"image URL {text[:200]!r} is not a valid URL ({exc}).", param=param) from exc
    if url.scheme not in ("http", "https"):
        raise MediaError(f"image URL {text[:200]!r} uses scheme {url.scheme!r}; only http and https "
                         "are fetched (or send a data: URI).", param=param)
    if not url.raw_host:
        raise MediaError(f"image URL {text[:200]!r} has no host.", param=param)
    if url.userinfo:
        raise MediaError(f"image URL {text[:200]!r} carries credentials (user:password@); use a "
                         "signed URL or a data: URI instead.", param=param)
    return url


def _domain_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for domain in allowed:
        domain = domain.lower().strip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


async def _vet(url: httpx.URL, policy: MediaPolicy, param: str | None, resolver: Resolver) -> list[str]:
    """Allow-list, then one resolution, then the address rules; returns addresses to connect to."""
    host = url.raw_host.decode("ascii")
    shown = str(url)[:200]
    if policy.allowed_domains is not None and not _domain_allowed(host, policy.allowed_domains):
        raise MediaError(f"image URL {shown!r}: host {host!r} is not in the allowed domains "
                         f"({', '.join(policy.allowed_domains) or 'none'}); an operator can extend "
                         "--allowed-domains.", param=param)
    if _is_ip_literal(host):
        addresses = [str(ipaddress.ip_address(host))]  # nothing to resolve
    else:
        try:
            addresses = list(await asyncio.wait_for(resolver(host, url.port or _default_port(url)),
                                                    policy.connect_timeout_s))
        except asyncio.TimeoutError:
            raise MediaError(f"image URL {shown!r}: resolving {host!r} took longer than "
                             f"{policy.connect_timeout_s:g} s.", param=param) from None
        except OSError as exc:
            raise MediaError(f"image URL {shown!r}: host {host!r} cannot be resolved ({exc}).",
                             param=param) from exc
    if not addresses:
        raise MediaError(f"image URL {shown!r}: host {host!r} has no addresses.", param=param)
    if policy.allow_private_urls and not policy.allow_link_local:
        for address in addresses:
            if is_link_local(address):
                raise MediaError(f"image URL {shown!r} resolves to {address}, a link-local address (where cloud "
                                 "metadata services answer); it is never fetched.", param=param)
    if not policy.allow_private_urls:
        for address in addresses:  # ANY bad answer refuses: the attacker controls the order
            try:
                check_address(address, url=shown, param=param)
            except MediaError:
                log.warning("refused image URL %s: %s is not a public address", shown, address)
                raise
    return addresses


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


async def _send_pinned(client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]) -> httpx.Response:
    """GET ``url`` from a vetted address: the URL names the IP, Host/SNI carry the name."""
    host = url.raw_host.decode("ascii")
    # SNI must name the host, never an IP; a literal-IP URL already points at its address
    extensions = {"sni_hostname": host} if url.scheme == "https" and not _is_ip_literal(host) else {}
    headers = {"Host": url.netloc.decode("ascii")}
    last_exc: Exception | None = None
    for address in addresses[:_MAX_ADDRESSES_TRIED]:
        request = client.build_request("GET", url.copy_with(host=address), headers=headers,
                                       extensions=extensions)
        try:
            return await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last_exc = exc
    assert last_exc is not None
    raise last_exc


async def _read_capped(response: httpx.Response, policy: MediaPolicy, shown: str, param: str | None) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise MediaError(f"image URL {shown!r} announces {int(declared):,} bytes, over the limit of "
                         f"{policy.max_bytes:,} bytes; use a smaller image.", code="invalid_image", param=param)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # we asked for identity; decompressing would let a tiny body expand past the cap
        raise MediaError(f"image URL {shown!r} answered with Content-Encoding {encoding!r} although "
                         "an uncompressed image was requested.", param=param)
    body = bytearray()
    sniffed = False
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise MediaError(f"image URL {shown!r} sent more than the limit of {policy.max_bytes:,} "
                             "bytes; use a smaller image.", code="invalid_image", param=param)
        if not sniffed and len(body) >= 16:
            sniffed = True  # refuse a non-image before downloading all of it
            if sniff_image_format(bytes(body[:16])) is None and not (policy.accept_pdf and _is_pdf(bytes(body))):
                ctype = response.headers.get("content-type", "unknown")
                raise MediaError(f"image URL {shown!r} did not return an image (content-type {ctype}, "
                                 f"first bytes {bytes(body[:12])!r}).", code="invalid_image", param=param)
    return bytes(body)


async def _fetch_remote(text: str, policy: MediaPolicy, param: str | None, resolver: Resolver) -> bytes:
    url = _parse_http_url(text, param)
    timeout = httpx.Timeout(connect=policy.connect_timeout_s, read=policy.read_timeout_s,
                            write=policy.read_timeout_s, pool=policy.connect_timeout_s)
    for hop in range(policy.max_redirects + 1):
        shown = str(url)[:200]
        addresses = await _vet(url, policy, param, resolver)
        # a fresh client per hop: a pooled connection opened for one name must not carry another
        async with httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False,
                                     verify=_ssl_context(policy.ca_bundle),
                                     headers={"User-Agent": _USER_AGENT, "Accept": "image/*",
                                              "Accept-Encoding": "identity"}) as client:
            try:
                response = await _send_pinned(client, url, addresses)
                try:
                    if response.status_code in _REDIRECT_STATUSES:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaError(f"image URL {shown!r} redirected without a Location.", param=param)
                    elif not 200 <= response.status_code < 300:
                        raise MediaError(f"image URL {shown!r} answered HTTP {response.status_code}; "
                                         "check that the URL is public and correct.", param=param)
                    else:
                        return await _read_capped(response, policy, shown, param)
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                raise MediaError(f"image URL {shown!r} timed out ({type(exc).__name__}; limits: "
                                 f"connect {policy.connect_timeout_s:g} s, read {policy.read_timeout_s:g} s).",
                                 param=param) from exc
            except httpx.HTTPError as exc:
                raise MediaError(f"image URL {shown!r} could not be downloaded "
                                 f"({type(exc).__name__}: {exc}).", param=param) from exc
        try:
            url = url.join(location)
        except (httpx.InvalidURL, ValueError) as exc:
            raise MediaError(f"image URL {shown!r} redirected to an invalid URL {location[:200]!r}.",
                             param=param) from exc
        url = _parse_http_url(str(url), param)  # re-checks scheme: no redirect to file:/data:
        log.debug("image URL %s redirected (hop %d) to %s", shown, hop + 1, url)
    raise MediaError(f"image URL {text[:200]!r} redirected more than {policy.max_redirects} times.",
                     param=param)


# ----------------------------------------------------------------------------- entry points

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


async def fetch_image_bytes(url: str, policy: MediaPolicy, *, param: str | None = None,
                            resolver: Resolver | None = None) -> bytes:
    """Bytes of the image named by an OpenAI ``image_url.url``, after every check above.

    Accepts http(s) URLs, ``data:`` URIs, bare base64, and (only with
    ``allowed_local_media_path``) ``file://`` URLs and paths. ``param`` is the JSON path
    reported in errors; ``resolver`` replaces DNS (for tests and custom resolvers).
    """
    if not isinstance(url, str) or not url.strip():
        raise MediaError("image URL is empty; expected an http(s) URL or a data: URI.", param=param)
    text = url.strip()
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme == "data":
        data = decode_data_uri(text, max_bytes=policy.max_bytes, param=param)
        source = "data URI image"
    elif scheme in ("http", "https"):
        try:
            data = await asyncio.wait_for(_fetch_remote(text, policy, param, resolver or resolve_host),
                                          policy.total_timeout_s)
        except asyncio.TimeoutError:
            raise MediaError(f"image URL {text[:200]!r} took longer than {policy.total_timeout_s:g} s "
                             "to download.", param=param) from None
        except MediaError:
            raise
        except Exception as exc:  # a failed download is the client's 400, never the server's 500
            log.exception("unexpected error while fetching image URL %s", text[:200])
            raise MediaError(f"image URL {text[:200]!r} could not be downloaded ({type(exc).__name__}: "
                             f"{exc}).", param=param) from exc
        source = f"image URL {text[:200]!r}"
    elif scheme == "file":
        path = _file_url_path(text, param)
        data = await asyncio.to_thread(_read_local, path, policy, param)
        source = f"local image {path!r}"
    elif scheme is not None:
        raise MediaError(f"image URL {text[:200]!r} uses scheme {scheme!r}; only http and https are "
                         "fetched (or send a data: URI).", param=param)
    else:
        data, source = await _bare_reference(text, policy, param)
    if not (policy.accept_pdf and _is_pdf(data)):  # a PDF is rendered later, in a bounded process
        validate_image_bytes(data, policy, source=source, param=param)
    return data


def fetch_media(url: str, policy: MediaPolicy, *, param: str | None = None) -> bytes:
    """``fetch_image_bytes`` for synchronous callers (the CLI, the processor); safe to call
    from inside a running event loop too (it then runs on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetch_image_bytes(url, policy, param=param))
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jvlm-fetch") as pool:
        return pool.submit(asyncio.run, fetch_image_bytes(url, policy, param=param)).result()


async def _bare_reference(text: str, policy: MediaPolicy, param: str | None) -> tuple[bytes, str]:
    """No scheme: base64 if it decodes to an image signature, else a local path if allowed.

    Base64 goes first because JPEG base64 starts with '/9j/', which also looks like a path.
    """
    decoded: bytes | None = None
    error: MediaError | None = None
    try:
        decoded = decode_data_uri(text, max_bytes=policy.max_bytes, param=param)
    except MediaError as exc:
        error = exc
    if decoded is not None and sniff_image_format(decoded[:16]) is not None:
        return decoded, "base64 image"
    if policy.allowed_local_media_path is not None and len(text) < 4096:
        return await asyncio.to_thread(_read_local, text, policy, param), f"local image {text!r}"
    if decoded is not None:
        return decoded, "base64 image"  # validate_image_bytes explains why it is not an image
    raise MediaError(f"image URL {text[:80]!r} is neither an http(s) URL, a data: URI nor base64 "
                     f"({error.message if error else 'unknown form'}).",
                     code="invalid_image", param=param)


#: the server's default; its flags derive a stricter or looser one
SERVER_POLICY = MediaPolicy()
#: the command line and the library: the user's own sources, bounded all the same
LOCAL_POLICY = MediaPolicy(allow_private_urls=True, max_bytes=50 * 2**20, max_pixels=178_956_970,
                           total_timeout_s=120.0, max_redirects=5, refuse_slow_encodings=False)


def check_image_count(n_images: int, policy: MediaPolicy, *, param: str | None = "messages") -> None:
    """Refuse a request with more images than the server takes, saying both numbers."""
    if n_images > policy.max_images:
        raise MediaError(f"the request has {n_images} images; this server accepts at most "
                         f"{policy.max_images} per request. Split the request or send fewer images.",
                         code="too_many_images", param=param)
