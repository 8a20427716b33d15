"""Safe image fetching: real sockets on loopback only.

Every test runs behind a tripwire that fails it if the fetcher ever tries to send an HTTP
request to a non-loopback address, so a broken address check cannot leak traffic.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from jvlm import media as fetch
from jvlm.media import (
    MediaError,
    MediaPolicy,
    check_image_count,
    decode_data_uri,
    fetch_image_bytes,
    is_forbidden_address,
)


def _encode(fmt: str, w: int = 4, h: int = 3) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 40)).save(buf, fmt)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR announces w x h pixels but whose body is a few bytes (a 'pixel bomb')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


PNG = _encode("PNG")
JPEG = _encode("JPEG")


def run(coro):
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- test server

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "image/png", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv = self.server
        path, _, query = self.path.partition("?")
        srv.seen.append((path, self.headers.get("Host")))
        stop = srv.stop
        if path == "/ok.png":
            self._send(200, PNG)
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, b"", "text/plain", {"Location": f"/redirect/{n - 1}" if n > 1 else "/ok.png"})
        elif path == "/to":
            target = urllib.parse.parse_qs(query)["url"][0]
            self._send(302, b"", "text/plain", {"Location": target})
        elif path == "/page.html":
            self._send(200, b"<html><body>not an image</body></html>" * 4, "text/html")
        elif path == "/huge.png":
            self._send(200, _png_header_only(20000, 20000))
        elif path == "/big-header.png":
            self._send(200, _png_header_only(10000, 10000))
        elif path == "/slow.png":
            stop.wait(1.5)
            self._send(200, PNG)
        elif path == "/drip.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(PNG[:16])
            for _ in range(20):  # at most 2 s
                if stop.wait(0.1):
                    break
                self.wfile.write(b"\0")
                self.wfile.flush()
        elif path == "/declared-big.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(PNG[:16])
        elif path == "/endless.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # HTTP/1.0, no length: body runs until close
            self.wfile.write(PNG[:16])
            for _ in range(64):  # 4 MiB at most
                self.wfile.write(b"\0" * 65536)
        elif path == "/gzip.png":
            self._send(200, zlib.compress(PNG), headers={"Content-Encoding": "gzip"})
        else:
            self._send(404, b"missing", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients hanging up early is expected
        pass


def _start(ssl_context: ssl.SSLContext | None = None):
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen, server.stop = [], threading.Event()
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread):
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def http_server():
    server, thread = _start()
    yield server
    _stop(server, thread)


@pytest.fixture()
def srv(http_server):
    http_server.seen.clear()
    return http_server


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Tripwire: the fetcher may only ever open connections to loopback in these tests."""
    original = httpx.AsyncClient.send

    async def guarded(self, request, **kwargs):
        host = request.url.host
        assert ipaddress.ip_address(host).is_loopback, f"fetcher tried to contact {host}"
        return await original(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", guarded)


def _resolver(table: dict[str, list[str]], calls: list | None = None):
    async def resolve(host: str, port: int):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]
    return resolve


@pytest.fixture()
def pretend_loopback_public(monkeypatch):
    """Treat 127.0.0.1 as public so a loopback server can stand in for an internet host."""
    real = fetch.is_forbidden_address
    monkeypatch.setattr(fetch, "is_forbidden_address", lambda ip: False if str(ip) == "127.0.0.1" else real(ip))


OPEN = MediaPolicy(allow_private_urls=True)
STRICT = MediaPolicy()


# ----------------------------------------------------------------------------- addresses

@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "[::1]", "::", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "ff02::1", "not-an-ip",
])
def test_non_public_addresses_are_forbidden(ip):
    assert is_forbidden_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(ip):
    # a blanket refusal would also pass the test above; public hosts must still work
    assert not is_forbidden_address(ip)


# ----------------------------------------------------------------------------- http

