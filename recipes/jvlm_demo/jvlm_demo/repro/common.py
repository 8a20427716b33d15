"""What the three ablations share: sizes, data, starting folders, training, scoring, reports.

Every step writes into the experiment's folder and is skipped when its output is already
there, so an interrupted run continues where it stopped (a training run from its last
checkpoint). Data and training folders record the settings they were made with
(``repro_spec.json``): a rerun with other settings into the same folder stops with a
``ReproError`` rather than mixing two scales in one table. Cached scores are simply
recomputed when their model or settings changed.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jvlm.config import JinaVLMConfig
from jvlm.errors import JVLMError
from jvlm.train.config import GROUPS
from jvlm_demo import synthetic
from jvlm_demo.stages import TRAIN_QUESTIONS  # noqa: F401  (questions per training conversation, as in the recipe)

log = logging.getLogger(__name__)

SPEC_FILE = "repro_spec.json"
TEXT_TASKS = tuple(t for t in synthetic.TASKS if t not in synthetic.IMAGE_TASKS)
MAX_LENGTH = 1024  # tokens per training row: no pooling costs 512 visual tokens per image
EVAL_BATCH_SIZE = 16


class ReproError(JVLMError, ValueError):
    """An experiment folder holds outputs made with other settings, or a required tool is missing."""

    code = "repro_error"


@dataclass(frozen=True)
class RunSettings:
    """How big and how parallel a run is. ``scale`` multiplies every step count and data size
    (with minimums that keep each code path alive); ``batch_size`` is the global batch."""

    scale: float = 1.0
    threads: int = 1
    batch_size: int = 16

    def steps(self, n: int) -> int:
        return max(2, round(n * self.scale))

    def count(self, n: int, minimum: int) -> int:
        return max(minimum, round(n * self.scale))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalised(spec: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(spec, default=str))


def claim_folder(folder: Path, spec: dict[str, Any]) -> None:
    """Record ``spec`` in ``folder``, or check that the folder was made with exactly it."""
    path = folder / SPEC_FILE
    spec = _normalised(spec)
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != spec:
            changed = sorted(k for k in set(found) | set(spec) if found.get(k) != spec.get(k))
            raise ReproError(f"{folder} was made with other settings (differing: {changed}); use another --out "
                             "or delete that folder to redo it")
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def write_once(folder: Path, spec: dict[str, Any], write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` and move ``tmp`` to ``folder`` with ``spec`` recorded, unless ``folder``
    already holds exactly that (an interrupted write leaves only ``tmp``, which is redone)."""
    if (folder / SPEC_FILE).is_file():
        claim_folder(folder, spec)
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    claim_folder(tmp, spec)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# ------------------------------------------------------------------ data and models
def write_split(folder: Path, *, n: int, seed: int, split: str, tasks: Sequence[str], image_size: int,
                questions: int = 1) -> Path:
    """``folder/data.jsonl`` (+ images) of ``jvlm_demo.synthetic``, written once; returns the JSONL path."""
    spec = {"n": n, "seed": seed, "split": split, "tasks": list(tasks), "image_size": image_size,
            "questions": questions, "format": synthetic.FORMAT_VERSION}

    def write(tmp: Path) -> None:
        log.info("writing %d %s samples of %s at %d px to %s", n, split, ",".join(tasks), image_size, folder)
        synthetic.write_jsonl(synthetic.generate(n, seed, split, tasks, image_size=image_size, questions=questions),
                              tmp)

    return write_once(folder, spec, write) / "data.jsonl"


