"""What goes into the engine and what comes out of it: plain data, no torch modules.

A ``Request`` is token ids plus, for each image, either its preprocessed crops or its
already-computed features (from the feature cache), and the sampling settings. The engine
returns ``TokenEvent``s while it works and one ``Result`` per request at the end.

The token budget lives here because it must be checked before any compute, by anyone who
builds a request (the engine calls it again when a request is added).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jvlm.errors import ContextLengthError, PromptError

_ids = itertools.count()

#: any integer seed is folded into [0, 2**63), the range every torch generator accepts
SEED_MODULUS = 2**63


def new_request_id() -> str:
    return f"req-{next(_ids)}"


@dataclass
class SamplingParams:
    """How the next token is chosen, and when to stop.

    ``temperature == 0`` is greedy decoding. ``seed`` gives the request its own random
    generator, so a sampled answer is the same whatever else shares the batch.
    ``stop`` strings end the answer and are cut from it; ``stop_token_ids`` are added to the
    model's own end-of-turn ids (which ``ignore_eos`` disables).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        self.stop = tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)
        self.stop_token_ids = tuple(int(i) for i in self.stop_token_ids)
        if self.max_new_tokens < 1:
            raise PromptError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise PromptError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:  # (NaN fails this too)
            raise PromptError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise PromptError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed is not None:
            self.seed = int(self.seed) % SEED_MODULUS  # torch generators take seeds in [0, 2**64)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class ImageInput:
    """One image of a request, positioned in the prompt.

    ``image_input_idx`` holds absolute prompt positions (negative = the pooled cell feeds no
    token), one row per crop. Exactly one of ``crops`` (+ ``masks``) or ``features`` is needed;
    ``cache_key`` lets the engine store or reuse the features.
    """

    image_input_idx: np.ndarray  # (n_crops, tokens_per_crop) int64
    crops: np.ndarray | None = None  # (n_crops, P, 588) float32
    masks: np.ndarray | None = None  # (n_crops, P)
    features: torch.Tensor | None = None  # (n_crops, tokens_per_crop, hidden)
    cache_key: str | None = None
    layout: Any = None  # processing.image.ImageLayout, kept with cached features
    n_tokens: int = 0  # length of the image block in the prompt
    tiling: tuple[int, int] = (0, 0)  # (rows, cols) of tiles, for reports

    @property
    def n_crops(self) -> int:
        return int(self.image_input_idx.shape[0])


@dataclass
class Request:
    """Token ids in, token ids out. ``prompt_ids`` already contain the image blocks and BOS."""

    prompt_ids: list[int]
    images: list[ImageInput] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=new_request_id)

    @property
    def n_image_tokens(self) -> int:
        return sum(im.n_tokens for im in self.images)


@dataclass
class TokenEvent:
    """One step of one request: a new token and the text it completed (may be "").

    The last event of a request has ``finish_reason`` set ("stop" or "length"; "abort" when
    cancelled; "error" when this request alone failed, with the exception in ``error``); its
    ``token_id`` may be None when it only flushes held-back text.
    """

    request_id: str
    token_id: int | None
    text: str
    finish_reason: str | None = None
    result: Result | None = None  # set on the last event
    error: BaseException | None = None  # set when finish_reason == "error"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Result:
    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int
    image_tokens: int
    time_to_first_token_s: float
    total_s: float
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first one, per second of decoding."""
        decode_s = self.total_s - self.time_to_first_token_s
        return (len(self.token_ids) - 1) / decode_s if len(self.token_ids) > 1 and decode_s > 0 else 0.0


def check_budget(prompt_tokens: int, image_tokens: int, max_new_tokens: int, context: int) -> None:
    """Refuse a request whose prompt (image tokens included) plus new tokens exceed the context.

    Called before any image is encoded or any forward pass is run, so an oversized request
    costs nothing and the user sees exactly where the tokens go.
    """
    total = prompt_tokens + max_new_tokens
    if total > context:
        raise ContextLengthError(
            f"this request needs {total} tokens: {prompt_tokens} prompt tokens ({image_tokens} of them "
            f"image tokens) + {max_new_tokens} new tokens, but the model's context is {context}; "
            "use fewer pages or images, a smaller max_crops, or a smaller max_new_tokens"
        )
