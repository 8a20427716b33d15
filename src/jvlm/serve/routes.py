"""Routes beyond chat that clients of vLLM-style servers expect.

- ``POST /v1/completions``: raw-prompt completions with images (see ``completions``);
- ``POST /tokenize`` and ``POST /detokenize``: the model's own token ids for a prompt (or a
  chat conversation, as the template writes it) and the text of ids, as vLLM answers them;
- ``GET /version``: the jvlm version;
- ``GET /docs``: interactive API documentation (Swagger UI over ``/openapi.json``).

``mount_routes(app, state)`` is the one hook ``app.create_app`` calls. Errors are the OpenAI
error objects of ``plumbing``, as for chat; text is held to the same character budget as chat
text (``check_text_budget``) before it is tokenized; ``/tokenize`` and ``/detokenize`` are outside ``/v1`` (as in vLLM) but
check the API key and readiness the same way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jvlm import __version__
from jvlm.processing.chat_text import check_text_budget, message_texts
from jvlm.serve import completions
from jvlm.serve.plumbing import (
    ERROR_RESPONSES,
    SSE_HEADERS,
    api_key_error,
    check_not_aborted,
    error_event,
    error_response,
    final_event,
    read_body,
    to_api_error,
    unknown_model,
    unless_disconnected,
)
from jvlm.serve.protocol import InvalidRequestError, Usage, describe_validation_error

_TOKENS_BODY_LIMIT = 4 * 2**20
_MAX_DETOKENIZE_IDS = 1_000_000


#: Swagger UI comes from a CDN (as in FastAPI and vLLM); without network access the page
#: lists the routes from /openapi.json instead of staying blank
_SWAGGER = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>jvlm API</title>
<link rel="stylesheet" href="SWAGGER/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="SWAGGER/swagger-ui-bundle.js"></script>
<script>
window.addEventListener("load", function () {
  if (window.SwaggerUIBundle) {
    SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
    return;
  }
  fetch("/openapi.json").then(function (r) { return r.json(); }).then(function (spec) {
    var root = document.getElementById("swagger-ui");
    var note = document.createElement("p");
    note.textContent = "The interactive page needs Swagger UI from cdn.jsdelivr.net, which this browser " +
      "could not reach. The routes (full schema at /openapi.json):";
    root.appendChild(note);
    Object.keys(spec.paths).forEach(function (path) {
      Object.keys(spec.paths[path]).forEach(function (method) {
        var op = spec.paths[path][method], item = document.createElement("p");
        item.textContent = method.toUpperCase() + " " + path + (op.summary ? " - " + op.summary : "");
        root.appendChild(item);
      });
    });
  });
});
</script>
</body></html>
""".replace("SWAGGER", _SWAGGER)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    tokens: list[int] = Field(max_length=_MAX_DETOKENIZE_IDS)


def mount_routes(app: FastAPI, state) -> None:
    config = state.config
    key = config.api_key.encode() if config.api_key else None

    def fail(exc: BaseException) -> Response:
        return error_response(to_api_error(exc, config), state.metrics)

    def check_model(name: str | None) -> None:
        if name is not None and not config.serves(name):
            raise unknown_model(name, config)

    async def read(request: Request, model_cls, limit: int):
        raw = await read_body(request, limit)
        try:
            return model_cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidRequestError(f"the body is not valid JSON: {e}", code="invalid_json") from None
        except ValidationError as e:
            message, param = describe_validation_error(e)
            raise InvalidRequestError(message, param=param) from None

    def key_error(request: Request) -> Response | None:
        """The API key check of ``/v1`` for routes outside it (the gate only guards ``/v1``)."""
        err = api_key_error(request.scope["headers"], key)
        return error_response(err, state.metrics) if err is not None else None

    def not_ready() -> Response | None:
        err = state.not_ready_error()
        return error_response(err, state.metrics) if err is not None else None

    @app.get("/version")
    async def version() -> dict:
        """The jvlm version serving this API."""
        return {"version": __version__}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(_DOCS_PAGE)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        """Token ids of ``prompt`` (as given) or of ``messages`` (as the chat template writes them)."""
        if (gate := key_error(request)) is not None or (gate := not_ready()) is not None:
            return gate
        try:
            req = await read(request, TokenizeRequest, config.max_body_bytes)
            check_model(req.model)
            processor = state.processor
            if (req.prompt is None) == (req.messages is None):
                raise InvalidRequestError("send exactly one of prompt (text) or messages (a conversation)",
                                          param="prompt")
            if req.messages is not None:
                _check_text_messages(req.messages)
                check_text_budget(sum(map(len, message_texts(req.messages))), state.context_length,
                                  n_messages=len(req.messages))
                text = processor.apply_chat_template(req.messages, add_generation_prompt=req.add_generation_prompt,
                                                     tokenize=False)
            else:
                completions.check_text_length(req.prompt, state.context_length)
                text = req.prompt
            ids = processor.tokenizer(text, add_special_tokens=req.add_special_tokens)["input_ids"]
            return JSONResponse({"count": len(ids), "max_model_len": state.context_length, "tokens": ids})
        except Exception as exc:  # noqa: BLE001 - every failure is an OpenAI error object
            return fail(exc)

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        """The text of token ids."""
        if (gate := key_error(request)) is not None or (gate := not_ready()) is not None:
            return gate
        try:
            req = await read(request, DetokenizeRequest, _TOKENS_BODY_LIMIT)
            check_model(req.model)
            vocab = len(state.processor.tokenizer)
            bad = next((t for t in req.tokens if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequestError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})",
                                          param="tokens")
            return JSONResponse({"prompt": state.processor.tokenizer.decode(req.tokens)})
        except Exception as exc:  # noqa: BLE001
            return fail(exc)

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def create_completion(request: Request) -> Response:
        """Continue a raw prompt (no chat template); images in the extra field ``images``."""
        try:
            return await _complete(request, state)
        except Exception as exc:  # noqa: BLE001
            return fail(exc)


