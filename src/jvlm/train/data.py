"""Training rows: JSONL conversations in the Hugging Face messages format -> model inputs.

A row is ``{"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"},
{"type": "text", "text": "..."}]}, {"role": "assistant", "content": "..."}]}``. Image paths
are relative to the JSONL file. Rows without images are text-only samples.

Images go through the same processor as inference (``JinaVLMProcessor``), and the prompt
is rendered with the model's chat template, so training and inference see identical
token streams. Only assistant turns are learned: the loss covers the assistant's text and
its closing ``<|im_end|>``, never the user's words, the template's role headers or image tokens.

A row that cannot be used (unparsable, a missing or undecodable image, too long, nothing to
learn) raises ``RowError`` with a reason; the trainer skips it, counts it per source and
reason, and reports the totals (``BadRows``). Bad rows are never silent and never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jvlm.errors import InvalidImageError, JVLMError, PromptError, TrainDataError
from jvlm.processing.processor import Encoded, JinaVLMProcessor, extract_images
from jvlm.processing.text import render_chat

log = logging.getLogger(__name__)

REASONS = ("malformed", "missing_image", "bad_image", "too_long", "no_target")
TEXT, IMAGE = 0, 1  # row categories: text-only rows and rows with at least one image


class RowError(Exception):
    """One unusable row. ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------ indexing
@dataclass
class SourceIndex:
    """Where every usable-looking row of one JSONL file starts and ends, split by category.

    Only byte offsets are kept in memory (rows are re-read when sampled), so a file with
    millions of rows costs a few tens of MB.
    """

    name: str
    path: Path
    starts: list[np.ndarray]  # per category: byte offset of each row
    ends: list[np.ndarray]
    lines: list[np.ndarray]  # per category: 1-based line number (for reports)

    def count(self, category: int) -> int:
        return len(self.starts[category])

    def read(self, category: int, i: int) -> dict[str, Any]:
        start, end = int(self.starts[category][i]), int(self.ends[category][i])
        fd = os.open(self.path, os.O_RDONLY)
        try:
            raw = os.pread(fd, end - start, start)  # thread-safe: no shared file position
        finally:
            os.close(fd)
        return json.loads(raw)

    def line(self, category: int, i: int) -> int:
        return int(self.lines[category][i])


def _row_category(row: Any) -> int:
    """TEXT or IMAGE; raises RowError("malformed") when ``row`` is not a conversation."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise RowError("malformed", "expected an object with a non-empty 'messages' list")
    for m in row["messages"]:
        if not isinstance(m, dict) or "role" not in m:
            raise RowError("malformed", "every message needs a 'role'")
    try:
        return IMAGE if extract_images(row["messages"]) else TEXT
    except (PromptError, AttributeError, TypeError) as e:
        raise RowError("malformed", f"bad content part: {e}") from None


def index_source(name: str, path: str | Path, bad: BadRows) -> SourceIndex:
    """Scan a JSONL file once: offsets of each row by category; malformed lines are counted."""
    path = Path(path)
    if not path.is_file():
        raise TrainDataError(f"data source {name!r}: {path} does not exist")
    starts: list[list[int]] = [[], []]
    ends: list[list[int]] = [[], []]
    lines: list[list[int]] = [[], []]
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                category = _row_category(json.loads(raw))
            except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError
                bad.add(name, lineno, "malformed", f"not valid JSON: {e}")
                continue
            except RowError as e:
                bad.add(name, lineno, e.reason, str(e))
                continue
            starts[category].append(start)
            ends[category].append(offset)
            lines[category].append(lineno)
    idx = SourceIndex(name, path, [np.asarray(s, dtype=np.int64) for s in starts],
                      [np.asarray(e, dtype=np.int64) for e in ends], [np.asarray(n, dtype=np.int32) for n in lines])
    log.info("data source %s: %d text-only rows, %d rows with images", name, idx.count(TEXT), idx.count(IMAGE))
    return idx


# ----------------------------------------------------------------- bad rows
@dataclass
class BadRows:
    """Counts of skipped rows per source and reason, plus a few examples of each."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    max_examples: int = 20

    def add(self, source: str, line: int, reason: str, message: str) -> None:
        per = self.counts.setdefault(source, {})
        per[reason] = per.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append({"source": source, "line": line, "reason": reason, "message": message[:300]})
        log.warning("skipping %s line %d (%s): %s", source, line, reason, message[:300])

    @property
    def total(self) -> int:
        return sum(sum(v.values()) for v in self.counts.values())

    @classmethod
    def merged(cls, *parts: BadRows) -> BadRows:
        out = cls()
        for part in parts:
            for source, per in part.counts.items():
                mine = out.counts.setdefault(source, {})
                for reason, n in per.items():
                    mine[reason] = mine.get(reason, 0) + n
            out.examples.extend(part.examples)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "examples": self.examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {s: dict(v) for s, v in state["counts"].items()}
        self.examples = list(state["examples"])

    def summary(self) -> str:
        if not self.total:
            return "no rows were skipped"
        parts = [f"{src}: " + ", ".join(f"{n} {r}" for r, n in sorted(v.items())) for src, v in sorted(self.counts.items())]
        return f"{self.total} rows skipped ({'; '.join(parts)})"


