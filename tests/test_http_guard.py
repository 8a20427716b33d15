"""Connection and request hardening, seen from raw sockets and httpx: what a web page can make a
browser send to a server on localhost, and what a client that never finishes its request
does to the others.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import httpx
import pytest
from test_server import API_KEY, serve, user

from jvlm.serve.app import ServerConfig
from jvlm.serve.guard import HttpLimits

LIMITS = HttpLimits(header_timeout_s=1.0, request_timeout_s=3.0, max_header_bytes=16 * 1024, max_headers=50)
CHAT = {"messages": user("hi"), "max_tokens": 1}


@pytest.fixture(scope="module")
def open_server(tiny_model_dir):
    """No API key: the configuration a user runs on their own machine."""
    with serve(ServerConfig(model_dir=tiny_model_dir, http=LIMITS)) as running:
        yield running


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_foreign_host_names_are_refused_without_a_key(open_server):
    base, _ = open_server
    rebound = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(f"{base}/v1/models", headers={"Host": "attacker.test"}).status_code == 421
    for host in (f"127.0.0.1:{_port(base)}", f"localhost:{_port(base)}", "[::1]:80", "10.1.2.3"):
        assert httpx.get(f"{base}/v1/models", headers={"Host": host}).status_code == 200, host
    assert httpx.get(f"{base}/health", headers={"Host": "lb-probe.internal"}).status_code == 200


def test_cross_site_posts_are_refused(open_server):
    base, _ = open_server
    url = f"{base}/v1/chat/completions"
    import json
    body = json.dumps(CHAT)
    # what a form or fetch(..., {mode: "no-cors"}) on another site can send without a preflight
    for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"):
        r = httpx.post(url, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", content_type
    assert httpx.post(url, content=body).status_code == 415  # no content type at all
    r = httpx.post(url, json=CHAT, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    same_origin = httpx.post(url, json=CHAT, headers={"Origin": base})  # the playground page
    assert same_origin.status_code == 200, same_origin.text


def test_allow_lists_open_what_they_name(tiny_model_dir):
    limits = replace(LIMITS, allowed_hosts=("vlm.lan",), allowed_origins=("https://app.lan",))
    with serve(ServerConfig(model_dir=tiny_model_dir, http=limits)) as (base, _):
        url = f"{base}/v1/chat/completions"
        assert httpx.post(url, json=CHAT, headers={"Host": "vlm.lan:8000"}).status_code == 200
        assert httpx.post(url, json=CHAT, headers={"Host": "other.lan"}).status_code == 421
        assert httpx.post(url, json=CHAT, headers={"Origin": "https://app.lan"}).status_code == 200
        assert httpx.post(url, json=CHAT, headers={"Origin": "https://evil.lan"}).status_code == 403
    with serve(ServerConfig(model_dir=tiny_model_dir, http=LIMITS, api_key=API_KEY)) as (base, _):
        # a page cannot know the key, so a keyed server answers any name (reverse proxies)
        r = httpx.get(f"{base}/v1/models", headers={"Host": "api.example.com",
                                                      "Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200


def _slow_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return s


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def test_slowloris_and_idle_connections_are_cut_and_others_are_served(open_server):
    base, _ = open_server
    port = _port(base)
    slow = [_slow_client(port) for _ in range(20)]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    t0 = time.monotonic()
    for _ in range(3):  # a header line now and then: each byte used to restart every timer
        for s in slow:
            s.sendall(b"X-Slow: 1\r\n")
        r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text  # the others are answered meanwhile
        time.sleep(0.2)
    assert all(_closed_by_server(s, within_s=5) for s in slow + idle)
    assert time.monotonic() - t0 < 8  # cut at the 1 s head deadline, not left open
    for s in slow + idle:
        s.close()


def test_a_slow_body_is_cut_at_the_request_deadline(open_server):
    base, _ = open_server
    s = socket.create_connection(("127.0.0.1", _port(base)))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n{\"messages\": ")
    t0 = time.monotonic()
    closed = _closed_by_server(s, within_s=10)
    s.close()
    assert closed and time.monotonic() - t0 < 6


def test_oversized_and_too_many_headers_are_refused(open_server):
    base, _ = open_server
    port = _port(base)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (64 * 1024))
    s.settimeout(10)
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]  # refused before the head is complete
    many = {f"X-H{i}": "1" for i in range(60)}
    r = httpx.get(f"{base}/v1/models", headers=many)
    assert r.status_code == 431 and r.json()["error"]["code"] == "too_many_headers"


def test_past_the_connection_limit_the_answer_is_a_503_in_the_api_shape(tiny_model_dir):
    with serve(ServerConfig(model_dir=tiny_model_dir, http=replace(LIMITS, max_connections=4))) as (base, _):
        port = _port(base)
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            time.sleep(0.2)
            r = httpx.get(f"{base}/v1/models")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "server_overloaded"
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        assert httpx.get(f"{base}/v1/models").status_code == 200
