"""What every benchmark is read into, and how a benchmark is described: the leaf of ``jvlm.eval``.

``Sample`` is one question in a common shape, ``BenchmarkSpec`` says how to read and grade a
benchmark. Packages that add a benchmark (through the ``jvlm.benchmarks`` entry point, see
``jvlm.eval.loaders.load_plugins``) import only this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jvlm.errors import BenchmarkError

ImageSource = Path | bytes
PathLike = str | Path


@dataclass(kw_only=True)
class Sample:
    """One benchmark question in a common shape, whatever file it came from."""

    id: str
    question: str
    #: images as files on disk or encoded bytes (PNG/JPEG as stored in the benchmark); none for text-only
    images: list[ImageSource] = field(default_factory=list)
    #: gold answers; for multiple choice, the option letter ('B'); empty for unlabelled test splits
    answers: list[str]
    #: option texts in A, B, C ... order, or None for open questions
    choices: list[str] | None = None
    task: str
    language: str | None = None
    category: str | None = None
    #: benchmark-specific fields a scorer or report may need (split, hint, circular group ...)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read one benchmark and how to grade it."""

    loader: Callable[..., list[Sample]]
    #: name of the per-sample scorer in ``jvlm.eval.scorers.SCORERS``
    scorer: str
    #: the metric as reported ('anls', 'accuracy', 'ocrbench score' ...)
    metric: str
    #: 'mean' of per-sample scores, 'circular' (CircularEval groups) or 'ocrbench_total'
    aggregate: str = "mean"
    #: how its questions are asked (a format of ``jvlm.eval.prompts``; None: the built-in table's)
    prompt_format: str | None = None
    #: default generation budget (None: the prompt format's)
    max_new_tokens: int | None = None


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """(``"<path>, line N"``, record) for each non-empty line of a JSONL file; a bad line raises
    ``BenchmarkError`` naming it."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchmarkError(f"{where}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise BenchmarkError(f"{where}: expected a JSON object, found {type(record).__name__}")
            yield where, record
