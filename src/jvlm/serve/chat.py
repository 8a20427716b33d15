"""Serving logic of chat completions: from a parsed request to an engine ``Request``, and
from engine events back to OpenAI responses. No routes and no HTTP here (see ``app``).

The steps, in the order they run, each failing with a typed error the app turns into a 400:

1. text checks (well-formed Unicode, a length that can fit the context);
2. image count, then every image fetched concurrently through ``fetch`` (the safety gate);
3. chat template, image preprocessing (or the feature cache) and the token budget, all in
   ``jvlm.inference.prompt.build_request`` on a worker thread, because decoding and tiling
   images would otherwise stall the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from jvlm.inference.prompt import build_request
from jvlm.inference.reasoning import ReasoningSplitter
from jvlm.inference.reasoning import split_reasoning as _split
from jvlm.inference.request import Request, SamplingParams, TokenEvent
from jvlm.processing.chat_text import MAX_CHARS_PER_TOKEN, check_text_budget
from jvlm.media import MediaPolicy, Resolver, check_image_count, fetch_image_bytes
from jvlm.serve.protocol import (
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ImageURLPart,
    InvalidRequestError,
    TextPart,
    Usage,
    sse_event,
)
from jvlm.serve.worker import EngineFailure

log = logging.getLogger(__name__)

#: torch generators take seeds in [0, 2**64); any integer a client sends is folded into [0, 2**63)
_SEED_MODULUS = 2**63
#: below this, dividing logits by the temperature overflows to inf and sampling breaks down;
#: such a temperature means "always the most likely token", i.e. greedy
MIN_SAMPLING_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request gets for the fields it leaves out."""

    max_tokens: int = 512
    #: 0 = greedy, as the model's generation_config.json asks; clients may send their own
    temperature: float = 0.0


def hf_messages(req: ChatCompletionRequest) -> list[dict]:
    """Messages in the Hugging Face chat format the processor's template reads.

    ``developer`` (the newer OpenAI name for system prompts) becomes ``system``; image parts
    become ``{"type": "image"}`` slots, filled by the fetched images in order.
    """
    out = []
    for message in req.messages:
        role = "system" if message.role in ("system", "developer") else message.role
        parts = message.parts()
        if all(isinstance(p, TextPart) for p in parts):
            out.append({"role": role, "content": "".join(p.text for p in parts)})
        else:
            out.append({"role": role, "content": [
                {"type": "image"} if isinstance(p, ImageURLPart) else {"type": "text", "text": p.text}
                for p in parts]})
    return out


def check_text(req: ChatCompletionRequest, context_length: int,
               chars_per_token: float = MAX_CHARS_PER_TOKEN) -> None:
    """Refuse text the tokenizer cannot take, or too much of it to ever fit the context.

    JSON may carry unpaired UTF-16 surrogates (``"\\udc00"``), which are not Unicode text at
    all. The length check runs before anything is fetched or tokenized: tokenizing costs about
    a microsecond and a few hundred bytes per character, so a 30 MB message would otherwise
    spend minutes and gigabytes to learn that it does not fit. Control tokens typed into the
    text need no check here: the prompt builder reads them as plain text.
    """
    texts = [(i, j, message, part) for i, message in enumerate(req.messages)
             for j, part in enumerate(message.parts()) if isinstance(part, TextPart)]
    check_text_budget(sum(len(part.text) for *_, part in texts), context_length, chars_per_token,
                      n_messages=len(req.messages))
    for i, j, message, part in texts:
        param = f"messages[{i}].content" if isinstance(message.content, str) else f"messages[{i}].content[{j}].text"
        try:
            part.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(
                f"the text contains {part.text[exc.start]!r} at offset {exc.start}, an unpaired UTF-16 "
                "surrogate, which is not valid Unicode; send well-formed text.", param=param) from None


async def fetch_images(req: ChatCompletionRequest, policy: MediaPolicy,
                       resolver: Resolver | None = None) -> list[bytes]:
    """Bytes of every image in the request, fetched concurrently; the first failure wins and
    cancels the other downloads."""
    urls = req.image_urls()
    check_image_count(len(urls), policy)
    if not urls:
        return []
    tasks = [asyncio.ensure_future(fetch_image_bytes(url, policy, param=path, resolver=resolver))
             for path, url in urls]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        # read every finished task's error (an unread one is logged as a leak), then report
        # the earliest image's, in the order the client wrote them
        errors = [task.exception() for task in tasks if task in done]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


def sampling_params(req: ChatCompletionRequest, defaults: GenerationDefaults) -> SamplingParams:
    """Engine sampling settings; an omitted ``max_tokens`` is provisionally 1 (see ``build``)."""
    temperature = defaults.temperature if req.temperature is None else float(req.temperature)
    return SamplingParams(
        max_new_tokens=req.max_new_tokens or 1,
        temperature=0.0 if temperature < MIN_SAMPLING_TEMPERATURE else temperature,
        top_p=1.0 if req.top_p is None else float(req.top_p),
        top_k=req.top_k_or_none or 0,
        seed=None if req.seed is None else req.seed % _SEED_MODULUS,
        stop=tuple(req.stop_sequences),
    )