# ----------------------------------------------------------------- encoding
@dataclass
class Example:
    """One encoded conversation: the processor's output plus aligned labels."""

    encoded: Encoded
    labels: np.ndarray  # (L,) int64; label[t] is the token after input[t], -1 = no loss
    text_only: bool

    @property
    def n_targets(self) -> int:
        return int((self.labels >= 0).sum())

    @property
    def n_tokens(self) -> int:
        return len(self.encoded.input_ids)


class ExampleEncoder:
    """Turns one parsed row into an ``Example`` (or raises ``RowError``)."""

    def __init__(self, processor: JinaVLMProcessor, max_length: int, max_crops: int | None = None,
                 label_rows: int | None = None):
        self.processor = processor
        self.max_length = max_length
        self.max_crops = max_crops
        # Ids >= label_rows have no lm_head row (the 128 new tokens) and can never be targets.
        self.label_rows = label_rows or processor.config.text.base_rows

    def encode(self, row: dict[str, Any], base_dir: Path) -> Example:
        messages = row["messages"]
        processed = [self._image(src, base_dir) for src in extract_images(messages)]
        text, spans = self._render(messages)
        tok = self.processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = tok["input_ids"], tok["offset_mapping"]
        target = [e > s and any(a <= s and e <= b for a, b in spans) for s, e in offsets]
        try:
            enc = self.processor.encode(list(ids), processed=processed)
        except PromptError as e:
            raise RowError("malformed", str(e)) from None
        if len(enc.input_ids) > self.max_length:
            raise RowError("too_long", f"{len(enc.input_ids)} tokens ({enc.n_image_tokens} for images) > "
                                       f"data.max_length {self.max_length}")
        is_target = self._expand(ids, target, processed, len(enc.input_ids))
        input_ids = np.asarray(enc.input_ids, dtype=np.int64)
        labels = np.full(len(input_ids), -1, dtype=np.int64)
        nxt = input_ids[1:]
        keep = is_target[1:] & (nxt < self.label_rows)
        labels[:-1] = np.where(keep, nxt, -1)  # label[t] = input[t + 1] (spec §4.4 step 4)
        ex = Example(enc, labels, text_only=not processed)
        if ex.n_targets == 0:
            raise RowError("no_target", "the row has no assistant text to learn")
        return ex

    def _image(self, src: Any, base_dir: Path):
        if isinstance(src, str) and not src.startswith(("http://", "https://", "data:")):
            path = Path(src).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if not path.is_file():
                raise RowError("missing_image", f"image {src!r} not found (looked for {path})")
            src = str(path)
        try:
            return self.processor.process_image(src, self.max_crops)
        except InvalidImageError as e:
            raise RowError("bad_image", str(e)) from None

    def _render(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The whole conversation's text and the character spans of every assistant turn.

        A turn's span starts after the template's generation prompt and ends at the end of
        the turn minus trailing whitespace, so it includes the turn's closing token.
        """
        tok = self.processor.tokenizer
        try:
            full = render_chat(tok, messages, add_generation_prompt=False)
            spans = []
            for i, m in enumerate(messages):
                if m.get("role") != "assistant":
                    continue
                head = render_chat(tok, messages[:i], add_generation_prompt=True) if i else ""
                turn = render_chat(tok, messages[: i + 1], add_generation_prompt=False).rstrip()
                if not (full.startswith(turn) and turn.startswith(head)):
                    raise TrainDataError(
                        "the chat template does not render conversations prefix by prefix, so assistant turns "
                        "cannot be located; use a ChatML-style template"
                    )
                spans.append((len(head), len(turn)))
        except PromptError as e:
            raise RowError("malformed", str(e)) from None
        return full, spans

    def _expand(self, ids: list[int], target: list[bool], processed, n_out: int) -> np.ndarray:
        """Per-token target flags of the text, laid out like the processor's output
        (BOS first; each ``<|image|>`` replaced by its block, whose tokens are never targets)."""
        placeholder = self.processor.token_ids.image
        blocks = iter(len(self.processor.image_block(p)) for p in processed)
        out = [False]  # BOS
        for tid, t in zip(ids, target):
            if tid == placeholder and processed:
                out.extend([False] * next(blocks))
            else:
                out.append(t)
        if len(out) != n_out:  # the seam between this module and the processor
            raise RuntimeError(f"label layout has {len(out)} positions but the processor made {n_out} tokens")
        return np.asarray(out, dtype=bool)


def collate(processor: JinaVLMProcessor, examples: list[Example]) -> dict[str, torch.Tensor]:
    """Left-padded batch (the processor's own collation) with labels padded the same way."""
    batch = dict(processor.collate([e.encoded for e in examples], return_tensors="pt"))
    length = batch["input_ids"].shape[1]
    labels = torch.full((len(examples), length), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        labels[i, length - len(e.labels):] = torch.from_numpy(e.labels)
    batch["labels"] = labels
    return batch


def encode_ref(encoder: ExampleEncoder, source: SourceIndex, category: int, row: int) -> Example:
    """Read and encode one indexed row; every failure becomes a RowError."""
    try:
        data = source.read(category, row)
        return encoder.encode(data, source.path.parent)
    except (RowError, TrainDataError):
        raise
    except ValueError as e:  # the file changed under us, or unusual content
        raise RowError("malformed", str(e)) from None
    except JVLMError as e:
        raise RowError("malformed", str(e)) from None
