"""Connection and request hardening that every route inherits: an ASGI layer and the HTTP
protocol the server runs under uvicorn.

What a browser page can make a browser do to a server on localhost, and what a client that
never finishes its request can do to everyone else, is decided here, before any route runs:

* **DNS rebinding.** A page on ``evil.example`` re-points its name at 127.0.0.1 and reads the
  answers, because to the browser it is still the same origin. The ``Host`` header betrays
  it: on a server without an API key only IP literals, ``localhost`` and the names in
  ``allowed_hosts`` are served (421 otherwise).
* **Cross-site requests.** A page can POST to any address without asking first as long as
  the body is ``text/plain``, a form or has no type. Such bodies are refused (415): the API
  reads JSON, and a JSON content type forces the browser to ask first (CORS preflight), which
  this server never grants. A request whose ``Origin`` is another site is refused (403)
  unless listed in ``allowed_origins``; the playground, served from the same origin, passes.
* **Oversized and slow requests.** Header block size is capped by the protocol (431/400
  before the headers are buffered further), header count by this layer (431); a connection
  must deliver its request head within ``header_timeout_s`` and its whole request within
  ``request_timeout_s`` or it is closed (slowloris), an idle keep-alive connection is closed
  after ``keep_alive_s``, and past ``max_connections`` uvicorn answers 503 at once.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: request bodies a browser may send cross-site without a preflight (the CORS "simple" types)
_SIMPLE_CONTENT_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
#: routes an orchestrator probes by IP or service name: no Host check there
_PROBE_PATHS = ("/health", "/ready", "/metrics")


@dataclass(frozen=True)
class HttpLimits:
    """Connection-level limits of ``jvlm serve`` (flags of the same names)."""

    max_header_bytes: int = 64 * 1024  # the whole request head; h11's default is 16 KiB
    max_headers: int = 100
    header_timeout_s: float = 10.0  # from connection (or the last answer) to a complete request head
    request_timeout_s: float = 120.0  # from connection to a complete request body
    keep_alive_s: float = 5.0
    max_connections: int = 1024
    #: Host names served besides IP literals and localhost ("*": any); None = none
    allowed_hosts: tuple[str, ...] | None = None
    #: origins (scheme://host[:port]) allowed to call from a browser besides the server's own
    allowed_origins: tuple[str, ...] | None = None


def _error(status: int, message: str, code: str) -> tuple[dict, bytes]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, body


def _host_name(host: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.COM:80`` -> ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI layer: Host, Origin, content type and header count (see the module docstring).

    ``keyed`` servers skip the Host check unless ``allowed_hosts`` is set: a page that cannot
    know the key cannot use the answers it rebinds to.
    """

    def __init__(self, app, limits: HttpLimits, keyed: bool):
        self.app, self.limits = app, limits
        hosts = limits.allowed_hosts
        self._any_host = hosts is not None and "*" in hosts
        self._hosts = {h.lower().rstrip(".") for h in hosts or ()} | {"localhost"}
        self._check_host = not self._any_host and (not keyed or hosts is not None)
        self._origins = {o.lower().rstrip("/") for o in limits.allowed_origins or ()}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._check(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message, code = refusal
        log.info("refused %s %s: %s", scope["method"], scope["path"], message)
        start, body = _error(status, message, code)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _check(self, scope) -> tuple[int, str, str] | None:
        headers = scope["headers"]
        if len(headers) > self.limits.max_headers:
            return 431, f"the request has {len(headers)} headers, more than the {self.limits.max_headers} allowed", \
                "too_many_headers"
        found: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in (b"host", b"origin", b"content-type"):
                found.setdefault(name, value)
        host = found.get(b"host", b"").decode("latin-1")
        if self._check_host and scope["path"] not in _PROBE_PATHS:
            name = _host_name(host).rstrip(".")
            if not (_is_ip(name) or name in self._hosts or name.endswith(".localhost")):
                return 421, (f"this server does not answer for the host name {name!r}; start it with "
                             f"--allowed-hosts {name} (or give it an API key) to serve that name"), "host_not_allowed"
        origin = found.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1").strip().lower().rstrip("/")
            same_origin = text != "null" and text.split("://", 1)[-1] == host.strip().lower()
            if not same_origin and text not in self._origins:
                return 403, (f"requests from the web page origin {text!r} are refused; start the server with "
                             f"--allowed-origins {text} to allow it"), "origin_not_allowed"
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media = found.get(b"content-type", b"").split(b";", 1)[0].strip().lower().decode("latin-1")
            if not media or media in _SIMPLE_CONTENT_TYPES:
                return 415, (f"the request body is sent as {media or 'no content type'!r}; send it as "
                             "'Content-Type: application/json'"), "unsupported_media_type"
        return None


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for the request head and body (slowloris), set
    from the class attributes (``protocol_class`` makes a configured subclass)."""

    header_timeout_s = 10.0
    request_timeout_s = 120.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # uvicorn answers over its concurrency limit in plain text; this answers in the OpenAI
        # error shape every client of the API parses, with Retry-After
        self._max_in_flight, self.limit_concurrency = self.limit_concurrency, None
        self.app = self._limited(self.app)

    def _limited(self, app):
        async def limited(scope, receive, send):
            limit = self._max_in_flight  # (this connection and this request's task included)
            if scope["type"] == "http" and limit is not None and (
                    len(self.connections) > limit or len(self.tasks) > limit):
                start, body = _error(503, f"the server has {limit} connections or requests in flight, its limit; "
                                     "retry after the delay in the Retry-After header", "server_overloaded")
                start["headers"].append((b"retry-after", b"1"))
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return limited

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_timer = None
        self._arm(self.header_timeout_s, self._head_deadline)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request head is due like the first
            self._arm(self.header_timeout_s, self._head_deadline)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float, callback) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        timer = getattr(self, "_request_timer", None)
        if timer is not None:
            timer.cancel()
            self._request_timer = None

    def _head_deadline(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self._close("no complete request head")
        elif state is h11.SEND_BODY:
            self._arm(max(self.request_timeout_s - self.header_timeout_s, 0.0), self._body_deadline)

    def _body_deadline(self) -> None:
        if self.conn.their_state is h11.SEND_BODY:
            self._close("the request body did not arrive in time")

    def _close(self, why: str) -> None:
        if not self.transport.is_closing():
            log.info("closing a connection from %s: %s", self.client, why)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()


def protocol_class(limits: HttpLimits) -> type[BoundedH11Protocol]:
    return type("ConfiguredH11Protocol", (BoundedH11Protocol,), {
        "header_timeout_s": limits.header_timeout_s, "request_timeout_s": limits.request_timeout_s})


def uvicorn_config(app, host: str, port: int, limits: HttpLimits, **kwargs):
    """A ``uvicorn.Config`` with the limits applied (``kwargs``: log level, shutdown timeout...)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=protocol_class(limits),
                          h11_max_incomplete_event_size=limits.max_header_bytes,
                          timeout_keep_alive=max(1, round(limits.keep_alive_s)),
                          limit_concurrency=limits.max_connections, **kwargs)