def build(processor, req: ChatCompletionRequest, images: list[bytes], *, request_id: str,
          defaults: GenerationDefaults, context_length: int, feature_cache=None) -> Request:
    """The engine request (blocking: run it on a worker thread).

    Raises ``ContextLengthError`` when the prompt plus ``max_tokens`` overflows the context.
    Without ``max_tokens`` the budget is the default, shortened to what the context has left,
    so a long prompt still gets an answer instead of an error.
    """
    params = sampling_params(req, defaults)
    request = build_request(processor, hf_messages(req), images, max_crops=req.max_crops, params=params,
                            feature_cache=feature_cache, context_length=context_length, request_id=request_id)
    if req.max_new_tokens is None:
        room = context_length - len(request.prompt_ids)
        request.params.max_new_tokens = max(1, min(defaults.max_tokens, room))
    return request


# ----------------------------------------------------------------------------- responses

def completion(request_id: str, model: str, created: int, event: TokenEvent, *,
               split_reasoning: bool = True) -> ChatCompletion:
    """The non-streaming answer from the last event of a generation.

    With ``split_reasoning`` a reply that opens with a ``<think>`` block carries the block's
    text in ``reasoning_content`` and only the answer after it in ``content``.
    """
    result = event.result
    reasoning, content = _split(result.text) if split_reasoning else (None, result.text)
    return ChatCompletion.single(id=request_id, model=model, created=created, content=content,
                                 reasoning_content=reasoning, finish_reason=event.finish_reason,
                                 usage=Usage.of(result.prompt_tokens, result.completion_tokens))


def usage_of(event: TokenEvent) -> Usage:
    return Usage.of(event.result.prompt_tokens, event.result.completion_tokens)


class ChunkWriter:
    """The SSE events of one streamed answer.

    A content chunk differs from the previous one only in its text, so the event is rendered
    once from the schema with a placeholder and then filled by string joining: building and
    serialising a pydantic model per token is a large share of the server's per-token work.
    """

    _PLACEHOLDER = "JVLM_CHUNK_TEXT_PLACEHOLDER"

    def __init__(self, request_id: str, model: str, created: int, *, split_reasoning: bool = True):
        self.request_id, self.model, self.created = request_id, model, created
        self._content = self._template(ChatCompletionChunk.content)
        self._reasoning = self._template(ChatCompletionChunk.reasoning)
        #: routes the streamed text to reasoning or content chunks (None: all is content)
        self.splitter = ReasoningSplitter() if split_reasoning else None

    def _template(self, make) -> tuple[str, str]:
        probe = sse_event(make(id=self.request_id, model=self.model, created=self.created, text=self._PLACEHOLDER))
        head, tail = probe.split(json.dumps(self._PLACEHOLDER))
        return head, tail

    def role(self) -> str:
        return sse_event(ChatCompletionChunk.role(id=self.request_id, model=self.model, created=self.created))

    def content(self, text: str, finish_reason: str | None = None) -> str:
        if finish_reason is None:
            head, tail = self._content
            return f"{head}{json.dumps(text, ensure_ascii=False)}{tail}"
        return sse_event(ChatCompletionChunk.content(id=self.request_id, model=self.model, created=self.created,
                                                     text=text, finish_reason=finish_reason))

    def reasoning(self, text: str) -> str:
        head, tail = self._reasoning
        return f"{head}{json.dumps(text, ensure_ascii=False)}{tail}"

    def text(self, text: str, finish_reason: str | None = None) -> list[str]:
        """The events for a piece of generated text (the last piece has ``finish_reason``)."""
        if self.splitter is None:
            return [self.content(text, finish_reason)]
        reasoning, answer = self.splitter.feed(text)
        if finish_reason is not None:
            more_reasoning, more_answer = self.splitter.finish()
            reasoning, answer = reasoning + more_reasoning, answer + more_answer
        events = [self.reasoning(reasoning)] if reasoning else []
        if answer or finish_reason is not None:
            events.append(self.content(answer, finish_reason))
        return events

    def usage(self, event: TokenEvent) -> str:
        return sse_event(ChatCompletionChunk.final_usage(id=self.request_id, model=self.model,
                                                         created=self.created, usage=usage_of(event)))



async def stream_chunks(gen, first: TokenEvent, writer: ChunkWriter, *, include_usage: bool,
                        error_event: Callable[[Exception], str]) -> AsyncIterator[str]:
    """The SSE text of one streamed answer, in as few pieces (socket writes) as the events allow.

    ``gen`` is a ``worker.Generation`` whose ``first`` event has been taken already. Every
    piece is a whole number of events, so a client sees the same event sequence however the
    pieces fall. Each piece costs a pass through the ASGI stack and a ``send`` system call,
    as much as rendering the chunk itself, so: the role chunk goes out with the first tokens;
    events that already wait (the client reads slower than the model writes) go out
    together; and the last content chunk, the usage chunk and ``[DONE]`` leave in one piece.

    An error (including a generation that ended other than by ``stop``/``length``) ends the
    stream with whatever was rendered before it and then ``error_event(exc)``.
    """
    pending = [writer.role()]
    event: TokenEvent | None = first
    try:
        while True:
            while event is not None:
                if event.finished and event.finish_reason not in ("stop", "length"):
                    raise EngineFailure(f"the generation ended unexpectedly ({event.finish_reason})")
                if event.text or event.finished:
                    pending.extend(writer.text(event.text, event.finish_reason))
                if event.finished:
                    break
                event = gen.next_event_nowait()
            if event is not None:  # the last event is rendered
                break
            if pending:  # (a token can render as no text yet: the detokenizer holds it back)
                yield "".join(pending)
                pending = []
            event = await gen.next_event()
    except Exception as exc:  # noqa: BLE001 - after the first byte the status is sent: report in-stream
        pending.append(error_event(exc))
        yield "".join(pending)
        return
    if include_usage:
        pending.append(writer.usage(event))
    pending.append(SSE_DONE)
    yield "".join(pending)
