"""The web playground: one page at ``GET /`` that talks to the server's own OpenAI API.

The page (``static/playground.html`` with its CSS and JavaScript modules; no CDN, no build
step) sends chat requests straight to ``/v1/chat/completions`` like any client would, so it
needs nothing the API does not already offer, except two small helpers mounted here:

- ``POST /v1/jvlm/layout``: how each image would be tiled and what it costs in visual
  tokens, so the page can draw the tile grid over the picture. The numbers come from
  ``image_layout`` and ``efficiency_report`` of the *loaded* model's config, the one place
  that says what an image costs, rather than from a copy of the arithmetic in JavaScript.
- ``POST /v1/jvlm/pdf``: PDF pages rendered to PNG data URLs (``jvlm.processing.pdf``), which
  the page then attaches as ordinary images.

Both answer errors in the OpenAI error shape, like the rest of the API. The page and its
assets are served without authentication (a visitor must see the page to type the key);
the helpers live under ``/v1/`` so the server's gate applies the API key and the
readiness check to them exactly as to the chat route.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from jvlm.efficiency import efficiency_report
from jvlm.errors import ImageTooLargeError, JVLMError
from jvlm.processing.image import image_layout
from jvlm.processing.pdf import (
    PDFLimits,
    PDFSupportMissingError,
    PDFTooLargeError,
    render_pdf,
)
from jvlm.media import MediaPolicy
from jvlm.serve.protocol import InvalidRequestError, describe_validation_error, error_body, load_json

log = logging.getLogger(__name__)

#: the files ``GET /playground/<name>`` may serve, with their media types
_ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",  # the page's script: status, chat, key
    "core.js": "text/javascript; charset=utf-8",  # state, API calls, SSE, notices
    "images.js": "text/javascript; charset=utf-8",  # attachments, tile overlay, token cost
}
#: everything the page loads comes from this server; images are data:/blob: URLs
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_MAX_LAYOUT_IMAGES = 64
_MAX_LAYOUT_BODY_BYTES = 64 * 1024
_LOADING_RETRY_AFTER_S = 5


# ----------------------------------------------------------------------------- schemas

class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ImageSize(_Strict):
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class LayoutRequest(_Strict):
    images: Annotated[list[ImageSize], Field(min_length=1, max_length=_MAX_LAYOUT_IMAGES)]
    max_crops: int | None = Field(None, ge=1)


def _error(status: int, message: str, *, code: str, type: str = "invalid_request_error",
           param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type, param=param, code=code), status_code=status, headers=headers)


def _model_loading() -> JSONResponse:
    return _error(503, "the model is still loading; the playground retries by itself",
                  code="model_loading", type="service_unavailable",
                  headers={"Retry-After": str(_LOADING_RETRY_AFTER_S)})


# ----------------------------------------------------------------------------- layout

def _round(v: float) -> float:
    return round(v, 2)


def layout_of(width: int, height: int, cfg, max_crops: int | None) -> dict[str, Any]:
    """Tiling of one image in *input-image* coordinates, plus its token cost.

    ``tiles`` are the crops the ViT sees, each overlapping its neighbours by the margins;
    ``cuts`` are the lines between the regions each tile contributes tokens for (the overlap
    split in the middle), which is what the page draws as the grid. Both are mapped back from
    the stretched image the tiles are cut from, whose aspect ratio differs from the input's.
    """
    im = cfg.image
    lay = image_layout(height, width, im, max_crops)
    report = efficiency_report(width, height, cfg, max_crops)
    rows, cols = lay.tiling
    sh, sw = lay.stretched_hw
    fy, fx = height / sh, width / sw  # stretched px -> input px, per axis
    step, size = im.window_px, im.crop_size
    lead = im.overlap_margins[0] * im.patch_size  # the first tile's margin, kept on the border
    tiles = [
        {"row": r, "col": c, "x": _round(c * step * fx), "y": _round(r * step * fy),
         "width": _round(size * fx), "height": _round(size * fy)}
        for r in range(rows) for c in range(cols)
    ]
    tokens = report["tokens"]
    return {
        "width": width,
        "height": height,
        "rows": rows,
        "cols": cols,
        "n_tiles": rows * cols,
        "n_crops": lay.n_crops,  # the tiles plus the thumbnail of the whole image
        "resized": {"width": lay.resized_hw[1], "height": lay.resized_hw[0]},
        "tiles": tiles,
        "cuts": {"x": [_round((lead + k * step) * fx) for k in range(1, cols)],
                 "y": [_round((lead + k * step) * fy) for k in range(1, rows)]},
        "tokens": {
            "visual": tokens["block_tokens"],  # what the image adds to the prompt
            "features": tokens["feature_tokens"],
            "unpooled": tokens["nominal_unpooled"],  # what it would cost without 2x2 pooling
        },
    }


def _layouts(body: LayoutRequest, cfg, policy: MediaPolicy, max_crops_limit: int | None) -> dict[str, Any]:
    max_crops_limit = max_crops_limit or cfg.image.max_crops  # the chat route's rule
    max_crops = cfg.image.max_crops if body.max_crops is None else body.max_crops
    if max_crops > max_crops_limit:
        raise _ParamError(f"max_crops must be between 1 and {max_crops_limit} on this server, got {max_crops}",
                          param="max_crops")
    caps = [c for c in (policy.max_pixels, cfg.image.max_input_pixels) if c > 0]  # <= 0 means no cap
    pixel_cap = min(caps, default=0)
    out = []
    for size in body.images:
        try:
            if pixel_cap and size.width * size.height > pixel_cap:
                raise ImageTooLargeError(
                    f"the image is {size.width}×{size.height} = {size.width * size.height:,} pixels, above this "
                    f"server's cap of {pixel_cap:,}; downscale it before sending")
            out.append(layout_of(size.width, size.height, cfg, max_crops))
        except JVLMError as e:  # one bad image must not hide the others' layouts
            out.append({"width": size.width, "height": size.height,
                        "error": {"message": str(e), "code": e.code}})
    return {"max_crops": max_crops, "images": out}


class _ParamError(ValueError):
    def __init__(self, message: str, *, param: str | None):
        super().__init__(message)
        self.param = param


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


# ----------------------------------------------------------------------------- assets

def _asset(name: str) -> bytes:
    # read on every request (a few tens of KB): an edited page shows on reload, no restart
    return resources.files("jvlm.serve").joinpath("static", name).read_bytes()


# ----------------------------------------------------------------------------- mounting

def mount_playground(
    app: FastAPI,
    *,
    processor_getter: Callable[[], Any],
    media_policy: MediaPolicy | None = None,
    max_crops_limit: int | None = None,
    pdf_limits: PDFLimits | None = None,
) -> None:
    """Add ``GET /``, its assets under ``/playground/`` and the ``/v1/jvlm/*`` helpers to ``app``.

    ``processor_getter`` returns the loaded ``JinaVLMProcessor`` (its config decides the
    tiling), or ``None`` while the model is loading, when the helpers answer 503
    ``model_loading``. ``media_policy`` and ``max_crops_limit`` (None: the model's own
    ``max_crops``) should be the ones the chat route enforces, so the page warns about
    exactly what the API would refuse. A PDF may render as many pages as a request may
    carry images, unless ``pdf_limits`` says otherwise.
    """
    policy = media_policy or MediaPolicy()
    limits = pdf_limits or PDFLimits(max_bytes=policy.max_bytes, max_pages=policy.max_images)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def playground_page() -> Response:
        return Response(_asset("playground.html"), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})

    @app.get("/playground/{name}", include_in_schema=False)
    def playground_asset(name: str) -> Response:
        if name not in _ASSETS:
            return _error(404, f"no playground file named {name!r}", code="not_found", type="not_found_error")
        return Response(_asset(name), media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})

    @app.get("/v1/jvlm/playground")
    def playground_settings() -> Response:
        """Server limits the page shows and checks before sending."""
        processor = processor_getter()
        if processor is None:
            return _model_loading()
        return JSONResponse({
            "max_images": policy.max_images,
            "max_image_bytes": policy.max_bytes,
            "max_crops": processor.config.image.max_crops,
            "max_crops_limit": max_crops_limit or processor.config.image.max_crops,
            "pdf_max_pages": limits.max_pages,
            "pdf_max_bytes": limits.max_bytes,
        })

    @app.post("/v1/jvlm/layout")
    async def layout(request: Request) -> Response:
        raw = await _read_capped(request, _MAX_LAYOUT_BODY_BYTES)
        if raw is None:
            return _error(413, f"a layout request is at most {_MAX_LAYOUT_BODY_BYTES:,} bytes; it carries image "
                          "sizes, not images", code="request_too_large")
        try:
            data = load_json(raw)
        except InvalidRequestError as e:
            return _error(400, e.message, code="invalid_json")
        try:
            body = LayoutRequest.model_validate(data)
        except ValidationError as e:
            message, param = describe_validation_error(e, data)
            return _error(400, message, code="invalid_value", param=param)
        processor = processor_getter()
        if processor is None:
            return _model_loading()
        try:
            return JSONResponse(_layouts(body, processor.config, policy, max_crops_limit))
        except _ParamError as e:
            return _error(400, str(e), code="invalid_value", param=e.param)

    @app.post("/v1/jvlm/pdf")
    async def pdf(request: Request, first_page: int = 0) -> Response:
        data = await _read_capped(request, limits.max_bytes)
        if data is None:
            e = PDFTooLargeError(f"the PDF is larger than this server's limit of {limits.max_bytes / 2**20:.0f} MiB; "
                                 "split it or send the pages as images")
            return _error(413, str(e), code=e.code)
        try:
            rendered = await _render_unless_disconnected(request, data, limits, first_page)
            if rendered is None:  # the client left: the rendering process was stopped
                return Response(status_code=499)
        except PDFSupportMissingError as e:
            return _error(501, str(e), code=e.code, type="not_implemented_error")
        except PDFTooLargeError as e:
            return _error(413, str(e), code=e.code)
        except JVLMError as e:
            return _error(400, str(e), code=e.code)
        return JSONResponse({
            "n_pages": rendered.n_pages,
            "next_page": rendered.next_page,
            "pages": [{"index": p.index, "width": p.width, "height": p.height, "url": p.data_url()}
                      for p in rendered.pages],
        })


async def _render_unless_disconnected(request: Request, data: bytes, limits: PDFLimits, first_page: int):
    """The rendered pages, or None when the client disconnects first (rendering is stopped)."""
    cancel = threading.Event()
    task = asyncio.ensure_future(run_in_threadpool(render_pdf, data, limits, first_page, cancel=cancel))

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            cancel.set()  # the child process is killed within a poll interval
    if not task.done():
        task.add_done_callback(lambda t: t.exception())  # read it: Cancelled is expected
        return None
    return task.result()
