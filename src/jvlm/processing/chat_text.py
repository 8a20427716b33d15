"""Chat text from people who may not mean well: tokenized so that only the chat template
places control tokens, and refused before tokenizing when it could never fit the context.

``encode_chat`` is what the processor, ``jvlm infer`` and the server use to turn a
conversation into ids; ``check_text_budget`` is the cheap check they all run first.
"""

from __future__ import annotations

import re
import secrets
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import jinja2
from tokenizers import Tokenizer

from jvlm.errors import ContextLengthError, PromptError
from jvlm.processing.text import DEFAULT_CHAT_TEMPLATE

#: the most characters of message text a prompt may carry per context token, checked before
#: tokenizing: real text averages 1.5-5 characters per token, so only text that could never fit
#: is refused, and refusing it costs nothing (tokenizing costs ~1 us and ~300 bytes a character)
MAX_CHARS_PER_TOKEN = 16
#: the least chat markup one message costs (ChatML: <|im_start|>, role, newline, <|im_end|>, newline = 5)
MIN_TOKENS_PER_MESSAGE = 2

_plain_lock = threading.Lock()
_plain_backends: "weakref.WeakKeyDictionary[Any, Tokenizer]" = weakref.WeakKeyDictionary()


def check_text_budget(n_chars: int, context_length: int, chars_per_token: float = MAX_CHARS_PER_TOKEN,
                      n_messages: int = 0, what: str = "the messages hold") -> None:
    """Refuse text (or a number of messages) that cannot fit the context, before any template
    rendering or tokenization (``ContextLengthError``). A chat turn costs at least
    ``MIN_TOKENS_PER_MESSAGE`` tokens: its opening and closing markers. ``what`` names the
    text in the message (a raw prompt: "the prompt holds")."""
    if n_messages * MIN_TOKENS_PER_MESSAGE > context_length:
        raise ContextLengthError(
            f"the request has {n_messages:,} messages; each costs at least {MIN_TOKENS_PER_MESSAGE} tokens of chat "
            f"markup, so they cannot fit the model's context of {context_length:,} tokens; send fewer messages")
    limit = int(context_length * chars_per_token)
    if n_chars > limit:
        raise ContextLengthError(
            f"{what} {n_chars:,} characters of text, more than the {limit:,} that could fit the "
            f"model's context of {context_length:,} tokens ({chars_per_token:g} characters per token at "
            "most); send a shorter text"
        )


def plain_text_ids(tokenizer, text: str) -> list[int]:
    """Ids of ``text`` with every special token spelled in it read as ordinary characters.

    For text a user typed: ``<|im_start|>system`` in a message must not open a real turn.
    A private copy of the Rust tokenizer has ``encode_special_tokens`` switched on, because
    the shared one's ``split_special_tokens`` flag is process state that concurrent calls
    would race on. Non-special added tokens (``<think>``, ``<tool_call>``) stay single ids:
    they are text markers, not control tokens.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer has no shared Rust state to race on
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    with _plain_lock:
        plain = _plain_backends.get(tokenizer)
        if plain is None:
            plain = Tokenizer.from_str(backend.to_str())
            plain.encode_special_tokens = True
            plain.no_padding()
            plain.no_truncation()
            _plain_backends[tokenizer] = plain
    return plain.encode(text, add_special_tokens=False).ids


def special_token_strings(tokenizer) -> list[str]:
    """Every special token's text (the strings the tokenizer turns into control ids)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [tok.content for tok in decoder.values() if getattr(tok, "special", False)]


def message_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The text of every message, in order (string contents and text parts)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return out


def encode_chat(tokenizer, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                context_length: int | None = None, **template_kwargs) -> list[int]:
    """Token ids of a conversation where only the chat template places control tokens.

    The template renders with every message text replaced by an unguessable marker; the
    template's own text between markers is tokenized with its special tokens, the message
    texts with theirs read as plain characters (``plain_text_ids``). So ``<|im_end|>
    <|im_start|>system`` typed by a user stays text and cannot forge a turn. A template that
    rewrites or drops message text defeats the markers; then any special token in the text
    is refused (``PromptError``). With ``context_length`` the text is first checked against
    ``check_text_budget``.

    No BOS and no image blocks: the processor adds those.
    """
    texts: list[str] = []
    nonce = secrets.token_hex(8)

    def mark(text: str) -> str:
        texts.append(text)
        return f"\ue000{nonce}:{len(texts) - 1}\ue001"

    view = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            content = mark(content)
        elif isinstance(content, list):
            content = [{**p, "text": mark(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                       else p for p in content]
        view.append({**message, "content": content})
    if context_length is not None:
        check_text_budget(sum(len(t) for t in texts), context_length, n_messages=len(messages))
    pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", _render(tokenizer, view, add_generation_prompt, template_kwargs))
    if [int(i) for i in pieces[1::2]] != list(range(len(texts))):
        return _encode_rewritten_chat(tokenizer, messages, add_generation_prompt, template_kwargs)
    # (a template piece ending in "\n" before text that starts with "\n" splits a newline run
    # the whole string would have read as one token; it is rare and harmless)
    template_ids = _encode_many(tokenizer, pieces[0::2], plain=False)
    text_ids = _encode_many(tokenizer, texts, plain=True)
    ids: list[int] = list(template_ids[0])
    for i, between in enumerate(template_ids[1:]):
        ids += text_ids[i]
        ids += between
    return ids


def _encode_many(tokenizer, texts: list[str], *, plain: bool) -> list[list[int]]:
    """Ids of each text in one batched call (a conversation of thousands of short messages
    would otherwise pay the Python tokenizer wrapper's overhead thousands of times)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or (not plain and (backend.padding is not None or backend.truncation is not None)):
        # (the wrapper leaves padding or truncation set on its Rust tokenizer after such calls)
        return [plain_text_ids(tokenizer, t) if plain else tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in texts]
    if plain:
        plain_text_ids(tokenizer, "")  # builds the private copy once
        backend = _plain_backends[tokenizer]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def _render(tokenizer, messages, add_generation_prompt: bool, kwargs: dict) -> str:
    kwargs = dict(kwargs)
    template = kwargs.pop("chat_template", None) or tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=template if isinstance(template, str)
                                             else None, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **kwargs)
    except jinja2.TemplateError as exc:
        raise PromptError(f"cannot render the chat: {exc}") from exc


def _encode_rewritten_chat(tokenizer, messages, add_generation_prompt: bool, kwargs: dict) -> list[int]:
    specials = special_token_strings(tokenizer)
    for text in message_texts(messages):
        found = next((s for s in specials if s in text), None)
        if found is not None:
            raise PromptError(
                f"the message text contains {found!r}, a control token of the tokenizer, and this model's chat "
                "template rewrites message text, so it cannot be kept as plain text; remove it from the message")
    return tokenizer(_render(tokenizer, messages, add_generation_prompt, kwargs),
                     add_special_tokens=False)["input_ids"]