def test_loopback_url_refused_by_default_allowed_with_flag(srv):
    url = f"http://127.0.0.1:{srv.server_port}/ok.png"
    with pytest.raises(MediaError) as err:
        run(fetch_image_bytes(url, STRICT, param="messages[0].content[1].image_url.url"))
    assert err.value.code == "invalid_image_url" and err.value.status_code == 400
    assert err.value.param == "messages[0].content[1].image_url.url"
    assert "--allow-private-urls" in str(err.value) and "127.0.0.1" in str(err.value)
    assert srv.seen == []  # refused before connecting
    assert run(fetch_image_bytes(url, OPEN)) == PNG


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/x.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]:{port}/ok.png",
    "http://[::ffff:127.0.0.1]:{port}/ok.png", "http://[::ffff:10.0.0.1]/x.png", "http://0.0.0.0:{port}/ok.png",
    "http://2130706433:{port}/ok.png", "https://[fe80::1]/x.png",
])
def test_private_literal_urls_refused(srv, url):
    with pytest.raises(MediaError, match="allow-private-urls"):
        run(fetch_image_bytes(url.format(port=srv.server_port), STRICT))
    assert srv.seen == []


def test_hostname_resolving_to_loopback_refused(srv):
    with pytest.raises(MediaError, match="resolves to"):
        run(fetch_image_bytes(f"http://localhost:{srv.server_port}/ok.png", STRICT))
    assert srv.seen == []


def test_connects_to_vetted_address_without_second_lookup(srv):
    # 'images.test' exists only in this resolver: success proves the connection went to the
    # vetted IP, and one call proves no re-resolution a rebinding attacker could exploit
    calls: list[str] = []
    url = f"http://images.test:{srv.server_port}/ok.png"
    assert run(fetch_image_bytes(url, OPEN, resolver=_resolver({"images.test": ["127.0.0.1"]}, calls))) == PNG
    assert calls == ["images.test"]
    assert srv.seen == [("/ok.png", f"images.test:{srv.server_port}")]


def test_any_forbidden_answer_refuses(srv, pretend_loopback_public):
    resolve = _resolver({"mixed.test": ["127.0.0.1", "169.254.169.254"]})
    with pytest.raises(MediaError, match="169.254.169.254"):
        run(fetch_image_bytes(f"http://mixed.test:{srv.server_port}/ok.png", STRICT, resolver=resolve))
    assert srv.seen == []


@pytest.mark.parametrize("target", [
    "http://metadata.test/latest/meta-data/", "http://127.0.0.2:{port}/ok.png", "http://[::1]:{port}/ok.png",
])
def test_redirect_to_forbidden_target_refused(srv, pretend_loopback_public, target):
    resolve = _resolver({"public.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]})
    location = urllib.parse.quote(target.format(port=srv.server_port), safe="")
    with pytest.raises(MediaError, match="allow-private-urls"):
        run(fetch_image_bytes(f"http://public.test:{srv.server_port}/to?url={location}", STRICT, resolver=resolve))
    assert [p for p, _ in srv.seen] == ["/to"]  # the forbidden hop was never contacted


def test_redirect_to_other_scheme_refused(srv):
    location = urllib.parse.quote("file:///etc/passwd", safe="")
    with pytest.raises(MediaError, match="scheme 'file'"):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/to?url={location}", OPEN))


def test_redirect_limit(srv):
    base = f"http://127.0.0.1:{srv.server_port}"
    assert run(fetch_image_bytes(f"{base}/redirect/3", OPEN)) == PNG
    with pytest.raises(MediaError, match="more than 3 times"):
        run(fetch_image_bytes(f"{base}/redirect/4", OPEN))
    assert run(fetch_image_bytes(f"{base}/redirect/4", MediaPolicy(allow_private_urls=True, max_redirects=4))) == PNG


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "gopher://127.0.0.1/", "file:///etc/passwd",
                                 "/etc/passwd", "localhost:8080/x.png"])
def test_other_schemes_and_paths_refused_by_default(url):
    with pytest.raises(MediaError) as err:
        run(fetch_image_bytes(url, OPEN))
    assert err.value.status_code == 400


