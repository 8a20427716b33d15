"""Wire schemas against the official ``openai`` client: what it sends we parse, what we send it parses.

The client talks to an in-process ``httpx.MockTransport``, so these tests use no sockets.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk
from pydantic import ValidationError

from jvlm.serve.protocol import (
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ImageURLPart,
    InvalidRequestError,
    ModelCard,
    ModelList,
    TextPart,
    Usage,
    describe_validation_error,
    error_body,
    new_completion_id,
    parse_chat_request,
    sse_event,
)

IMAGE = "https://images.example/cat.png"
DATA_URI = "data:image/png;base64,iVBORw0KGgo="


def _client(handler) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://jvlm.invalid/v1", api_key="test-key", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def _completion_json(content: str = "A red square.") -> dict:
    reply = ChatCompletion.single(id=new_completion_id(), model="jina-vlm", content=content,
                                  finish_reason="stop", usage=Usage.of(prompt_tokens=1234, completion_tokens=5))
    return reply.model_dump(mode="json")


def _capture_requests(calls) -> list[dict]:
    """Run ``calls(client)`` against a fake server and return the JSON bodies the client sent."""
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=_completion_json())

    calls(_client(handler))
    return bodies


# ----------------------------------------------------------------------------- requests

def test_requests_from_the_official_client_parse():
    def calls(client):
        client.chat.completions.create(model="jina-vlm", messages=[{"role": "user", "content": "Hello"}])
        client.chat.completions.create(
            model="jina-vlm",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": DATA_URI}},
                ]},
                {"role": "assistant", "content": "A cat."},
                {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
            ],
            max_completion_tokens=64, temperature=0, top_p=0.9, seed=7, stop=["\n\n", "END"],
            user="someone", logprobs=False, n=1, extra_body={"top_k": 20, "max_crops": 6},
        )

    simple, rich = (parse_chat_request(body) for body in _capture_requests(calls))
    assert simple.messages[0].text() == "Hello" and simple.max_new_tokens is None
    assert rich.image_urls() == [("messages[1].content[1].image_url.url", IMAGE),
                                 ("messages[1].content[2].image_url.url", DATA_URI)]
    assert [type(p) for p in rich.messages[1].parts()] == [TextPart, ImageURLPart, ImageURLPart]
    assert rich.max_new_tokens == 64 and rich.temperature == 0 and rich.top_k_or_none == 20
    assert rich.stop_sequences == ["\n\n", "END"] and rich.max_crops == 6 and rich.seed == 7


def test_streaming_request_from_the_official_client():
    bodies: list[dict] = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, text=SSE_DONE, headers={"content-type": "text/event-stream"})

    list(_client(handler).chat.completions.create(
        model="jina-vlm", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True}, max_tokens=10))
    request = parse_chat_request(json.dumps(bodies[0]).encode())
    assert request.stream and request.include_usage and request.max_new_tokens == 10


def test_other_accepted_shapes():
    request = parse_chat_request({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": IMAGE}]},  # plain-string form
        {"role": "assistant", "content": None},
    ], "stop": "###", "top_k": -1, "temperature": 1})
    assert request.model is None  # a single-model server fills it in
    assert request.image_urls() == [("messages[1].content[0].image_url.url", IMAGE)]
    assert request.messages[2].parts() == [] and request.messages[0].text() == "Rules."
    assert request.stop_sequences == ["###"] and request.top_k_or_none is None
    assert request.temperature == 1.0 and not request.include_usage


USER_OK = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("body,param,fragment", [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                 {"type": "image_url", "image_url": {"url": 5}}]}]},
     "messages[0].content[1].image_url.url", "a valid string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]},
     "messages[0].content[1].image_url", "Missing"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0].type", "'text', 'image_url'"),
    ({"messages": [USER_OK, {"role": "tool", "content": "x"}]}, "messages[1].role", "'tool'"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "Missing"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "Missing"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a valid list"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content", "at least 1 item"),
    ({"messages": []}, "messages", "at least 1 item"),
    ({"model": "m"}, "messages", "Missing"),
    ({"messages": [USER_OK], "temperature": 2.5}, "temperature", "less than or equal to 2"),
    ({"messages": [USER_OK], "temperature": "hot"}, "temperature", "a valid number"),
    ({"messages": [USER_OK], "top_p": 0}, "top_p", "greater than 0"),
    ({"messages": [USER_OK], "max_tokens": "100"}, "max_tokens", "a valid integer"),
    ({"messages": [USER_OK], "max_completion_tokens": 0}, "max_completion_tokens", "greater than or equal to 1"),
    ({"messages": [USER_OK], "stream": "true"}, "stream", "a valid boolean"),
    ({"messages": [USER_OK], "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
    ({"messages": [USER_OK], "stop": ""}, "stop", "non-empty"),
    ({"messages": [USER_OK], "stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage", "a valid boolean"),
    ({"messages": [USER_OK], "n": 2}, "n", "only n=1"),
    ({"messages": [USER_OK], "logprobs": True}, "logprobs", "not supported"),
    ({"messages": [USER_OK], "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"messages": [USER_OK], "response_format": {"type": "json_object"}}, "response_format", "not supported"),
    ({"messages": [USER_OK], "max_crops": 0}, "max_crops", "between 1 and"),
])
def test_invalid_requests_name_the_json_path(body, param, fragment):
    with pytest.raises(InvalidRequestError) as err:
        parse_chat_request(body)
    assert err.value.param == param
    assert fragment in err.value.message
    assert err.value.status_code == 400


def test_max_crops_limit_comes_from_the_server():
    body = {"messages": [USER_OK], "max_crops": 20}
    assert parse_chat_request(body).max_crops == 20
    with pytest.raises(InvalidRequestError, match="between 1 and 12"):
        parse_chat_request(body, max_crops_limit=12)


@pytest.mark.parametrize("raw,code", [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_type")])
def test_body_that_is_not_a_json_object(raw, code):
    with pytest.raises(InvalidRequestError) as err:
        parse_chat_request(raw)
    assert err.value.code == code and err.value.param is None


def test_describe_validation_error_directly():
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": None}}]}]}
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(body)
    message, param = describe_validation_error(err.value, body)
    assert param == "messages[0].content[0].image_url.url" and param in message


# ----------------------------------------------------------------------------- responses

def test_completion_parses_in_the_official_client():
    data = _completion_json("A red square.")
    parsed = OpenAIChatCompletion.model_validate(data)
    assert parsed.choices[0].message.content == "A red square."
    assert parsed.usage.prompt_tokens == 1234 and parsed.usage.total_tokens == 1239
    reply = _client(lambda r: httpx.Response(200, json=data)).chat.completions.create(
        model="jina-vlm", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].finish_reason == "stop" and reply.id.startswith("chatcmpl-")


def _stream_events(id: str, include_usage: bool) -> list[ChatCompletionChunk]:
    kw = {"id": id, "model": "jina-vlm", "created": 1_700_000_000}
    events = [ChatCompletionChunk.role(**kw), ChatCompletionChunk.content(**kw, text="A red "),
              ChatCompletionChunk.content(**kw, text="square.", finish_reason="length")]
    if include_usage:
        events.append(ChatCompletionChunk.final_usage(**kw, usage=Usage.of(1234, 2)))
    return events


def test_stream_parses_in_the_official_client():
    events = _stream_events(new_completion_id(), include_usage=True)
    for chunk in events:
        OpenAIChatCompletionChunk.model_validate(chunk.model_dump(mode="json"))
    body = "".join(sse_event(e) for e in events) + SSE_DONE
    stream = _client(lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})) \
        .chat.completions.create(model="jina-vlm", messages=[{"role": "user", "content": "hi"}], stream=True,
                                 stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "A red square."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 1234


def test_error_inside_a_stream_reaches_the_client():
    events = _stream_events(new_completion_id(), include_usage=False)[:2]
    body = "".join(sse_event(e) for e in events)
    body += sse_event(error_body("generation failed: out of memory", "server_error", code="internal_error"))
    stream = _client(lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})) \
        .chat.completions.create(model="jina-vlm", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="out of memory"):
        list(stream)


def test_error_body_reaches_the_official_client_with_param_and_code():
    param = "messages[0].content[1].image_url.url"
    body = error_body("image URL resolves to 10.0.0.1 ...", "invalid_request_error", param, "invalid_image_url")
    assert body == {"error": {"message": "image URL resolves to 10.0.0.1 ...", "type": "invalid_request_error",
                              "param": param, "code": "invalid_image_url"}}
    client = _client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="jina-vlm", messages=[{"role": "user", "content": "hi"}])
    assert err.value.param == param and err.value.code == "invalid_image_url"
    assert err.value.type == "invalid_request_error"


def test_model_list_parses_in_the_official_client():
    listing = ModelList(data=[ModelCard(id="jina-vlm", created=1_700_000_000)]).model_dump(mode="json")
    models = list(_client(lambda r: httpx.Response(200, json=listing)).models.list())
    assert [m.id for m in models] == ["jina-vlm"] and models[0].owned_by == "jvlm"
