"""Scores and reports: a JSON result per task, a Markdown and PNG summary across tasks.

``score_task`` turns predictions into a ``TaskResult`` with the benchmark's own aggregate
(mean accuracy, MMBench CircularEval, OCRBench points out of 1000) and per-category numbers.
Results are written as JSON, one file per run, and read back to build a summary, so tasks
evaluated on different days or machines can share one table.

The summary has up to three parts, each only when its results are present:

* per-benchmark scores for each model, with the VQA average of the eight English
  benchmarks once all eight are scored, beside the published numbers of jina-vlm;
* per-language tables for MMMB and Multilingual MMBench;
* the text-only benchmarks scored for the vision model and for its text backbone side by
  side, which is how forgetting shows up (or does not).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jvlm.errors import BenchmarkError
from jvlm.eval.loaders import BENCHMARKS, MULTILINGUAL_LANGUAGES, VQA_AVERAGE, PathLike, Sample
from jvlm.eval.scorers import SCORERS, circular_eval, ocrbench_breakdown

logger = logging.getLogger(__name__)

RESULT_FORMAT = "jvlm-eval-results"
RESULT_VERSION = 1
TEXT_ONLY_TASKS = ("mmlu", "gsm8k", "arc_challenge", "hellaswag")
MULTILINGUAL_FAMILIES = {"mmmb": "MMMB", "mmbench": "Multilingual MMBench"}
#: jina-vlm's published numbers (model card), shown beside a run's own
PUBLISHED = {"vqa_average": 72.3, "docvqa": 90.6, "ocrbench": 778.0, "realworldqa": 68.2,
             "mmmb": 78.8, "mmbench": 74.3}


@dataclass
class TaskResult:
    """One benchmark scored for one model.

    ``score`` is the number as reported for the benchmark (percent; OCRBench: points out of
    1000); ``percent`` is always 0-100 and is what averages use (OCRBench's points / 10 on
    the full set). ``score`` is None when no sample had a gold answer.
    """

    task: str
    model: str
    metric: str
    score: float | None
    percent: float | None
    n_samples: int
    n_scored: int
    n_errors: int = 0
    role: str = "model"
    language: str | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        known = {name for name in cls.__dataclass_fields__}
        missing = {"task", "model", "metric", "score", "percent", "n_samples", "n_scored"} - set(data)
        if missing:
            raise BenchmarkError(f"not a jvlm eval result: missing {sorted(missing)}")
        return cls(**{key: value for key, value in data.items() if key in known})


# ----------------------------------------------------------------------- scoring


def score_sample(scorer: str, sample: Sample, prediction: str) -> float | None:
    """One sample's score, or None for a sample without gold answers (a test split)."""
    if not sample.answers:
        return None
    function = SCORERS[scorer]
    try:
        if scorer == "choice_accuracy":
            if not sample.choices:
                raise BenchmarkError(f"{sample.task} sample {sample.id!r}: multiple-choice scoring needs its options")
            return float(function(prediction, sample.answers[0], sample.choices))
        if scorer in ("ocrbench_score", "charxiv_reasoning_score"):
            return float(function(prediction, sample.answers, sample.category))
        return float(function(prediction, sample.answers))
    except ValueError as err:  # a gold answer the scorer cannot read
        raise BenchmarkError(f"{sample.task} sample {sample.id!r}: cannot score ({err})") from err


def _percent(aggregate: str, rows: list[tuple[Sample, float]]) -> float:
    if aggregate == "circular":
        groups: dict[Any, list[float]] = {}
        for sample, score in rows:
            groups.setdefault(sample.meta.get("circular_group", sample.id), []).append(score)
        return 100.0 * circular_eval(groups)
    return 100.0 * sum(score for _, score in rows) / len(rows)


