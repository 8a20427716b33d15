"""``POST /v1/completions``: the legacy OpenAI text-completion API, with images.

The prompt is raw text: no chat template is applied (vLLM and OpenAI do the same), so a
client that wants the model's chat format writes it itself. Images come in the extra field
``images`` (URLs, ``data:`` URIs or base64, through the same fetch policy as chat images;
``extra_body={"images": [...]}`` with the official client) and are placed by the processor
exactly as in chat: at each ``<|image|>`` placeholder in the prompt, or before the text when
the prompt has none.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jvlm.inference.prompt import prepare_image
from jvlm.errors import ContextLengthError
from jvlm.inference.request import Request, SamplingParams, check_budget
from jvlm.media import MediaPolicy, Resolver, check_image_count, fetch_image_bytes
from jvlm.processing.chat_text import check_text_budget
from jvlm.serve.chat import MIN_SAMPLING_TEMPERATURE
from jvlm.serve.protocol import InvalidRequestError, Usage, describe_validation_error

#: OpenAI's default for the completions API (short: it was made for continuing text)
DEFAULT_MAX_TOKENS = 16


class CompletionRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    prompt: str | list[str]
    images: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    max_crops: int | None = Field(None, ge=1)

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise InvalidRequestError(f"prompt holds {len(self.prompt)} prompts; this server answers one prompt "
                                      "per request, send them one at a time", param="prompt")
        return self.prompt[0]


def parse(body: bytes) -> CompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"the body is not valid JSON: {e}", code="invalid_json") from None
    try:
        req = CompletionRequest.model_validate(data)
    except ValidationError as e:
        message, param = describe_validation_error(e)
        raise InvalidRequestError(message, param=param) from None
    for field, why in (("n", req.n > 1), ("logprobs", req.logprobs is not None), ("echo", req.echo),
                       ("suffix", req.suffix is not None)):
        if why:
            raise InvalidRequestError(f"{field} is not supported by this server; leave it out", param=field,
                                      code="unsupported_parameter")
    if not req.text().strip() and not req.images:
        raise InvalidRequestError("prompt is empty; send the text to continue", param="prompt")
    return req


def check_text_length(text: str, context_length: int) -> None:
    """Refuse a prompt too long to ever fit the context, before it is tokenized: the character
    budget of chat text (``check_text_budget``), answered as 400 ``context_length_exceeded``."""
    try:
        check_text_budget(len(text), context_length, what="the prompt holds")
    except ContextLengthError as e:
        raise InvalidRequestError(str(e), param="prompt", code="context_length_exceeded") from None


def check_text(text: str, processor, context_length: int) -> None:
    """A prompt that can fit the context (checked first: it is the cheap check) and is
    well-formed text; it may hold ``<|image|>`` placeholders, but no other token only the
    processor places."""
    check_text_length(text, context_length)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequestError(f"prompt contains an unpaired UTF-16 surrogate at offset {e.start}; send "
                                  "well-formed text", param="prompt") from None
    image = processor.config.tokens.image
    for tok in processor.config.tokens.structural():
        if tok and tok != image and tok in text:
            raise InvalidRequestError(f"prompt contains {tok!r}, a token reserved for image blocks; use "
                                      f"{image!r} to place an image", param="prompt")


async def fetch_images(req: CompletionRequest, policy: MediaPolicy, resolver: Resolver | None) -> list[bytes]:
    check_image_count(len(req.images), policy)
    return list(await asyncio.gather(*(fetch_image_bytes(url, policy, param=f"images[{i}]", resolver=resolver)
                                       for i, url in enumerate(req.images))))


def build(processor, req: CompletionRequest, images: list[bytes], *, default_max_tokens: int | None,
          context_length: int, feature_cache=None) -> Request:
    """The engine request: raw prompt text + images (blocking: run it on a worker thread)."""
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    text = req.text()
    prepared = [prepare_image(processor, img, req.max_crops, feature_cache) for img in images]
    enc = processor.encode(text, processed=[p for p, _ in prepared])
    inputs, row = [], 0
    for _, im in prepared:
        im.image_input_idx = enc.image_input_idx[row:row + im.n_crops]
        row += im.n_crops
        inputs.append(im)
    max_tokens = req.max_tokens or min(default_max_tokens or DEFAULT_MAX_TOKENS,
                                       max(1, context_length - len(enc.input_ids)))
    check_budget(len(enc.input_ids), enc.n_image_tokens, max_tokens, context_length)
    temperature = req.temperature or 0.0
    params = SamplingParams(max_new_tokens=max_tokens,
                            temperature=0.0 if temperature < MIN_SAMPLING_TEMPERATURE else temperature,
                            top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                            seed=None if req.seed is None else req.seed % 2**63, stop=tuple(stop))
    request = Request(prompt_ids=list(enc.input_ids), images=inputs, params=params)
    request.request_id = f"cmpl-{uuid.uuid4().hex}"
    return request


def include_usage(req: CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.get("include_usage"))


def body(request_id: str, model: str, created: int, text: str, finish_reason: str | None,
         usage: Usage | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": request_id, "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}]}
    if usage is not None:
        out["usage"] = usage.model_dump()
    return out


def now() -> int:
    return int(time.time())