def test_domain_allow_list_matches_suffix_at_label_boundary(srv):
    calls: list[str] = []
    resolve = _resolver({"img.example.test": ["127.0.0.1"]}, calls)
    policy = MediaPolicy(allow_private_urls=True, allowed_domains=("example.test",))
    assert run(fetch_image_bytes(f"http://img.example.test:{srv.server_port}/ok.png", policy, resolver=resolve)) == PNG
    for host in ("badexample.test", "example.test.evil.test", "127.0.0.1"):
        with pytest.raises(MediaError, match="allowed domains"):
            run(fetch_image_bytes(f"http://{host}:{srv.server_port}/ok.png", policy, resolver=resolve))
    assert calls == ["img.example.test"]  # refused hosts are not even resolved


def test_unresolvable_and_slow_resolution_are_media_errors():
    with pytest.raises(MediaError, match="cannot be resolved"):
        run(fetch_image_bytes("http://nowhere.test/x.png", OPEN, resolver=_resolver({})))

    async def hang(host, port):
        await asyncio.sleep(5)
    with pytest.raises(MediaError, match="resolving"):
        run(fetch_image_bytes("http://slow.test/x.png", MediaPolicy(connect_timeout_s=0.2), resolver=hang))


def test_non_image_response_refused(srv):
    with pytest.raises(MediaError, match="text/html") as err:
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/page.html", OPEN))
    assert err.value.code == "invalid_image"


def test_http_error_status_reported(srv):
    with pytest.raises(MediaError, match="HTTP 404"):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/missing.png", OPEN))


@pytest.mark.parametrize("path,expected", [("/huge.png", "too large"), ("/big-header.png", "10000x10000")])
def test_pixel_bomb_refused_from_header(srv, path, expected):
    with pytest.raises(MediaError, match=expected) as err:
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}{path}", OPEN))
    assert err.value.code == "invalid_image"


def test_read_timeout(srv):
    policy = MediaPolicy(allow_private_urls=True, read_timeout_s=0.3)
    with pytest.raises(MediaError, match="timed out"):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/slow.png", policy))


def test_total_timeout_stops_a_dripping_server(srv):
    policy = MediaPolicy(allow_private_urls=True, read_timeout_s=1.0, total_timeout_s=0.5)
    with pytest.raises(MediaError, match="took longer than 0.5 s"):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/drip.png", policy))


@pytest.mark.parametrize("path,expected", [("/declared-big.png", "announces"), ("/endless.png", "more than the limit")])
def test_byte_cap(srv, path, expected):
    policy = MediaPolicy(allow_private_urls=True, max_bytes=100_000)
    with pytest.raises(MediaError, match=expected):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}{path}", policy))


def test_compressed_body_refused(srv):
    with pytest.raises(MediaError, match="Content-Encoding"):
        run(fetch_image_bytes(f"http://127.0.0.1:{srv.server_port}/gzip.png", OPEN))


def test_https_verifies_certificate_and_sends_sni_for_the_name(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=images.test",
                    "-addext", "subjectAltName=DNS:images.test"], check=True, capture_output=True, timeout=30)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    server, thread = _start(server_ctx)
    try:
        resolve = _resolver({"images.test": ["127.0.0.1"]})
        url = f"https://images.test:{server.server_port}/ok.png"
        policy = MediaPolicy(allow_private_urls=True, ca_bundle=cert)
        assert run(fetch_image_bytes(url, policy, resolver=resolve)) == PNG
        assert sni == ["images.test"]
        # without the CA the certificate must not be trusted
        with pytest.raises(MediaError, match="could not be downloaded"):
            run(fetch_image_bytes(url, OPEN, resolver=resolve))
    finally:
        _stop(server, thread)


# ----------------------------------------------------------------------------- data URIs

B64 = base64.b64encode(PNG).decode()


@pytest.mark.parametrize("text", [
    f"data:image/png;base64,{B64}",
    f"DATA:image/jpeg;BASE64,{B64}",  # the declared type may be wrong; the bytes decide
    B64,
    base64.encodebytes(PNG).decode(),  # 76-column lines with newlines
    "  " + " ".join(B64[i:i + 10] for i in range(0, len(B64), 10)) + "\n",
    base64.urlsafe_b64encode(PNG).decode(),
    B64.rstrip("="),
    f"data:image/png;base64,{urllib.parse.quote(B64, safe='')}",
])
def test_data_uri_variants_decode(text):
    assert decode_data_uri(text) == PNG
    assert run(fetch_image_bytes(text, STRICT)) == PNG


