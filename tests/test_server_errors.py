"""Every way a request can go wrong gets its OpenAI error object and the right status, never a 500.

Same real server as ``test_server.py`` (uvicorn on loopback, tiny model), safe defaults:
image URLs that reach loopback, private, link-local or IPv6-equivalent addresses are
refused, and a loopback image server records that it was never contacted.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.parse
import zlib
from dataclasses import replace

import httpx
import openai
import pytest
from test_server import (
    API_KEY,
    MODEL,
    client_for,
    data_uri,
    png,
    running_image_server,
    serve,
    user,
)

from jvlm import media as fetch
from jvlm.media import MediaPolicy

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BODY_LIMIT = 3 * 2**20


async def _resolve(host: str, port: int) -> list[str]:
    """DNS for the tests: names under .test map to fixed addresses, nothing else resolves."""
    table = {"public.test": ["127.0.0.1"], "sneaky.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}
    if host not in table:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return table[host]


@pytest.fixture(scope="module")
def image_server():
    with running_image_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    config_ = replace(_base_config(tiny_model_dir), max_body_bytes=BODY_LIMIT, resolver=_resolve)
    with serve(config_) as running:
        yield running


def _base_config(model_dir):
    from jvlm.serve.app import ServerConfig

    return ServerConfig(model_dir=model_dir, api_key=API_KEY, media=MediaPolicy(max_images=3))


@pytest.fixture()
def post(server):
    """POST a JSON body (or raw bytes) to chat completions; returns the httpx response."""
    def send(body, headers=AUTH):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{server[0]}/v1/chat/completions", content=content, timeout=60,
                          headers={"Content-Type": "application/json", **headers})
    return send


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def chat(*image_urls: str, **fields) -> dict:
    return {"model": MODEL, "messages": user("What is in the image?", *image_urls), "max_tokens": 2, **fields}


# ----------------------------------------------------------------------------- request shape

def test_malformed_json(post):
    err = error_of(post(b'{"messages": [}'), 400)
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"


def test_deeply_nested_json_is_a_400(post):
    err = error_of(post(b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400)
    assert err["type"] == "invalid_request_error"


def test_schema_violation_names_the_json_path(post):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                      {"type": "image_url", "image_url": {}}]}]}
    err = error_of(post(body), 400)
    assert err["param"] == "messages[0].content[1].image_url.url"
    err = error_of(post({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), 400)
    assert err["param"] == "temperature"


def test_unknown_model_and_unknown_route(post, server):
    err = error_of(post({"model": "gpt-4o", "messages": user("hi")}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    err = error_of(httpx.get(f"{server[0]}/v1/nothing-here", headers=AUTH), 404)
    assert err["code"] == "not_found"


def test_text_cannot_smuggle_image_tokens(post):
    # typed image tokens are read as plain text: no image slot, so no image tokens are counted
    typed = post({"messages": user("look: <im_patch><|image|>"), "max_tokens": 1})
    with_image = post(chat(data_uri(png()), max_tokens=1))
    assert typed.status_code == 200, typed.text
    assert typed.json()["usage"]["prompt_tokens"] < 60 < with_image.json()["usage"]["prompt_tokens"]


def test_context_length_exceeded_gives_the_counts(post):
    err = error_of(post(chat(data_uri(png()), max_tokens=8190)), 400)
    assert err["code"] == "context_length_exceeded"
    assert "8190" in err["message"] and "image tokens" in err["message"] and "8192" in err["message"]


def test_body_over_the_limit_is_413(post):
    big = json.dumps(chat("A" * (BODY_LIMIT + 1))).encode()
    err = error_of(post(big), 413)
    assert err["code"] == "request_too_large"


# ----------------------------------------------------------------------------- authentication

def test_wrong_or_missing_api_key_is_401_and_health_stays_open(server, post):
    with pytest.raises(openai.AuthenticationError) as wrong:
        client_for(server[0], api_key="not-the-key").chat.completions.create(model=MODEL, messages=user("hi"))
    assert wrong.value.body["code"] == "invalid_api_key"
    err = error_of(post(chat(), headers={}), 401)
    assert err["code"] == "invalid_api_key"
    assert error_of(httpx.get(f"{server[0]}/v1/models"), 401)["code"] == "invalid_api_key"
    assert httpx.get(f"{server[0]}/health").status_code == 200


# ----------------------------------------------------------------------------- images

def _png_header(w: int, h: int) -> bytes:
    """A PNG whose IHDR announces w x h RGB pixels, followed by a few bytes of pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))


def test_pixel_bomb_refused_from_its_header(post):
    err = error_of(post(chat(data_uri(_png_header(20_000, 20_000)))), 400)
    assert err["code"] == "invalid_image" and "pixels" in err["message"] and "smaller" in err["message"]
    assert err["param"] == "messages[0].content[0].image_url.url"


