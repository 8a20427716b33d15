"""Token ids -> text one token at a time, and stop strings that may span several tokens.

Byte-level BPE splits a multi-byte character (é, 中, an emoji) across tokens, and a stop
string like "\\n\\n###" can arrive as two or three tokens. Streaming must therefore
(1) hold back text until its bytes form whole characters and (2) hold back any tail that
could still grow into a stop string, so nothing after a stop string ever reaches the user.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Decodes a growing id list, returning only the newly completed text each time.

    Decoding a short window (from ``prefix_offset``) instead of the whole answer keeps each
    step cheap; the window starts a few tokens back so merges at the seam decode as they
    would in the full text.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            delta = new_text[len(prefix_text):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""  # an incomplete character: wait for the next token

    def flush(self) -> str:
        """Whatever is still held back (a character that never completed decodes as U+FFFD)."""
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text):]


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
