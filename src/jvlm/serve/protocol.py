"""The OpenAI chat-completions wire format: what the server accepts and what it answers.

Schemas only (pydantic v2, no torch), so routes and tests can share one definition and the
official ``openai`` client can parse every answer. Requests are strict about types (a string
where a number belongs is an error, not a silent coercion) but ignore fields they do not
know, because official clients add new optional fields faster than servers learn them.
Fields that would change the answer and that we cannot honour (``n > 1``, ``logprobs``,
``tools``, JSON ``response_format``) are refused with a message rather than ignored.

Validation problems become ``(message, param)`` where ``param`` is the JSON path of the
offending field, e.g. ``messages[0].content[1].image_url.url``, as OpenAI's own API reports it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from jvlm.errors import JVLMError

MAX_STOP_SEQUENCES = 4
#: upper bound for ``max_crops`` when the server does not pass its own via validation context
MAX_CROPS_HARD_LIMIT = 64

FinishReason = Literal["stop", "length"]


class InvalidRequestError(JVLMError, ValueError):
    """The request body does not match the schema; ``param`` is the JSON path to blame."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


# ----------------------------------------------------------------------------- requests

class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURLPart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _accept_plain_string(cls, value: Any) -> Any:
        # some clients send {"type": "image_url", "image_url": "https://..."}
        return {"url": value} if isinstance(value, str) else value


ContentPart = Annotated[TextPart | ImageURLPart, Field(discriminator="type")]


class _Message(_Request):
    content: Any  # narrowed by each role
    name: str | None = None

    def parts(self) -> list[TextPart | ImageURLPart]:
        """Content as a list of parts, in order (a plain string is one text part)."""
        content = self.content
        if content is None:
            return []
        if isinstance(content, str):
            return [TextPart(type="text", text=content)]
        return list(content)

    def text(self) -> str:
        """The text parts joined; images are left out."""
        return "".join(p.text for p in self.parts() if isinstance(p, TextPart))


class SystemMessage(_Message):
    role: Literal["system", "developer"]  # newer clients send 'developer' for system prompts
    content: str | list[TextPart]


class UserMessage(_Message):
    role: Literal["user"]
    content: str | Annotated[list[ContentPart], Field(min_length=1)]


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]


class StreamOptions(_Request):
    include_usage: bool | None = False


class ChatCompletionRequest(_Request):
    model: str | None = None  # optional: a single-model server knows what to run
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # extension; 0 and -1 (vLLM's spelling) mean off
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    max_crops: int | None = None  # extension: tiles per image for this request

    @field_validator("n")
    @classmethod
    def _single_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError(f"only n=1 is supported, got n={n}; send separate requests for more completions")
        return n

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value:
            raise ValueError("log probabilities are not supported by this server; omit this field")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tool calling is not supported by this server; omit 'tools'")
        return tools

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, fmt: dict[str, Any] | None) -> dict[str, Any] | None:
        if fmt and fmt.get("type", "text") != "text":
            raise ValueError(f"response_format type {fmt.get('type')!r} is not supported; only 'text'")
        return fmt

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if stop is not None and any(s == "" for s in ([stop] if isinstance(stop, str) else stop)):
            raise ValueError("stop sequences must be non-empty strings")
        return stop

    @field_validator("max_crops")
    @classmethod
    def _crop_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = (info.context or {}).get("max_crops_limit") or MAX_CROPS_HARD_LIMIT
        if value is not None and not 1 <= value <= limit:
            raise ValueError(f"max_crops must be between 1 and {limit} on this server, got {value}")
        return value

    @property
    def max_new_tokens(self) -> int | None:
        """The generation budget; ``max_completion_tokens`` is the newer name and wins."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def top_k_or_none(self) -> int | None:
        return self.top_k if self.top_k is not None and self.top_k > 0 else None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def image_urls(self) -> list[tuple[str, str]]:
        """``(json_path, url)`` of every image in order, the path ready for error ``param``."""
        found = []
        for i, message in enumerate(self.messages):
            for j, part in enumerate(message.parts()):
                if isinstance(part, ImageURLPart):
                    found.append((f"messages[{i}].content[{j}].image_url.url", part.image_url.url))
        return found


# ----------------------------------------------------------------------------- responses

class Usage(BaseModel):
    prompt_tokens: int  # image tokens included
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    #: the reply's reasoning block (``<think>...</think>``), apart from the answer in ``content``;
    #: None when the reply has none or the server leaves it in ``content`` (``--reasoning-format raw``)
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None

    @classmethod
    def single(cls, *, id: str, model: str, content: str, finish_reason: FinishReason, usage: Usage,
               created: int | None = None, reasoning_content: str | None = None) -> ChatCompletion:
        message = ResponseMessage(content=content, reasoning_content=reasoning_content)
        return cls(id=id, created=created or unix_now(), model=model, usage=usage,
                   choices=[Choice(message=message, finish_reason=finish_reason)])


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event. The stream is: role chunk, ``reasoning_content`` chunks if the
    reply opens with a reasoning block, content chunks (the last one with ``finish_reason``),
    then with ``include_usage`` one chunk with no choices and ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @classmethod
    def role(cls, *, id: str, model: str, created: int) -> ChatCompletionChunk:
        return cls(id=id, created=created, model=model,
                   choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])

    @classmethod
    def content(cls, *, id: str, model: str, created: int, text: str,
                finish_reason: FinishReason | None = None) -> ChatCompletionChunk:
        return cls(id=id, created=created, model=model,
                   choices=[ChunkChoice(delta=DeltaMessage(content=text), finish_reason=finish_reason)])

    @classmethod
    def reasoning(cls, *, id: str, model: str, created: int, text: str) -> ChatCompletionChunk:
        return cls(id=id, created=created, model=model,
                   choices=[ChunkChoice(delta=DeltaMessage(reasoning_content=text))])

    @classmethod
    def final_usage(cls, *, id: str, model: str, created: int, usage: Usage) -> ChatCompletionChunk:
        return cls(id=id, created=created, model=model, choices=[], usage=usage)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "jvlm"
    root: str | None = None  # the model folder (vLLM's field)
    max_model_len: int | None = None  # context length in tokens, images included
    notice: str | None = None  # set when the model is not a real checkpoint: what it is


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error object, used for every error, including those inside a stream."""
    return ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def unix_now() -> int:
    return int(time.time())