def _check_text_messages(messages: list[dict[str, Any]]) -> None:
    """Text conversations only: an image's token cost depends on its size (``/v1/jvlm/layout`` gives it)."""
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise InvalidRequestError("each message needs a role (system, user or assistant)",
                                      param=f"messages[{i}].role")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise InvalidRequestError("content must be a string or a list of text parts",
                                      param=f"messages[{i}].content")
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidRequestError(
                    "/tokenize counts text; an image's tokens depend on its size: POST its width and height to "
                    "/v1/jvlm/layout for its token cost", param=f"messages[{i}].content[{j}]")


async def _complete(request: Request, state) -> Response:
    arrived = time.perf_counter()
    config = state.config
    req = completions.parse(await read_body(request, config.max_body_bytes))
    if req.model is not None and not config.serves(req.model):
        raise unknown_model(req.model, config)
    limit = config.max_crops_limit or state.processor.image_config.max_crops
    if req.max_crops is not None and req.max_crops > limit:
        raise InvalidRequestError(f"max_crops is {req.max_crops}; this server allows at most {limit}",
                                  param="max_crops")
    completions.check_text(req.text(), state.processor, state.context_length)
    ticket = state.worker.reserve()
    try:
        images = await completions.fetch_images(req, config.media, config.resolver)
        state.metrics.images.inc(len(images))
        build = functools.partial(completions.build, state.processor, req, images, default_max_tokens=None,
                                  context_length=state.context_length, feature_cache=state.feature_cache)
        # images decode on the server's image pool, as chat's do (a text-only request never waits on it)
        engine_request = await asyncio.get_running_loop().run_in_executor(
            state.image_pool if images else None, build)
        gen = state.worker.submit(engine_request, arrived_s=arrived)
    except BaseException:
        ticket.release()
        raise
    try:  # a request that fails alone before its first token gets its own error status
        first = await unless_disconnected(request, gen.next_event())
    except BaseException:
        gen.cancel()
        ticket.release()
        raise
    if first is None:
        gen.cancel()
        ticket.release()
        return Response(status_code=499)
    request_id, created, model = engine_request.request_id, completions.now(), config.served_model_name
    if req.stream:
        return StreamingResponse(_stream(gen, first, ticket, request_id, model, created,
                                         completions.include_usage(req), state),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    event = await final_event(request, gen, first, ticket)
    if event is None:
        return Response(status_code=499)
    usage = Usage.of(event.result.prompt_tokens, event.result.completion_tokens)
    return JSONResponse(completions.body(request_id, model, created, event.result.text, event.finish_reason, usage))


async def _stream(gen, event, ticket, request_id: str, model: str, created: int, with_usage: bool, state):
    """Chunks of text, the usage chunk if asked, ``[DONE]``; a failure after the first byte
    (this request's alone: the worker isolates it) ends the stream with one error event."""
    try:
        while True:
            if event.finished:
                check_not_aborted(event)
            if event.text or event.finished:
                chunk = completions.body(request_id, model, created, event.text, event.finish_reason)
                yield "data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n"
            if event.finished:
                break
            event = await gen.next_event()
        if with_usage:  # as OpenAI: a last chunk with no choices and the token counts
            usage = Usage.of(event.result.prompt_tokens, event.result.completion_tokens)
            final = {**completions.body(request_id, model, created, "", None, usage), "choices": []}
            yield "data: " + json.dumps(final) + "\n\n"
        yield "data: [DONE]\n\n"
    except Exception as exc:  # noqa: BLE001 - the status is sent: report in-stream
        yield error_event(exc, state.config, state.metrics)
    finally:
        gen.cancel()
        ticket.release()