def score_task(task: str, samples: list[Sample], predictions: Mapping[str, str],
               errors: Mapping[str, str] | None = None, *, model: str, role: str = "model",
               settings: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None) -> TaskResult:
    """Score every sample and aggregate the way ``task`` is reported."""
    spec = BENCHMARKS[task]
    errors = errors or {}
    records, rows = [], []
    for sample in samples:
        if sample.id not in predictions:
            raise BenchmarkError(f"{task}: no prediction for sample {sample.id!r}")
        prediction = predictions[sample.id]
        score = score_sample(spec.scorer, sample, prediction)
        if score is not None:
            rows.append((sample, score))
        records.append({"id": sample.id, "prediction": prediction, "answers": sample.answers, "score": score,
                        "category": sample.category, "error": errors.get(sample.id)})
    result = TaskResult(
        task=task, model=model, metric=spec.metric, score=None, percent=None, n_samples=len(samples),
        n_scored=len(rows), n_errors=sum(1 for sample in samples if errors.get(sample.id)), role=role,
        language=next((sample.language for sample in samples if sample.language), None),
        settings=dict(settings or {}), run=dict(run or {}), samples=records,
    )
    if not rows:
        logger.warning("%s: no sample has a gold answer; predictions are saved but nothing is scored", task)
        return result
    result.percent = _percent(spec.aggregate, rows)
    result.score = result.percent
    categories: dict[str, list[tuple[Sample, float]]] = {}
    for sample, score in rows:
        if sample.category:
            categories.setdefault(sample.category, []).append((sample, score))
    result.breakdown = {name: _percent(spec.aggregate, group) for name, group in sorted(categories.items())}
    if spec.aggregate == "ocrbench_total":
        try:
            points = ocrbench_breakdown((sample.category, score) for sample, score in rows)
        except ValueError as err:
            raise BenchmarkError(f"{task}: {err}") from err
        result.score = float(points["Final Score"])
        result.details = {"points": points, "comparable": len(rows) == 1000}
    elif spec.aggregate == "circular":
        result.details = {"questions": len({sample.meta.get("circular_group", sample.id) for sample, _ in rows})}
    return result


# --------------------------------------------------------------------------- JSON


def write_results(results: Iterable[TaskResult], path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "results": [r.to_dict() for r in results]}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_results(paths: Iterable[PathLike]) -> list[TaskResult]:
    """Results from files written by ``write_results``; a later file's (task, model, role) wins."""
    merged: dict[tuple[str, str, str], TaskResult] = {}
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise BenchmarkError(f"cannot read results file {path}: {err}") from err
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise BenchmarkError(f"{path} is not a jvlm eval results file (expected format {RESULT_FORMAT!r})")
        for entry in data.get("results", []):
            result = TaskResult.from_dict(entry)
            merged[(result.task, result.model, result.role)] = result
    return list(merged.values())


# ----------------------------------------------------------------------- summary