SSE_DONE = "data: [DONE]\n\n"


def sse_event(payload: BaseModel | dict) -> str:
    """One ``text/event-stream`` event: ``data: {json}`` and a blank line."""
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


# ----------------------------------------------------------------------------- validation errors

_CODE_BY_ERROR_TYPE = {"missing": "missing_required_parameter", "union_tag_not_found": "missing_required_parameter",
                       "value_error": "unsupported_value", "union_tag_invalid": "invalid_value"}


def _json_path(loc: tuple, data: Any, *, missing: bool) -> tuple[str | None, int]:
    """Map a pydantic ``loc`` to a JSON path by walking the input alongside it.

    Union and discriminator labels that pydantic inserts into ``loc`` ('user', 'str',
    'list[...]') are skipped because they are not keys of the input. Returns the path and
    its depth (how many input levels it descends).
    """
    text, depth, node = "", 0, data
    for i, key in enumerate(loc):
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            text, node = f"{text}[{key}]", node[key]
        elif isinstance(key, str) and isinstance(node, dict) and (key in node or (missing and i == len(loc) - 1)):
            text, node = f"{text}.{key}" if text else key, node.get(key)
        else:
            continue
        depth += 1
    return (text or None), depth


def describe_validation_error(exc: ValidationError, data: Any = None) -> tuple[str, str | None]:
    """``(message, param)`` for the most specific problem in ``exc``.

    ``data`` is the input that failed (needed to tell field names from union labels). When a
    value matches none of a union's forms, pydantic reports one error per form; the deepest
    path is the form the client evidently meant (a list of parts rather than a string).
    """
    message, param, _ = _describe(exc, data)
    return message, param


def _describe(exc: ValidationError, data: Any) -> tuple[str, str | None, str]:
    candidates = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        param, depth = _json_path(err["loc"], data, missing=kind == "missing")
        if kind.startswith("union_tag"):  # blame the discriminator field itself
            field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
            param, depth = (f"{param}.{field}" if param else field), depth + 1
        candidates.append((depth, param, kind, err["msg"].removeprefix("Value error, ")))
    best_depth = max(c[0] for c in candidates)
    param = next(c[1] for c in candidates if c[0] == best_depth)
    best = [c for c in candidates if c[0] == best_depth and c[1] == param]
    if any(not c[2].endswith("_type") for c in best):
        # the input had the right type for one form and broke a rule of that form:
        # "a valid string" is noise next to "at most 4 items"
        best = [c for c in best if not c[2].endswith("_type")]
    kind = best[0][2]
    if param is None and kind in ("model_type", "dict_type"):
        return "The request body must be a JSON object.", None, "invalid_type"
    if kind in ("missing", "union_tag_not_found"):
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    code = _CODE_BY_ERROR_TYPE.get(kind, "invalid_type" if kind.endswith("_type") else "invalid_value")
    where = f" for '{param}'" if param else ""
    if all(c[2].endswith("_type") for c in best):
        expected = dict.fromkeys(_expected_type(c[2], c[3]) for c in best)
        return f"Invalid type{where}: expected {' or '.join(expected)}.", param, code
    reasons = dict.fromkeys(c[3] for c in best)
    return f"Invalid value{where}: {'; '.join(reasons)}.", param, code


def _expected_type(kind: str, msg: str) -> str:
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "an object"
    return msg.removeprefix("Input should be ")  # "a valid integer"


def load_json(body: bytes | bytearray | str) -> Any:
    """A request body as JSON, or :class:`InvalidRequestError` (never another exception): bad
    syntax or encoding, an integer too long to convert (Python refuses more than 4300 digits,
    which would otherwise cost quadratic time), or nesting deeper than the parser's stack."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"The request body is not valid JSON ({exc}).", code="invalid_json") from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidRequestError("The request body holds a number with too many digits; numbers must fit "
                                  "the ranges the fields document.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply to be parsed.", code="invalid_json") from None


def parse_chat_request(body: bytes | str | dict, *, max_crops_limit: int | None = None) -> ChatCompletionRequest:
    """Parse a request body, raising :class:`InvalidRequestError` with message and JSON path."""
    if isinstance(body, (bytes, bytearray, str)):
        body = load_json(body)
    try:
        return ChatCompletionRequest.model_validate(body, context={"max_crops_limit": max_crops_limit})
    except ValidationError as exc:
        message, param, code = _describe(exc, body)
        raise InvalidRequestError(message, param=param, code=code) from exc
