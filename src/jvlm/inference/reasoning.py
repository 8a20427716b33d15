"""Reasoning blocks: ``<think>...</think>`` written before an answer.

Qwen3-style models (and ``jvlm-demo``, which reads a chart or table out before answering a
question about it) may open their reply with a reasoning block. The CLI shows it apart from
the answer, so that stdout carries only the answer; ``split_reasoning`` does it for a whole
reply, ``ReasoningSplitter`` for a stream of text pieces whose tags may arrive cut in two.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)``; reasoning is None when the reply does not open with a block.

    A block that is never closed (the token budget ran out inside it) is all reasoning and
    no answer.
    """
    stripped = text.lstrip()
    if stripped and OPEN.startswith(stripped):  # the budget ran out inside the opening tag
        return "", ""
    if not stripped.startswith(OPEN):
        return None, text
    body = stripped[len(OPEN):]
    reasoning, closed, answer = body.partition(CLOSE)
    if not closed:  # nor is a cut-off closing tag reasoning
        reasoning = reasoning[:len(reasoning) - _partial_tag_length(reasoning, CLOSE)]
    return reasoning.strip("\n"), answer.strip() if closed else ""


class ReasoningSplitter:
    """Route streamed text to reasoning or answer as it arrives.

    ``feed(piece)`` returns ``(reasoning_text, answer_text)`` that can be shown now; text
    that might still turn into a tag is held back until the next piece (or ``finish``).
    """

    def __init__(self) -> None:
        self._held = ""
        self._state = "start"  # start -> (thinking -> answer_start -> answer) | answer
        self._began = False  # reasoning text seen (the newline after the opening tag is dropped)

    def feed(self, piece: str) -> tuple[str, str]:
        self._held += piece
        reasoning = answer = ""
        while True:
            if self._state == "start":
                lead = self._held.lstrip()
                if lead.startswith(OPEN):
                    self._held, self._state = lead[len(OPEN):].lstrip("\n"), "thinking"
                    continue
                if lead and not OPEN.startswith(lead):
                    self._state = "answer"
                    continue
                return reasoning, answer
            if self._state == "thinking":
                if not self._began:  # the newline after the opening tag is not reasoning either
                    self._held = self._held.lstrip("\n")
                    self._began = bool(self._held)
                end = self._held.find(CLOSE)
                if end >= 0:
                    reasoning += self._held[:end].rstrip("\n")
                    self._held, self._state = self._held[end + len(CLOSE):].lstrip(), "answer_start"
                    continue
                # hold back what may still become the closing tag, and trailing newlines
                # (the block's last newline is not part of the reasoning)
                ready = self._held[:len(self._held) - _partial_tag_length(self._held, CLOSE)].rstrip("\n")
                reasoning += ready
                self._held = self._held[len(ready):]
                return reasoning, answer
            if self._state == "answer_start":  # drop the blank line after the block
                self._held = self._held.lstrip()
                if not self._held:
                    return reasoning, answer
                self._state = "answer"
            answer += self._held
            self._held = ""
            return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """Whatever was held back, once the stream has ended."""
        held, self._held = self._held, ""
        if self._state == "thinking":  # ended inside the block, perhaps inside its closing tag
            return held[:len(held) - _partial_tag_length(held, CLOSE)].rstrip("\n"), ""
        if self._state == "start" and OPEN.startswith(held.lstrip()):  # ended inside the opening tag
            return "", ""
        return "", held if self._state in ("start", "answer") else held.strip()


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a start of ``tag`` (it may complete later)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