def test_bare_jpeg_base64_is_not_mistaken_for_a_path(tmp_path):
    jpeg_b64 = base64.b64encode(JPEG).decode()
    assert jpeg_b64.startswith("/9j/")
    assert run(fetch_image_bytes(jpeg_b64, MediaPolicy(allowed_local_media_path=tmp_path))) == JPEG


@pytest.mark.parametrize("text,expected", [
    ("data:image/png,rawbytes", "not base64"),
    ("data:text/plain;base64,aGVsbG8=", "not an image"),
    ("data:image/png;base64", "no ','"),
    ("data:image/png;base64,iVBOR*w0K", "unexpected character '\\*'"),
    ("data:image/png;base64,", "empty"),
    ("data:image/png;base64,iVBORw0KG", "cannot encode whole bytes"),
])
def test_malformed_data_uris_refused(text, expected):
    with pytest.raises(MediaError, match=expected):
        decode_data_uri(text)


def test_valid_base64_of_non_image_refused():
    with pytest.raises(MediaError, match="not a supported image") as err:
        run(fetch_image_bytes("data:image/png;base64," + base64.b64encode(b"hello world" * 10).decode(), STRICT))
    assert err.value.code == "invalid_image"


def test_two_megabytes_of_garbage_base64_refused():
    junk_chars = "!@#$" * (2**21 // 4)
    random_like = base64.b64encode(bytes(range(256)) * (3 * 2**21 // 4 // 256)).decode()
    for text in (junk_chars, "data:image/png;base64," + junk_chars, random_like):
        with pytest.raises(MediaError) as err:
            run(fetch_image_bytes(text, STRICT))
        assert err.value.code == "invalid_image"


def test_data_uri_over_byte_cap_refused_before_decoding():
    with pytest.raises(MediaError, match="over the limit"):
        run(fetch_image_bytes(f"data:image/png;base64,{B64}", MediaPolicy(max_bytes=10)))


def test_pixel_bomb_in_data_uri_refused():
    bomb = base64.b64encode(_png_header_only(20000, 20000)).decode()
    with pytest.raises(MediaError, match="too large"):
        run(fetch_image_bytes(bomb, STRICT))


# ----------------------------------------------------------------------------- local files

@pytest.fixture()
def media_dir(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cat.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "inner-link.png").symlink_to(root / "sub" / "cat.png")
    return root


def test_local_paths_allowed_only_inside_the_folder(media_dir):
    policy = MediaPolicy(allowed_local_media_path=media_dir)
    cat = media_dir / "sub" / "cat.png"
    for ref in (str(cat), cat.as_uri(), "sub/cat.png", str(media_dir / "inner-link.png")):
        assert run(fetch_image_bytes(ref, policy)) == PNG, ref
    refused = {
        str(media_dir.parent / "secret.png"): "outside",
        str(media_dir / "escape.png"): "outside",  # symlink pointing out
        str(media_dir / "sub" / ".." / ".." / "secret.png"): "'..'",
        str(media_dir / "sub"): "not a regular file",
        str(media_dir / "nothing.png"): "cannot be opened",
        "file://otherhost/etc/passwd": "names host",
    }
    for ref, expected in refused.items():
        with pytest.raises(MediaError, match=expected):
            run(fetch_image_bytes(ref, policy))


def test_local_paths_refused_without_a_folder(media_dir):
    with pytest.raises(MediaError, match="--allowed-local-media-path"):
        run(fetch_image_bytes((media_dir / "sub" / "cat.png").as_uri(), STRICT))


def test_too_many_images():
    check_image_count(8, STRICT)
    with pytest.raises(MediaError, match="9 images.*at most 8") as err:
        check_image_count(9, STRICT)
    assert err.value.code == "too_many_images"
