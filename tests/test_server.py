"""The server end to end: real uvicorn on 127.0.0.1, the tiny model, the official ``openai`` client.

Each server runs in a thread of the test process (so tests can look at its worker and
patch what the image fetcher considers public). Answers of a random-weight model are
gibberish, so tests compare answers with each other and count tokens, never read text.
Error answers are covered in ``test_server_errors.py``.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import openai
import pytest
from PIL import Image
from serving import serve

from jvlm.serve.app import ServerConfig, ServingState
from jvlm.media import MediaPolicy

API_KEY = "test-key-0123456789"
MODEL = "jina-vlm"


# ----------------------------------------------------------------------------- helpers

def client_for(base: str, api_key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=60)


def png(w: int = 64, h: int = 48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def user(text: str, *image_urls: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}] if parts else text}]


class ImageHandler(http.server.BaseHTTPRequestHandler):
    """/ok.png serves a PNG; /redirect?to=URL answers 302. Every path asked for is recorded."""

    def do_GET(self):  # the name http.server dispatches GET to
        self.server.seen.append(self.path)
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path == "/ok.png":
            body = png(40, 30, (10, 120, 200))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif parsed.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", urllib.parse.parse_qs(parsed.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@contextmanager
def running_image_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def image_server():
    with running_image_server() as server:
        yield server


@pytest.fixture(scope="module")
def config(tiny_model_dir) -> ServerConfig:
    """Safe defaults (no private URLs), an API key, small batch and queue."""
    return ServerConfig(model_dir=tiny_model_dir, api_key=API_KEY, max_batch=2, max_queue=1)


@pytest.fixture(scope="module")
def server(config):
    with serve(config) as running:
        yield running


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return client_for(server[0])


def prompt_tokens(state: ServingState, messages: list[dict], images: list[bytes] = ()) -> int:
    """Prompt length as the processor lays it out (text + image blocks + BOS)."""
    from jvlm.serve.chat import hf_messages
    from jvlm.serve.protocol import parse_chat_request

    req = parse_chat_request({"messages": messages})
    p = state.processor
    text = p.apply_chat_template(hf_messages(req))
    return len(p.encode(text, processed=[p.process_image(b) for b in images]).input_ids)


# ----------------------------------------------------------------------------- answers

def test_plain_text_answer_counts_tokens(client, server):
    messages = user("Say hello.")
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"  # random weights never say end-of-turn in 5 tokens
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens == prompt_tokens(server[1], messages)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_stream_matches_non_stream_at_temperature_zero(client):
    messages = user("Describe a cat.")
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in content) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in content][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in content[:-1])
    usage_chunk = chunks[-1]  # include_usage: one last chunk, no choices
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done_marker(server):
    body = {"model": MODEL, "messages": user("Hi"), "max_tokens": 3, "stream": True}
    r = httpx.post(f"{server[0]}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert "usage" not in json.loads(events[-2][6:]) or json.loads(events[-2][6:])["usage"] is None


def test_base64_image_adds_its_tokens_to_the_prompt(client, server):
    image = png()
    with_image = client.chat.completions.create(model=MODEL, messages=user("What is this?", data_uri(image)),
                                                max_tokens=2)
    bare = client.chat.completions.create(  # base64 without the data: prefix is accepted too
        model=MODEL, messages=user("What is this?", base64.b64encode(image).decode()), max_tokens=2)
    block = server[1].processor.process_image(image).layout.n_block_tokens
    text_only = prompt_tokens(server[1], user("What is this?"))
    assert with_image.usage.prompt_tokens == text_only + block
    assert bare.usage.prompt_tokens == with_image.usage.prompt_tokens
    assert bare.choices[0].message.content == with_image.choices[0].message.content


def test_two_images_in_one_message(client, server):
    a, b = png(64, 48), png(300, 120, (0, 200, 0))
    reply = client.chat.completions.create(model=MODEL, messages=user("Compare.", data_uri(a), data_uri(b)),
                                           max_tokens=2)
    assert reply.usage.prompt_tokens == prompt_tokens(server[1], user("Compare.", "x", "y"), [a, b])


def test_http_image_from_loopback_needs_the_flag(config, server, image_server):
    url = f"http://127.0.0.1:{image_server.server_port}/ok.png"
    with pytest.raises(openai.BadRequestError) as refused:  # the default server refuses loopback
        client_for(server[0]).chat.completions.create(model=MODEL, messages=user("?", url), max_tokens=1)
    assert refused.value.body["code"] == "invalid_image_url"
    assert "/ok.png" not in image_server.seen
    with serve(replace(config, media=MediaPolicy(allow_private_urls=True))) as (base, state):
        reply = client_for(base).chat.completions.create(model=MODEL, messages=user("?", url), max_tokens=2)
    assert image_server.seen.count("/ok.png") == 1
    assert reply.usage.prompt_tokens == prompt_tokens(state, user("?", url), [png(40, 30, (10, 120, 200))])


def test_requests_arriving_during_a_generation_join_its_batch(client, server):
    from contextlib import ExitStack

    question = user("Question while busy?")
    alone = client.chat.completions.create(model=MODEL, messages=question, max_tokens=16)
    count_before, sum_before = _histogram(server[0], "jvlm_batch_size")
    with ExitStack() as stack:
        _keep = _open_stream(server[0], stack)  # a long answer is being generated
        batched = client.chat.completions.create(model=MODEL, messages=question, max_tokens=16)
    count, total = _histogram(server[0], "jvlm_batch_size")
    assert total - sum_before > count - count_before, "no engine step advanced two requests at once"
    # greedy answers do not depend on what else shares the batch
    assert batched.choices[0].message.content == alone.choices[0].message.content
    assert batched.usage == alone.usage


def _histogram(base: str, name: str) -> tuple[float, float]:
    text = httpx.get(f"{base}/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name)}
    return values[f"{name}_count"], values[f"{name}_sum"]


# ----------------------------------------------------------------------------- operations

def test_models_health_and_metrics(server):
    base, _ = server
    assert httpx.get(f"{base}/health").json()["status"] == "ok"  # no key needed
    assert httpx.get(f"{base}/ready").status_code == 200
    assert [m.id for m in client_for(base).models.list().data] == [MODEL]
    text = httpx.get(f"{base}/metrics").text
    for name in ("jvlm_requests_total", "jvlm_queue_depth", "jvlm_batch_size_bucket", "jvlm_generation_tokens_total",
                 "jvlm_generation_tokens_per_second", "jvlm_time_to_first_token_seconds_bucket",
                 "jvlm_image_cache_hits_total", "jvlm_cancelled_requests_total", "jvlm_model_ready 1.0"):
        assert name in text
    # the decode path is named: compute dtype (and why), weight format, kernels
    info = next(line for line in text.splitlines() if line.startswith("jvlm_decode_info{"))
    for label in ("compute_dtype=", "dtype_reason=", "weights=", "linear_kernel=", "attention=", "decode_step=", "cpu=",
                  "huge_pages="):
        assert label in info


def test_repeated_image_hits_the_feature_cache(client, server):
    image = data_uri(png(80, 80, (1, 2, 3)))
    hits_before = _metric(server[0], "jvlm_image_cache_hits_total")
    first = client.chat.completions.create(model=MODEL, messages=user("One?", image), max_tokens=3)
    second = client.chat.completions.create(model=MODEL, messages=user("One?", image), max_tokens=3)
    assert _metric(server[0], "jvlm_image_cache_hits_total") == hits_before + 1
    assert second.choices[0].message.content == first.choices[0].message.content


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not exported")


def test_cold_start_answers_503_until_loaded(config):
    with serve(replace(config, load_delay_s=1.5), wait_ready=False) as (base, state):
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/ready").status_code == 503
        with pytest.raises(openai.APIStatusError) as loading:
            client_for(base).chat.completions.create(model=MODEL, messages=user("Hi"), max_tokens=1)
        assert loading.value.status_code == 503
        assert loading.value.body["code"] == "model_loading"
        assert "retry" in loading.value.body["message"]
        assert int(loading.value.response.headers["Retry-After"]) > 0
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert models.status_code == 503 and "Retry-After" in models.headers
        assert state.wait_until_loaded(30)
        assert httpx.get(f"{base}/ready").status_code == 200
        assert client_for(base).chat.completions.create(model=MODEL, messages=user("Hi"), max_tokens=1).choices


def _open_stream(base: str, stack, max_tokens: int = 4000) -> Iterator[str]:
    """Start a long streaming request; returns its line iterator (first chunk already arrived)."""
    client = stack.enter_context(httpx.Client(timeout=60))
    response = stack.enter_context(client.stream(
        "POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": MODEL, "messages": user("Tell a long story."), "max_tokens": max_tokens, "stream": True}))
    assert response.status_code == 200
    lines = response.iter_lines()
    assert _next_event(lines).startswith("data: {")
    return lines


def _next_event(lines: Iterator[str]) -> str:
    return next(line for line in lines if line)  # events are separated by blank lines


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_client_disconnect_cancels_generation(server):
    from contextlib import ExitStack

    base, state = server
    worker = state.worker
    cancelled = worker.stats()["cancelled"]
    with ExitStack() as stack:
        lines = _open_stream(base, stack)
        for _ in range(3):
            _next_event(lines)
        assert worker.stats()["running"] == 1
    # the connection is closed: the worker drops the row long before 4000 tokens
    _wait_for(lambda: worker.stats()["cancelled"] == cancelled + 1 and worker.stats()["admitted"] == 0)
    assert worker.stats()["running"] == 0
    assert _metric(base, "jvlm_cancelled_requests_total") >= 1


def test_full_queue_answers_503_with_retry_after(server):
    from contextlib import ExitStack

    base, state = server
    worker = state.worker  # max_batch=2, max_queue=1
    waiting_result: dict = {}

    def third():  # waits for a batch slot: its headers only come with its first token
        try:
            with httpx.Client(timeout=60) as c, c.stream(
                    "POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                    json={"messages": user("Wait."), "max_tokens": 2, "stream": True}) as r:
                waiting_result["status"] = r.status_code
                r.read()
        except httpx.HTTPError as exc:
            waiting_result["error"] = exc

    with ExitStack() as stack:
        streams = [_open_stream(base, stack), _open_stream(base, stack)]  # keep: dropping one closes it
        waiter = threading.Thread(target=third)
        waiter.start()
        _wait_for(lambda: worker.stats()["admitted"] == 3)
        with pytest.raises(openai.APIStatusError) as overloaded:
            client_for(base).chat.completions.create(model=MODEL, messages=user("One more?"), max_tokens=1)
        assert overloaded.value.status_code == 503
        assert overloaded.value.body["code"] == "server_overloaded"
        assert int(overloaded.value.response.headers["Retry-After"]) > 0
        assert all(_next_event(lines).startswith("data: {") for lines in streams)  # still generating
    waiter.join(60)  # the long streams were closed: the waiting request got its turn
    assert waiting_result.get("status") == 200
    _wait_for(lambda: worker.stats()["admitted"] == 0)


@pytest.mark.parametrize("text", ["", "plain", 'quote " backslash \\ newline \n tab \t', "é 中 🙂",
                                  "\x00\x1f\u2028"])
def test_fast_chunk_rendering_equals_the_schema(text):
    from jvlm.serve.chat import ChunkWriter
    from jvlm.serve.protocol import ChatCompletionChunk

    fast = ChunkWriter("chatcmpl-1", MODEL, 1700000000).content(text)
    schema = ChatCompletionChunk.content(id="chatcmpl-1", model=MODEL, created=1700000000, text=text)
    assert fast.startswith("data: ") and fast.endswith("\n\n")
    assert json.loads(fast[6:]) == schema.model_dump(mode="json")


def test_client_that_gives_up_on_a_plain_request_cancels_it(server):
    base, state = server
    worker = state.worker
    cancelled = worker.stats()["cancelled"]
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes the connection
        httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=1.0,
                   json={"messages": user("Tell a very long story."), "max_tokens": 4000})
    _wait_for(lambda: worker.stats()["cancelled"] == cancelled + 1 and worker.stats()["admitted"] == 0)


def test_a_model_that_cannot_load_keeps_the_port_answering(tmp_path):
    with serve(ServerConfig(model_dir=tmp_path / "missing"), wait_ready=False) as (base, state):
        state.wait_until_loaded(30)
        assert state.status == "failed"
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/ready").status_code == 503
        err = httpx.get(f"{base}/v1/models").json()["error"]
        assert err["code"] == "model_load_failed" and "missing" in err["message"]


def test_cli_flags_build_the_server_config(tiny_model_dir, tmp_path, monkeypatch):
    from jvlm.cli import build_parser
    from jvlm.cli.serve import build_config

    monkeypatch.setenv("JVLM_API_KEY", "from-env")
    args = build_parser(only="serve").parse_args([
        "serve", "--model", str(tiny_model_dir), "--allowed-media-domains", "example.com", "cdn.example.org",
        "--allowed-local-media-path", str(tmp_path), "--max-queue", "3", "--max-batch", "2"])
    config = build_config(args)
    # vLLM's convention: the model as given is its id; the earlier default name still works
    assert config.served_model_name == str(tiny_model_dir) and config.serves("jina-vlm")
    assert config.api_key == "from-env"  # --api-key absent: the environment's key
    assert config.media.allowed_domains == ("example.com", "cdn.example.org")
    assert config.media.allowed_local_media_path == tmp_path and not config.media.allow_private_urls
    assert (config.max_queue, config.max_batch) == (3, 2)


def test_serve_defaults_to_the_bundled_demo_model_and_rejects_a_missing_folder(tmp_path, capsys):
    from jvlm.cli import build_parser, main
    from jvlm.cli.serve import build_config
    from jvlm.resolve import DEMO_MODEL_DIR

    config = build_config(build_parser(only="serve").parse_args(["serve"]))
    assert config.model_dir.resolve() == DEMO_MODEL_DIR.resolve()
    assert config.served_model_name == "jvlm-demo"  # what /v1/models lists and clients send
    # a bad --model is one line on stderr and exit status 1, before anything binds a port
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jvlm serve: error:") and "neither an existing folder" in err
