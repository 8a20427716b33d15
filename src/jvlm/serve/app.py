"""The HTTP server: routes, limits, authentication, streaming and error answers.

``create_app(config)`` returns a FastAPI app. ``jvlm serve`` loads the model first
(``ServingState.load_now``) and only then listens; an app started without that loads on a
background thread (cold start): until the model is ready every ``/v1/*`` call gets 503
``model_loading`` with ``Retry-After``, while ``/health`` (liveness) answers 200 and
``/ready`` (readiness) 503. Requests then flow:

    gate (auth, readiness, metrics) -> request guard (Host, Origin, content type; ``guard``)
    -> body cap -> schema -> text budget -> admission (bounded)
    -> image fetch (safety gate) -> prompt + images + budget (thread) -> engine worker
    -> JSON answer, or SSE chunks ending in ``data: [DONE]``

Every error, including 401, 404 and errors after a stream began, is the OpenAI error object.
A client that disconnects has its generation cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jvlm.errors import public_message
from jvlm.media import MediaPolicy, Resolver
from jvlm.serve import chat
from jvlm.serve.guard import HttpLimits, RequestGuard
from jvlm.serve.metrics import ServerMetrics
from jvlm.serve.plumbing import (  # (ApiError, error_response, to_api_error: importable from here too)
    ERROR_RESPONSES,
    SSE_HEADERS,
    ApiError,
    api_key_error,
    error_event,
    error_response,
    final_event,
    read_body,
    to_api_error,
    unknown_model,
    unless_disconnected,
)
from jvlm.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    new_completion_id,
    parse_chat_request,
    unix_now,
)
from jvlm.serve.worker import EngineWorker, Generation, Ticket

__all__ = ["ApiError", "ServerConfig", "ServingState", "create_app", "error_response", "to_api_error"]

log = logging.getLogger(__name__)

#: builds an engine for the loaded model: (model, processor, config, feature_cache) -> engine
EngineFactory = Callable[[Any, Any, "ServerConfig", Any], Any]


@dataclass
class ServerConfig:
    """Everything ``jvlm serve`` can set. Defaults are safe for a public deployment."""

    model_dir: Path | None = None
    served_model_name: str = "jina-vlm"
    #: more names requests may use for the model (vLLM's --served-model-name list; the --model string)
    served_model_aliases: tuple[str, ...] = ()
    #: "int8" / "int4": weight-only quantized decoder (faster CPU decoding), as ``jvlm infer --quantize``
    quantize: str = "none"
    #: one line saying what the model is when it is not a real checkpoint (jvlm.notices)
    notice: str | None = None
    api_key: str | None = None
    max_batch: int = 8  # requests generating together
    max_queue: int = 64  # requests waiting beyond those (then 503 server_overloaded)
    max_body_bytes: int = 32 * 2**20  # a 20 MiB image is ~27 MiB as base64
    media: MediaPolicy = field(default_factory=MediaPolicy)
    http: HttpLimits = field(default_factory=HttpLimits)  # header caps, timeouts, Host/Origin allow-lists
    image_workers: int = 2  # requests decoding and tiling images at once (their memory is bounded so)
    pdf_timeout_s: float = 30.0  # one PDF rendering call (in its own process), then 413
    pdf_max_memory_bytes: int = 2 * 2**30  # address space of that process
    kernels: str = "auto"  # "auto": jvlm's CPU decode kernels where they apply; "torch": PyTorch's only
    #: "split": a reply's <think> block goes to message.reasoning_content; "raw": left in content
    reasoning_format: str = "split"
    defaults: chat.GenerationDefaults = field(default_factory=chat.GenerationDefaults)
    max_crops_limit: int | None = None  # None: the model's own max_crops
    dtype: str | None = None
    device: str | None = None
    image_cache_bytes: int = 256 * 2**20
    prefix_cache_bytes: int = 1 * 2**30
    overload_retry_after_s: int = 2
    loading_retry_after_s: int = 15
    #: testing only: sleep this long before loading, to observe the cold-start answers
    load_delay_s: float = 0.0
    #: replaces DNS in the image fetcher (tests, split-horizon setups)
    resolver: Resolver | None = None
    #: replaces the engine (tests that need an engine which fails on purpose)
    engine_factory: EngineFactory | None = None

    def serves(self, name: str) -> bool:
        """Whether a request's ``model`` names this server's model."""
        return name == self.served_model_name or name in self.served_model_aliases

    @property
    def split_reasoning(self) -> bool:
        """Whether replies return a ``<think>`` block in ``reasoning_content`` (``reasoning_format``)."""
        return self.reasoning_format == "split"


# ----------------------------------------------------------------------------- model state

class ServingState:
    """The model's lifecycle (loading -> ready | failed) and what the routes need of it."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics):
        self.config = config
        self.metrics = metrics
        self.status = "loading"
        self.error: str | None = None
        self.created = unix_now()
        self.processor = None
        self.worker: EngineWorker | None = None
        self.feature_cache = None
        self.decode_setup = None  # jvlm.inference.quantize.DecodeSetup once loaded
        self.context_length = 0
        self.on_load_failed: Callable[[BaseException], None] | None = None
        self._thread: threading.Thread | None = None
        #: where image decoding and tiling run (``image_workers`` at a time)
        self.image_pool = concurrent.futures.ThreadPoolExecutor(config.image_workers,
                                                                 thread_name_prefix="jvlm-images")

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load, name="jvlm-model-loader", daemon=True)
        self._thread.start()

    def wait_until_loaded(self, timeout_s: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.status == "ready"

    def load_now(self) -> None:
        """Load on the calling thread and raise what went wrong (``jvlm serve`` loads before it
        binds its port, so a broken model folder is one error line, not a dead server)."""
        self._load_model()

    def _load(self) -> None:
        try:
            self._load_model()
        except BaseException as exc:  # the port stays open and says why
            log.exception("loading the model from %s failed", self.config.model_dir)
            if self.on_load_failed is not None:
                self.on_load_failed(exc)

    def _load_model(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        try:
            if cfg.load_delay_s > 0:
                time.sleep(cfg.load_delay_s)
            from jvlm.inference.feature_cache import FeatureCache, PrefixCache
            from jvlm.loading import load

            model, processor = load(cfg.model_dir, dtype=cfg.dtype, device=cfg.device)
            from jvlm.inference.quantize import prepare

            self.decode_setup = prepare(model, cfg.quantize, cfg.kernels, requested_dtype=cfg.dtype)
            self.metrics.set_decode_setup(self.decode_setup)
            feature_cache = FeatureCache(cfg.image_cache_bytes) if cfg.image_cache_bytes > 0 else None
            # one prefix cache for the server's life: it outlives an engine rebuilt after a fault
            prefix = PrefixCache(cfg.prefix_cache_bytes) if cfg.prefix_cache_bytes > 0 else None
            factory = cfg.engine_factory or functools.partial(_default_engine, prefix_cache=prefix)
            worker = EngineWorker(lambda: factory(model, processor, cfg, feature_cache), max_batch=cfg.max_batch,
                                  max_queue=cfg.max_queue, metrics=self.metrics)
            worker.start()
        except BaseException as exc:
            self.status, self.error = "failed", public_message(f"{type(exc).__name__}: {exc}")
            raise
        self.processor, self.worker, self.feature_cache = processor, worker, feature_cache
        if feature_cache is not None:
            self.metrics.track_image_cache(feature_cache)
        self.context_length = processor.model_max_length
        self.status = "ready"
        self.metrics.model_ready.set(1)
        log.info("model %s ready in %.1f s, serving as %r", cfg.model_dir, time.perf_counter() - t0,
                 cfg.served_model_name)
        if cfg.notice:
            log.warning("%s", cfg.notice)

    def not_ready_error(self) -> ApiError | None:
        if self.status == "ready":
            return None
        if self.status == "failed":
            return ApiError(503, f"The model could not be loaded ({self.error}); check the server log.",
                            type="server_error", code="model_load_failed")
        n = self.config.loading_retry_after_s
        unit = "second" if n == 1 else "seconds"
        return ApiError(503, f"Model is loading, please retry in {n} {unit}.", type="server_error",
                        code="model_loading", headers={"Retry-After": str(n)})

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.image_pool.shutdown(wait=False, cancel_futures=True)


def _default_engine(model, processor, config: ServerConfig, feature_cache, *, prefix_cache=None):
    from jvlm.inference.engine import Engine

    return Engine(model, processor, max_batch_size=config.max_batch, feature_cache=feature_cache,
                  prefix_cache=prefix_cache)


# ----------------------------------------------------------------------------- gate

_ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/tokenize",
           "/detokenize", "/version")


class Gate:
    """Outermost ASGI layer: counts every answer, checks the key and readiness for ``/v1``.

    Plain ASGI rather than ``BaseHTTPMiddleware`` so streaming and disconnect signals pass
    through untouched.
    """

    def __init__(self, app, state: ServingState):
        self.app, self.state = app, state
        key = state.config.api_key
        self._key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        route = path if path in _ROUTES else "/v1/models/{model}" if path.startswith("/v1/models/") else "other"
        status = {}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            err = self._check(scope) if path.startswith("/v1/") else None
            if err is not None:
                await error_response(err, self.state.metrics)(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            self.state.metrics.observe_response(route, status.get("code", 500))

    def _check(self, scope) -> ApiError | None:
        return api_key_error(scope["headers"], self._key) or self.state.not_ready_error()


# ----------------------------------------------------------------------------- app

def create_app(config: ServerConfig) -> FastAPI:
    """The server app; the model starts loading when the app starts (lifespan)."""
    metrics = ServerMetrics()
    state = ServingState(config, metrics)

    @asynccontextmanager
    async def lifespan(_app):
        if state.status == "loading":  # not loaded before the port opened (``load_now``)
            state.start_loading()
        yield
        await asyncio.to_thread(state.stop)

    app = FastAPI(title="jvlm", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, str(exc.status_code))
        return error_response(ApiError(exc.status_code, str(exc.detail), code=code), metrics)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        return error_response(ApiError(400, f"Invalid request: {exc.errors()[:1]}", code="invalid_value"), metrics)

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):  # the net under every other handler
        return error_response(to_api_error(exc, config), metrics)

    @app.get("/health", include_in_schema=True)
    async def health() -> dict:
        """Liveness: 200 while the process runs, loading or not."""
        return {"status": "ok", "model": state.status}

    @app.get("/ready")
    async def ready():
        """Readiness: 200 once the model serves requests."""
        err = state.not_ready_error()
        if err is not None:
            return error_response(err, metrics)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(data=[_card(state, name) for name in
                               dict.fromkeys((config.served_model_name, *config.served_model_aliases))])

    @app.get("/v1/models/{model}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
    async def get_model(model: str):
        if not config.serves(model):
            return error_response(unknown_model(model, config), metrics)
        return _card(state, model)

    @app.post("/v1/chat/completions", openapi_extra=_CHAT_BODY, responses=ERROR_RESPONSES)
    async def chat_completions(request: Request) -> Response:
        try:
            return await _chat(request, state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error object
            return error_response(to_api_error(exc, config), metrics)

    from jvlm.processing.pdf import PDFLimits
    from jvlm.serve.playground import mount_playground

    mount_playground(app, processor_getter=lambda: state.processor, media_policy=config.media,
                     max_crops_limit=config.max_crops_limit,
                     pdf_limits=PDFLimits(max_bytes=config.media.max_bytes, max_pages=config.media.max_images,
                                          timeout_s=config.pdf_timeout_s,
                                          max_memory_bytes=config.pdf_max_memory_bytes))
    from jvlm.serve.routes import mount_routes  # /v1/completions, /tokenize, /detokenize, /version, /docs

    mount_routes(app, state)
    app.openapi = lambda: _openapi(app)
    app.add_middleware(RequestGuard, limits=config.http, keyed=bool(config.api_key))
    app.add_middleware(Gate, state=state)  # outermost: counts every answer, the guard's refusals too
    return app


def _card(state: ServingState, name: str | None = None) -> ModelCard:
    cfg = state.config
    return ModelCard(id=name or cfg.served_model_name, created=state.created,
                     root=str(cfg.model_dir) if cfg.model_dir else None, max_model_len=state.context_length or None,
                     notice=cfg.notice)


# ----------------------------------------------------------------------------- chat completions

async def _chat(request: Request, state: ServingState) -> Response:
    arrived = time.perf_counter()
    config = state.config
    body = await read_body(request, config.max_body_bytes)
    limit = config.max_crops_limit or state.processor.image_config.max_crops
    try:
        req = parse_chat_request(body, max_crops_limit=limit)
    except RecursionError:  # JSON nested deeper than the parser's stack
        raise ApiError(400, "The request body is nested too deeply to be parsed.", code="invalid_json") from None
    del body  # a large body is not kept alive for the whole generation
    if req.model is not None and not config.serves(req.model):
        raise unknown_model(req.model, config)
    chat.check_text(req, state.context_length)
    ticket = state.worker.reserve()
    try:
        images = await chat.fetch_images(req, config.media, config.resolver)
        state.metrics.images.inc(len(images))
        request_id = new_completion_id()
        # requests with images decode them on a pool of their own: a slow decoder delays other
        # image requests at most, never a text-only one, and bounds decoding memory
        build = functools.partial(
            chat.build, state.processor, req, images, request_id=request_id, defaults=config.defaults,
            context_length=state.context_length, feature_cache=state.feature_cache)
        engine_request = await asyncio.get_running_loop().run_in_executor(
            state.image_pool if images else None, build)
        gen = state.worker.submit(engine_request, arrived_s=arrived)
    except BaseException:
        ticket.release()
        raise
    try:
        first = await unless_disconnected(request, gen.next_event())
    except BaseException:
        gen.cancel()
        ticket.release()
        raise
    if first is None:  # the client left while waiting
        gen.cancel()
        ticket.release()
        return Response(status_code=499)
    created = unix_now()
    if req.stream:
        return StreamingResponse(_sse(gen, first, ticket, req, state, request_id, created),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    last = await final_event(request, gen, first, ticket)
    if last is None:
        return Response(status_code=499)
    return JSONResponse(chat.completion(request_id, config.served_model_name, created, last,
                                        split_reasoning=config.split_reasoning).model_dump(mode="json"))


async def _sse(gen: Generation, first, ticket: Ticket, req: ChatCompletionRequest, state: ServingState,
               request_id: str, created: int) -> AsyncIterator[str]:
    """Role chunk, content chunks (the last with ``finish_reason``), usage, ``[DONE]``; on an
    error, one error event and the end of the stream (see ``chat.stream_chunks``, which also
    packs events into as few writes as it can). Cancelled if the client disconnects.
    """
    writer = chat.ChunkWriter(request_id, state.config.served_model_name, created,
                              split_reasoning=state.config.split_reasoning)

    try:
        async for piece in chat.stream_chunks(
                gen, first, writer, include_usage=req.include_usage,
                error_event=functools.partial(error_event, config=state.config, metrics=state.metrics)):
            yield piece
    finally:  # runs on normal end, on error, and when the client disconnects (cancellation)
        gen.cancel()
        ticket.release()


# ----------------------------------------------------------------------------- OpenAPI

_CHAT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}}
def _openapi(app: FastAPI) -> dict:
    """The generated schema, completed with what the routes do by hand: the chat request body
    (parsed by the route, for exact error paths), both answer forms of chat completions, the
    error answers every ``/v1`` route can give, and 400 (not FastAPI's 422) for bad input."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatCompletionRequest, ChatCompletion):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error = {"description": "OpenAI error object",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            if responses.pop("422", None) is not None:
                responses["400"] = error
            if path.startswith("/v1/"):
                for status in ("401", "503"):
                    responses.setdefault(status, error)
    schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"] = {
        "description": "The answer, or with stream=true a text/event-stream of chunks ending in 'data: [DONE]'",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    "text/event-stream": {"schema": {"type": "string"}}}}
    schema["paths"]["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    schema["paths"]["/ready"]["get"]["responses"]["503"] = error
    app.openapi_schema = schema
    return schema
