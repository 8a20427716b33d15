"""The synthetic held-out split as an evaluation task: exact match per family and language.

``jvlm_demo.synthetic`` writes JSONL rows in the Hugging Face messages format with a
``task`` (family) and ``language`` field; this module reads them into eval ``Sample``s
(category = family) and offers the benchmark ``synthetic`` to ``jvlm eval`` through the
``jvlm.benchmarks`` entry point (see this package's pyproject.toml), so

    jvlm eval --task synthetic --data runs/demo/data/test/data.jsonl --model MODEL

scores it greedily like any other benchmark. Questions are asked verbatim (the synthetic
questions already say what they want) with a short answer budget, since every gold answer
is a few tokens. ``python -m jvlm_demo.eval_task`` additionally prints and writes the
per-family and per-language tables the model card reports.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from jvlm.errors import BenchmarkError
from jvlm.eval.samples import BenchmarkSpec, PathLike, Sample, read_jsonl

logger = logging.getLogger(__name__)

TASK = "synthetic"


def load_synthetic(path: PathLike) -> list[Sample]:
    """Rows of a ``jvlm_demo.synthetic`` JSONL file as eval samples (images relative to it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.jsonl"
    if not path.is_file():
        raise BenchmarkError(f"{path} does not exist; write it with `python -m jvlm_demo.synthetic --split test`")
    samples = []
    for where, row in read_jsonl(path):
        try:
            user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
            question = next(p["text"] for p in user if p.get("type") == "text")
            images = [path.parent / p["image"] for p in user if p.get("type") == "image"]
            answer = next(p["text"] for p in assistant if p.get("type") == "text")
            family, language, sample_id = row["task"], row["language"], row["id"]
        except (KeyError, IndexError, StopIteration, TypeError) as err:
            raise BenchmarkError(
                f"{where}: expected a jvlm_demo.synthetic row (messages with one user and one assistant "
                f"turn, plus task, language and id); {type(err).__name__}: {err}"
            ) from None
        for image in images:
            if not image.is_file():
                raise BenchmarkError(f"{where}: image {image} is missing")
        samples.append(Sample(id=sample_id, question=question, images=images, answers=[answer],
                              task=TASK, language=language, category=family))
    return samples


def benchmarks() -> dict[str, BenchmarkSpec]:
    """The ``jvlm.benchmarks`` entry point: ``synthetic``, graded by exact match. Questions are
    asked verbatim; gold answers are about 10 tokens at most, a reading block before one up
    to 110, hence a budget of 160 new tokens."""
    return {TASK: BenchmarkSpec(load_synthetic, "exact_match", "accuracy", prompt_format="verbatim",
                                max_new_tokens=160)}


def register() -> None:
    """Make ``synthetic`` known to the loaders (idempotent): what the entry point does when this
    package is installed, for a checkout that only has it on ``sys.path``."""
    from jvlm.eval.loaders import BENCHMARKS

    for name, spec in benchmarks().items():
        BENCHMARKS.setdefault(name, spec)


def breakdown(result, samples: Sequence[Sample]) -> dict:
    """Accuracy (percent) overall, per family, per language, and family x language."""
    language_of = {s.id: s.language for s in samples}
    cells: dict[tuple[str, str], list[float]] = {}
    for record in result.samples:
        if record["score"] is None:
            continue
        cells.setdefault((record["category"], language_of[record["id"]]), []).append(record["score"])

    def pct(values: list[float]) -> float:
        return round(100.0 * sum(values) / len(values), 1) if values else float("nan")

    families = sorted({f for f, _ in cells})
    languages = [lang for lang in ("en", "zh", "ar", "pt", "ru", "tr") if any(lang == l for _, l in cells)]
    per_family = {f: pct([v for (ff, _), vs in cells.items() if ff == f for v in vs]) for f in families}
    per_language = {l: pct([v for (_, ll), vs in cells.items() if ll == l for v in vs]) for l in languages}
    return {
        "overall": pct([v for vs in cells.values() for v in vs]),
        "family_average": round(sum(per_family.values()) / len(per_family), 1) if per_family else float("nan"),
        "per_family": per_family,
        "per_language": per_language,
        "cells": {f"{f}/{l}": pct(vs) for (f, l), vs in sorted(cells.items())},
        "n": sum(len(vs) for vs in cells.values()),
    }


def markdown(table: dict) -> str:
    """The per-family and per-language tables as Markdown (the model card embeds them)."""
    langs = list(table["per_language"])
    lines = ["| family | " + " | ".join(langs) + " | all |", "|---" * (len(langs) + 2) + "|"]
    for family, score in table["per_family"].items():
        row = [f"{table['cells'].get(f'{family}/{l}', float('nan')):.0f}" for l in langs]
        lines.append(f"| {family} | " + " | ".join(row) + f" | **{score:.1f}** |")
    lines.append("| **all** | " + " | ".join(f"**{table['per_language'][l]:.1f}**" for l in langs)
                 + f" | **{table['overall']:.1f}** |")
    lines.append("")
    lines.append(f"Average over families: **{table['family_average']:.1f}%** ({table['n']} questions).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jvlm_demo.eval_task",
                                     description="Score a model on a synthetic split, per family and language.")
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", required=True, help="data.jsonl of a synthetic split (or its folder)")
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, table.json, table.md")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jvlm.eval.report import write_results
    from jvlm.eval.runner import InProcessBackend, evaluate

    from jvlm.errors import run_reporting_errors

    def run() -> int:
        register()
        samples = load_synthetic(args.data)
        backend = InProcessBackend.from_folder(args.model, batch_size=args.batch_size)
        result = evaluate(TASK, samples, backend, limit=args.limit)
        table = breakdown(result, samples)
        args.out.mkdir(parents=True, exist_ok=True)
        write_results([result], args.out / "results.json")
        (args.out / "table.json").write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
        (args.out / "table.md").write_text(markdown(table), encoding="utf-8")
        print(markdown(table))
        return 0

    return run_reporting_errors(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
