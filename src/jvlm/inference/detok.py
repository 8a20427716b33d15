"""Token ids -> text one token at a time, and stop strings that may span several tokens.

Byte-level BPE splits a multi-byte character (é, 中, an emoji) across tokens, and a stop
string like "\\n\\n###" can arrive as two or three tokens. Streaming must therefore
(1) hold back text until its bytes form whole characters and (2) hold back any tail that
could still grow into a stop string, so nothing after a stop string ever reaches the user.

This runs for every row of every decode step, so the decode call itself matters: going
through ``transformers``' Python ``decode`` costs several times what the Rust decode under it
does for a two-token window. ``make_decoder`` finds that Rust ``tokenizers.Tokenizer`` when it
gives the same text, and falls back to ``decode`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

_REPLACEMENT = "\ufffd"

Decoder = Callable[[list[int]], str]


def make_decoder(tokenizer, skip_special_tokens: bool = True) -> Decoder:
    """``ids -> text``, as ``tokenizer.decode(ids, skip_special_tokens=...)`` would give it.

    ``tokenizer`` may be a ``tokenizers.Tokenizer``, a ``transformers`` fast tokenizer, an
    object holding one as ``.tokenizer`` (the processor), or anything with ``decode``.
    The fast tokenizer's own ``decode`` is its backend's decode plus an optional clean-up of
    spaces; the backend is used directly only when that clean-up is off, so the text is the
    same either way. (``decode_batch`` is not used: for a few short windows its thread-pool
    hand-off costs more than the decodes.)
    """
    backend = _backend(tokenizer)
    if backend is not None:
        decode = backend.decode
        return lambda ids: decode(ids, skip_special_tokens)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _backend(tokenizer):
    """The Rust tokenizer that decodes exactly like ``tokenizer.decode``, or None."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - transformers' fast tokenizers need it
        return None
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return None if getattr(tokenizer, "clean_up_tokenization_spaces", False) else backend
    inner = getattr(tokenizer, "tokenizer", None)  # a processor wrapping the text tokenizer
    if inner is not None and inner is not tokenizer and hasattr(inner, "backend_tokenizer"):
        return _backend(inner)
    return None


class IncrementalDetokenizer:
    """Decodes a growing id list, returning only the newly completed text each time.

    Decoding a short window (from ``prefix_offset``) instead of the whole answer keeps each
    step cheap; the window starts a few tokens back so merges at the seam decode as they
    would in the full text. The text of the part already emitted (``prefix_offset`` to
    ``read_offset``) is kept while those offsets stand, so a token that leaves a character
    incomplete costs one decode, not two.

    Pass ``decode`` (from ``make_decoder``) to share one decoder between many requests.
    """

    def __init__(self, tokenizer=None, skip_special_tokens: bool = True, *, decode: Decoder | None = None):
        if decode is None:
            if tokenizer is None:
                raise ValueError("IncrementalDetokenizer needs a tokenizer or a decode function")
            decode = make_decoder(tokenizer, skip_special_tokens)
        self._decode = decode
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self._prefix_text = ""  # decode(ids[prefix_offset:read_offset])

    def push(self, token_id: int) -> str:
        ids = self.ids
        ids.append(int(token_id))
        prefix_text = self._prefix_text
        new_text = self._decode(ids[self.prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            delta = new_text[len(prefix_text):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(ids)
            self._prefix_text = self._decode(ids[self.prefix_offset:self.read_offset])
            return delta
        return ""  # an incomplete character: wait for the next token

    def flush(self) -> str:
        """Whatever is still held back (a character that never completed decodes as U+FFFD)."""
        new_text = self._decode(self.ids[self.prefix_offset:])
        delta = new_text[len(self._prefix_text):]
        self.prefix_offset = self.read_offset = len(self.ids)
        self._prefix_text = ""
        return delta


class StopStringMatcher:
    """Cuts the text at the first stop string, never releasing text that could start one.

    ``feed(delta)`` returns ``(text_to_emit, stopped)``. Text is released only up to the
    longest tail that is a proper prefix of some stop string; that tail is released later or
    dropped when it turns out to be the start of a stop string.
    """

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self.stops:
            return delta, False
        if not delta:  # nothing new: the pending tail was already checked and held
            return "", False
        self.pending += delta
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return out, True
        hold = self._held_tail_len(self.pending)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return out, False

    def flush(self) -> str:
        """End of generation without a stop string: the held tail is ordinary text."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out

    def _held_tail_len(self, text: str) -> int:
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