def format_score(value: float | None, task: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if task == "ocrbench" else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _models(results: list[TaskResult], role: str) -> list[str]:
    return list(dict.fromkeys(r.model for r in results if r.role == role))


def _index(results: list[TaskResult]) -> dict[tuple[str, str, str], TaskResult]:
    return {(r.role, r.model, r.task): r for r in results}


def _main_tasks(models: list[str], index: dict) -> list[str]:
    """Scored tasks in registry order; the per-language tasks get their own tables."""
    per_language = {f"{family}_{lang}" for family in MULTILINGUAL_FAMILIES for lang in MULTILINGUAL_LANGUAGES}
    return [t for t in BENCHMARKS if t not in per_language and any(("model", m, t) in index for m in models)]


def vqa_average(results: list[TaskResult], model: str) -> tuple[float | None, list[str]]:
    """The mean percent over the eight English VQA benchmarks, and which are missing."""
    index = _index(results)
    found = [index.get(("model", model, task)) for task in VQA_AVERAGE]
    missing = [task for task, r in zip(VQA_AVERAGE, found) if r is None or r.percent is None]
    if missing:
        return None, missing
    return sum(r.percent for r in found) / len(found), []


def language_table(results: list[TaskResult], family: str, model: str) -> dict[str, float]:
    """Percent per language for MMMB ('mmmb') or Multilingual MMBench ('mmbench')."""
    index = _index(results)
    table = {}
    for language in MULTILINGUAL_LANGUAGES:
        r = index.get(("model", model, f"{family}_{language}"))
        if r is not None and r.percent is not None:
            table[language] = r.percent
    return table


def _delta(own: TaskResult | None, base: TaskResult | None) -> str:
    """Vision model minus backbone, in points: negative means a text skill was lost."""
    if own is None or base is None or own.percent is None or base.percent is None:
        return "–"
    return f"{own.percent - base.percent:+.1f}"


def summary_markdown(results: list[TaskResult]) -> str:
    """The Markdown summary; sections without results are left out."""
    models, backbones = _models(results, "model"), _models(results, "text_backbone")
    index = _index(results)
    lines = ["# Evaluation summary", ""]
    tasks = _main_tasks(models, index)
    if tasks:
        rows = []
        for task in tasks:
            scored = [index.get(("model", m, task)) for m in models]
            n = max((r.n_samples for r in scored if r), default=0)
            metric = next(r.metric for r in scored if r)
            rows.append([task, metric, *(format_score(r.score if r else None, task) for r in scored), str(n),
                         format_score(PUBLISHED.get(task), task)])
        averages = [vqa_average(results, m) for m in models]
        if any(avg is not None for avg, _ in averages):
            rows.append(["**VQA average**", "mean of 8", *(format_score(avg) for avg, _ in averages), "",
                         format_score(PUBLISHED["vqa_average"])])
        lines += ["## Benchmarks", ""]
        lines += _table(["benchmark", "metric", *models, "questions", "jina-vlm (published)"], rows)
        for model, (avg, missing) in zip(models, averages):
            if avg is None and any(("model", model, t) in index for t in VQA_AVERAGE):
                lines += ["", f"VQA average for {model}: not computed, missing {', '.join(missing)}."]
        lines.append("")
    for family, title in MULTILINGUAL_FAMILIES.items():
        tables = {m: language_table(results, family, m) for m in models}
        if not any(tables.values()):
            continue
        rows = []
        for model, table in tables.items():
            average = sum(table.values()) / len(table) if table else None
            note = "" if len(table) == len(MULTILINGUAL_LANGUAGES) else f" ({len(table)} of 6)"
            cells = [format_score(table.get(lang)) for lang in MULTILINGUAL_LANGUAGES]
            rows.append([model, *cells, format_score(average) + note])
        rows.append(["jina-vlm (published)", *("–" for _ in MULTILINGUAL_LANGUAGES), format_score(PUBLISHED[family])])
        lines += [f"## {title} by language", ""] + _table(["model", *MULTILINGUAL_LANGUAGES, "average"], rows) + [""]
    text_tasks = [t for t in TEXT_ONLY_TASKS if any(k[2] == t for k in index)]
    if text_tasks and backbones:
        rows = []
        for task in text_tasks:
            own = [index.get(("model", m, task)) for m in models]
            base = [index.get(("text_backbone", b, task)) for b in backbones]
            row = [task, *(format_score(r.score if r else None) for r in own + base)]
            if len(models) == 1 and len(backbones) == 1:
                row.append(_delta(own[0], base[0]))
            rows.append(row)
        header = ["benchmark", *models, *(f"{b} (text backbone)" for b in backbones)]
        if len(models) == 1 and len(backbones) == 1:
            header.append("Δ")
        lines += ["## Text-only: vision model vs its text backbone", ""] + _table(header, rows) + [""]
    return "\n".join(lines)


def summary_png(results: list[TaskResult], path: PathLike) -> Path:
    """Bar charts of the same numbers as the Markdown: benchmarks, languages, text backbone."""
    try:
        # A bare Figure draws with Agg and touches no pyplot state (no window, no backend switch).
        from matplotlib.figure import Figure
    except ImportError as err:
        raise BenchmarkError("the PNG summary needs matplotlib: pip install matplotlib") from err
    models, backbones = _models(results, "model"), _models(results, "text_backbone")
    index = _index(results)
    panels = []
    tasks = _main_tasks(models, index)
    if tasks:
        panels.append(("Benchmarks (percent; OCRBench points / 10)", tasks,
                       {m: [getattr(index.get(("model", m, t)), "percent", None) for t in tasks] for m in models}))
    for family, title in MULTILINGUAL_FAMILIES.items():
        tables = {m: language_table(results, family, m) for m in models}
        if any(tables.values()):
            langs = list(MULTILINGUAL_LANGUAGES)
            series = {m: [t.get(lang) for lang in langs] for m, t in tables.items()}
            panels.append((f"{title} by language", langs, series))
    text_tasks = [t for t in TEXT_ONLY_TASKS if any(k[2] == t for k in index)]
    if text_tasks and backbones:
        series = {m: [getattr(index.get(("model", m, t)), "percent", None) for t in text_tasks] for m in models}
        series.update({f"{b} (text backbone)": [getattr(index.get(("text_backbone", b, t)), "percent", None)
                                                 for t in text_tasks] for b in backbones})
        panels.append(("Text-only: vision model vs text backbone", text_tasks, series))
    if not panels:
        raise BenchmarkError("no scored results to plot")
    figure = Figure(figsize=(9, 3.2 * len(panels)))
    axes = figure.subplots(len(panels), 1, squeeze=False)
    for ax, (title, labels, series) in zip(axes[:, 0], panels):
        width = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
            bars = ax.bar(xs, [math.nan if v is None else v for v in values], width, label=name)
            ax.bar_label(bars, labels=["" if v is None else f"{v:.1f}" for v in values], fontsize="x-small")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(labels) - 0.5)  # missing languages keep their place
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_summary(results: list[TaskResult], folder: PathLike, png: bool = True) -> list[Path]:
    """``summary.md`` (and ``summary.png``) in ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "summary.md"
    markdown.write_text(summary_markdown(results), encoding="utf-8")
    written = [markdown]
    if png:
        written.append(summary_png(results, folder / "summary.png"))
    return written