def test_two_megabytes_of_garbage_base64(post):
    garbage = "data:image/png;base64," + "!@#$" * (2 * 2**20 // 4)
    err = error_of(post(chat(garbage)), 400)
    assert err["code"] == "invalid_image" and "base64" in err["message"]


@pytest.mark.parametrize("url", [
    data_uri(b"just some text, not an image", "text/plain"),
    data_uri(b"just some text, not an image, but said to be a PNG"),
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg",  # a PNG cut short inside its header
])
def test_a_part_that_is_not_an_image(post, url):
    err = error_of(post(chat(url)), 400)
    assert err["code"] == "invalid_image" and err["param"] == "messages[0].content[0].image_url.url"


def test_too_many_images(post):
    err = error_of(post(chat(*[data_uri(png(8, 8))] * 4)), 400)  # the server takes 3
    assert err["code"] == "too_many_images" and "4" in err["message"] and "3" in err["message"]


@pytest.mark.parametrize("template", [
    "http://127.0.0.1:{port}/ok.png", "http://10.1.2.3/x.png", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/ok.png", "http://[::ffff:127.0.0.1]:{port}/ok.png", "http://[::ffff:a9fe:a9fe]/x.png",
    "http://sneaky.test:{port}/ok.png", "http://metadata.test/latest/meta-data/",
])
def test_private_addresses_refused_by_default(post, image_server, template):
    image_server.seen.clear()
    err = error_of(post(chat(template.format(port=image_server.server_port))), 400)
    assert err["code"] == "invalid_image_url" and "--allow-private-urls" in err["message"]
    assert image_server.seen == []


def test_redirect_from_an_allowed_host_to_a_private_one_refused(post, image_server, monkeypatch):
    # 'public.test' resolves to 127.0.0.1, which this test declares public; the redirect
    # target 127.0.0.2 is loopback and must not be contacted
    real = fetch.is_forbidden_address
    monkeypatch.setattr(fetch, "is_forbidden_address", lambda ip: str(ip) != "127.0.0.1" and real(ip))
    image_server.seen.clear()
    base = f"http://public.test:{image_server.server_port}"
    assert post(chat(f"{base}/ok.png")).status_code == 200  # the allowed host itself works
    target = urllib.parse.quote(f"http://127.0.0.2:{image_server.server_port}/ok.png", safe="")
    err = error_of(post(chat(f"{base}/redirect?to={target}")), 400)
    assert err["code"] == "invalid_image_url" and "127.0.0.2" in err["message"]
    assert image_server.seen == ["/ok.png", f"/redirect?to={target}"]


def test_local_files_refused_without_a_folder(post, tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    err = error_of(post(chat(f"file://{tmp_path / 'a.png'}")), 400)
    assert err["code"] == "invalid_image_url" and "--allowed-local-media-path" in err["message"]


def test_no_error_left_the_server_as_a_500(server):
    text = httpx.get(f"{server[0]}/metrics").text
    assert 'status="500"' not in text and 'code="internal_error"' not in text


# ----------------------------------------------------------------------------- failures inside the server

class FailOnDemand:
    """The real engine, except that its next step raises once ``trigger`` is set."""

    def __init__(self, engine, trigger):
        self.engine, self.trigger = engine, trigger

    def step(self):
        if self.trigger.is_set():
            self.trigger.clear()
            raise RuntimeError("injected engine failure")
        return self.engine.step()

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_engine_failure_mid_stream_is_an_error_event_and_the_server_survives(tiny_model_dir):
    import threading

    from jvlm.serve.app import _default_engine

    trigger = threading.Event()
    config_ = replace(_base_config(tiny_model_dir),
                      engine_factory=lambda *a: FailOnDemand(_default_engine(*a), trigger))
    with serve(config_) as (base, state), httpx.Client(timeout=60) as client:
        body = {"messages": user("Go on."), "max_tokens": 4000, "stream": True}
        with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH) as response:
            assert response.status_code == 200
            events = []
            for line in response.iter_lines():
                if line:
                    events.append(line)
                if len(events) == 3:
                    trigger.set()
        assert events[-1] != "data: [DONE]"
        error = json.loads(events[-1].removeprefix("data: "))["error"]
        assert error["type"] == "server_error" and error["code"] == "internal_error"
        assert all("error" not in json.loads(e[6:]) for e in events[:-1])
        # the worker rebuilt its engine and keeps answering
        reply = client_for(base).chat.completions.create(model=MODEL, messages=user("Still there?"), max_tokens=2)
        assert reply.usage.completion_tokens == 2
        assert state.worker.stats()["admitted"] == 0
        metrics = httpx.get(f"{base}/metrics").text  # the fault is counted as the whole batch's
        assert 'jvlm_engine_failures_total{scope="batch"} 1.0' in metrics


# ----------------------------------------------------------------------------- found by fuzzing

def test_unpaired_surrogate_in_text_is_a_400(post):
    body = b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi \\udc00 there"}]}]}'
    err = error_of(post(body), 400)
    assert err["param"] == "messages[0].content[0].text" and "surrogate" in err["message"]


def test_vanishing_temperature_means_greedy(post):
    # 1.4e-45 made logits / temperature overflow and failed every request in the batch
    tiny = post(chat(temperature=1.401298464324817e-45, max_tokens=4))
    greedy = post(chat(temperature=0, max_tokens=4))
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]