def write_init(folder: Path, seed: int, configure: Callable[[JinaVLMConfig], None] | None = None,
               label: str = "jvlm-demo", like: Path | None = None) -> Path:
    """A random jvlm-demo starting folder, changed by ``configure`` (named ``label``), written once.

    With ``like`` (another starting folder), every tensor whose name and shape both models
    share is copied from it, so two variants start from the same weights wherever their
    architectures agree (one random stream would otherwise shift past the first difference).
    """
    from jvlm_demo.demo import write_initial_model

    def write(tmp: Path) -> None:
        if like is None:
            write_initial_model(tmp, seed, configure=configure)
            return
        from jvlm.loading import load, save_pretrained

        raw = tmp.with_name(tmp.name + ".raw")
        write_initial_model(raw, seed, configure=configure)
        model, processor = load(raw)
        own = model.state_dict()
        reference = load(like)[0].state_dict()
        shared = {k: v for k, v in reference.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
        save_pretrained(model, tmp, processor=processor)
        shutil.rmtree(raw)
        log.info("%s: %d of %d tensors copied from %s", folder, len(shared), len(own), like)

    spec = {"seed": seed, "config": label, "like": None if like is None else str(like)}
    return write_once(folder, spec, write)


# ------------------------------------------------------------------------- training
#: the demo recipe trains the connector (fan-in initialised, no norm bounding it) 0.3x slower
CONNECTOR_LR_RATIO = 0.3


def train_config(start: Path, out: Path, sources: dict[str, Path], settings: RunSettings, *, steps: int,
                 text_only_share: float | None, lr: float = 1e-3, warmup_steps: int = 50, seed: int = 0,
                 max_crops: int = 1) -> dict[str, Any]:
    """A stage-1 training config (as a dict) in the demo's recipe: every group at ``lr`` but the
    connector at ``CONNECTOR_LR_RATIO * lr`` (as examples/train/demo_stage*.yaml), cosine, bf16."""
    group = {"lr": lr, "warmup_steps": min(max(1, round(warmup_steps * settings.scale)), steps // 2)}
    groups = {name: dict(group, lr=lr * CONNECTOR_LR_RATIO if name == "connector" else lr) for name in GROUPS}
    return {
        "stage": 1, "seed": seed, "output_dir": str(out), "threads": settings.threads,
        "model": {"checkpoint": str(start)},
        "data": {"sources": [{"name": name, "path": str(path)} for name, path in sources.items()],
                 "text_only_share": text_only_share, "max_length": MAX_LENGTH, "max_crops": max_crops},
        "optim": {"steps": steps, "global_batch_size": settings.batch_size, "micro_batch_size": settings.batch_size,
                  "schedule": "cosine", "min_lr_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0,
                  "bf16": True, "groups": groups},
        "checkpoint": {"every": min(steps, 100), "keep_last": 1},
        "log": {"every": 5, "progress": False},
    }


def train_run(raw: dict[str, Any]) -> dict[str, Any]:
    """Train ``raw`` to its final folder (continuing from a checkpoint if interrupted) unless
    that folder exists; the run's ``summary.json`` plus ``final`` and ``samples_per_s``."""
    from jvlm.train import train
    from jvlm.train.config import config_from_dict

    out = Path(raw["output_dir"])
    claim_folder(out, {k: v for k, v in raw.items() if k != "threads"})  # threads do not change the numbers
    final, summary_path = out / "final", out / "summary.json"
    if (final / "config.json").is_file() and summary_path.is_file():
        log.info("%s is already trained; skipping", out)
    else:
        log.info("training %s: %d steps of %d samples", out, raw["optim"]["steps"], raw["optim"]["global_batch_size"])
        checkpoints = out / "checkpoints"
        resume = checkpoints.is_dir() and any(checkpoints.iterdir())  # continue an interrupted run
        train(config_from_dict(raw), resume=resume)
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["final"] = str(final)
    summary["samples_per_s"] = summary["samples"] / summary["elapsed_s"] if summary["elapsed_s"] else math.nan
    return summary


# -------------------------------------------------------------------------- scoring
@functools.lru_cache(maxsize=1)
def backend_for(folder: str):
    """The evaluation backend of a model folder (one at a time stays loaded)."""
    from jvlm.eval.runner import InProcessBackend

    return InProcessBackend.from_folder(folder, batch_size=EVAL_BATCH_SIZE)


def score(model: Path, data: Path, out: Path, max_crops: int | None = None) -> dict[str, Any]:
    """Held-out accuracy of ``model`` on a synthetic split (``breakdown`` of
    ``jvlm_demo.eval_task``), cached in ``out`` as JSON with a Markdown twin."""
    from jvlm.eval.prompts import PromptSettings
    from jvlm.eval.runner import evaluate, folder_key
    from jvlm_demo.eval_task import TASK, breakdown, load_synthetic, markdown, register

    register()

    spec = _normalised({"model": folder_key(model), "data": json.loads((data.parent / SPEC_FILE).read_text()),
                        "max_crops": max_crops})
    if out.is_file():
        cached = json.loads(out.read_text(encoding="utf-8"))
        if cached.get("spec") == spec:
            log.info("%s is already scored; skipping", out)
            return cached["table"]
        log.info("%s was scored for another model or setting; scoring again", out)
    samples = load_synthetic(data)
    result = evaluate(TASK, samples, backend_for(str(model)), settings=PromptSettings(max_crops=max_crops))
    table = breakdown(result, samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"spec": spec, "table": table}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(table), encoding="utf-8")
    log.info("%s: family average %.1f%% on %d questions", model, table["family_average"], table["n"])
    return table


def prefill_ms(model: Path, image: Path, question: str, max_crops: int = 1, repeats: int = 5) -> dict[str, float]:
    """Median time to the first token of one image question (vision encoder, connector and
    decoder prefill), in ms, without any cache, after one warm-up run."""
    from jvlm.inference.engine import Engine
    from jvlm.inference.prompt import build_request
    from jvlm.inference.request import SamplingParams

    backend = backend_for(str(model))
    engine = Engine(backend.engine.model, backend.processor)  # no feature or prefix cache
    first, vision = [], []
    for _ in range(repeats + 1):
        request = build_request(backend.processor, question, [image], max_crops=max_crops,
                                params=SamplingParams(max_new_tokens=1, temperature=0.0),
                                context_length=engine.context_length)
        result = engine.generate(request)
        first.append(result.time_to_first_token_s * 1e3)
        vision.append(result.stats.get("vision_s", 0.0) * 1e3)
    return {"prefill_ms": statistics.median(first[1:]), "vision_ms": statistics.median(vision[1:])}


def first_question(data: Path) -> tuple[Path, str]:
    """(image, question) of the first row of a synthetic split with images."""
    from jvlm_demo.eval_task import load_synthetic

    sample = next(s for s in load_synthetic(data) if s.images)
    return Path(sample.images[0]), sample.question


# -------------------------------------------------------------------------- reports
def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, math.nan)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figure(columns: int = 1, width: float = 5.0, height: float = 3.6):
    """A matplotlib Figure drawn with Agg (no pyplot state) and its axes."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ReproError("the plots need matplotlib: .venv/bin/pip install -e '.[train]'") from err
    fig = Figure(figsize=(width * columns, height))
    return fig, fig.subplots(1, columns, squeeze=False)[0]


def accuracy_axis(ax, values: Sequence[float], label: str = "held-out accuracy (%)") -> None:
    """A percent axis from 0 with headroom above the best score (small models score low)."""
    finite = [v for v in values if not math.isnan(v)]
    ax.set_ylim(0, min(100.0, max(10.0, 1.2 * max(finite, default=0.0))))
    ax.set_ylabel(label)


def write_report(folder: Path, name: str, columns: Sequence[str], rows: list[dict[str, Any]],
                 settings: RunSettings, fig, details: dict[str, Any] | None = None) -> str:
    """``results.json``, ``table.md`` and ``plot.png`` of one experiment; returns the table."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {"experiment": name, "settings": settings.to_dict(), "columns": list(columns), "rows": rows,
               "details": details or {}}
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown_table(columns, rows)
    (folder / "table.md").write_text(table, encoding="utf-8")
    fig.tight_layout()
    fig.savefig(folder / "plot.png", dpi=120)
    log.info("wrote %s/results.json, table.md and plot.png", folder)
    return table
