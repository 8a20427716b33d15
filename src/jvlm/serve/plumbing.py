"""What every route of the server shares: error answers, the body reader, the API-key check,
disconnect watching and the end of a generation. No routes here: ``app`` and ``routes``
register them and both import this module (it imports neither).

- ``ApiError`` is an error answer; ``to_api_error`` maps any exception to one (unknown ones
  are logged and become 500 ``internal_error``); ``error_response`` renders it as the OpenAI
  error object and counts it.
- ``read_body`` refuses (413) a body as soon as it is known to exceed its limit.
- ``api_key_error`` is the bearer-key check of ``/v1`` (the gate) and of the routes outside it.
- ``unless_disconnected`` runs an awaitable unless the client leaves first.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from jvlm.errors import ContextLengthError, InvalidImageError, JVLMError, PromptError, public_message
from jvlm.media import MediaError
from jvlm.serve.metrics import ServerMetrics
from jvlm.serve.protocol import ErrorResponse, InvalidRequestError, error_body
from jvlm.serve.worker import EngineFailure, Generation, ServerOverloaded, WorkerStopped

log = logging.getLogger(__name__)

#: the error answers a generating route documents in the OpenAPI schema
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": what} for status, what in (
        (400, "Invalid request"), (404, "Unknown model"), (413, "Body too large"),
        (503, "Model loading or server overloaded"))}


class ApiError(Exception):
    """An error answer: HTTP status, OpenAI error object fields, extra headers."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        message = public_message(message)
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def to_api_error(exc: BaseException, config) -> ApiError:
    """The answer for an exception (``config``: the server's, for its ``Retry-After`` times);
    unknown ones are logged and become 500 ``internal_error``."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, MediaError):
        return ApiError(exc.status_code, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, ContextLengthError):
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, InvalidImageError):
        return ApiError(400, f"an image could not be used: {exc}", code="invalid_image", param="messages")
    if isinstance(exc, PromptError):
        return ApiError(400, str(exc), code="invalid_value", param="messages")
    if isinstance(exc, ServerOverloaded):
        n = config.overload_retry_after_s
        return ApiError(503, f"{exc} ({n} s).", type="server_error", code="server_overloaded",
                        headers={"Retry-After": str(n)})
    if isinstance(exc, WorkerStopped):
        return ApiError(503, str(exc), type="server_error", code=exc.code, headers={"Retry-After": "5"})
    if isinstance(exc, EngineFailure):
        if exc.retryable:
            return ApiError(503, str(exc), type="server_error", code="out_of_memory",
                            headers={"Retry-After": str(config.overload_retry_after_s)})
        return ApiError(500, str(exc), type="server_error", code="internal_error")
    if isinstance(exc, JVLMError):  # every other error a user can cause
        return ApiError(400, str(exc), code=exc.code)
    log.error("unexpected error while answering a request", exc_info=exc)
    return ApiError(500, f"The server failed to answer ({type(exc).__name__}); the error was logged.",
                    type="server_error", code="internal_error")


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message may quote client input,
    and input can hold unpaired surrogates that no UTF-8 encoder accepts."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(err: ApiError, metrics: ServerMetrics) -> JSONResponse:
    metrics.errors.labels(code=err.code or str(err.status)).inc()
    return AsciiJSONResponse(err.body(), status_code=err.status, headers=err.headers)


def error_event(exc: BaseException, config, metrics: ServerMetrics) -> str:
    """The SSE event that ends a stream which failed after its first byte (counted as an error)."""
    err = to_api_error(exc, config)
    metrics.errors.labels(code=err.code or str(err.status)).inc()
    return f"data: {json.dumps(err.body(), ensure_ascii=True)}\n\n"


def api_key_error(headers, key: bytes | None) -> ApiError | None:
    """401 unless the ASGI ``headers`` carry ``Authorization: Bearer <key>`` (None: no key set)."""
    if key is None:
        return None
    given = b""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
            break
    # compare_digest: the time taken does not reveal how much of the key matched
    if hmac.compare_digest(given, key):
        return None
    what = "No API key was provided" if not given else "The API key is not valid"
    return ApiError(401, f"{what}; send 'Authorization: Bearer <key>'.", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def unknown_model(model: str, config) -> ApiError:
    return ApiError(404, f"The model {model!r} does not exist on this server; it serves "
                    f"{config.served_model_name!r}.", code="model_not_found", param="model")


async def read_body(request: Request, limit: int) -> bytearray:
    """The body, refusing (413) as soon as it is known to exceed ``limit``."""
    too_large = ApiError(413, f"The request body is larger than the limit of {limit:,} bytes; send smaller "
                         "or fewer images (or an image URL instead of inline data).", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise ApiError(499, "The client closed the connection while sending the request.",
                       code="client_closed_request") from None
    return body  # (not copied to bytes: the JSON parser reads a bytearray as well)


async def unless_disconnected(request: Request, awaitable):
    """The awaitable's result, or None if the client disconnects first."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler itself is cancelled (shutdown): take both along
        watcher.cancel()
        task.cancel()
        raise
    watcher.cancel()
    if not task.done():
        task.cancel()  # takes effect at the next loop iteration: do not read the task after
        return None
    return task.result()


async def last_event(gen: Generation, event):
    """The generation's final event, ``event`` being one already taken."""
    while not event.finished:
        event = await gen.next_event()
    return event


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (call it once the body has been read)."""
    # the body has been read, so the next ASGI message can only be the disconnect
    while (await request.receive())["type"] != "http.disconnect":
        pass


def check_not_aborted(event) -> None:
    if event.finish_reason not in ("stop", "length"):
        raise EngineFailure(f"the generation ended unexpectedly ({event.finish_reason})")


#: response headers of a server-sent event stream (no caching, no proxy buffering)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def final_event(request, gen: Generation, first, ticket):
    """A non-streamed answer's last event, or None when the client left first (the generation
    is then cancelled); the queue ticket is released either way."""
    try:
        last = await unless_disconnected(request, last_event(gen, first))
        if last is None:
            gen.cancel()
            return None
    finally:
        ticket.release()
    check_not_aborted(last)
    return last
