"""What a run reports: one JSON line per step, a progress bar, and a loss / learning-rate plot.

``metrics.jsonl`` holds one object per logged step (loss, lr per group, gradient norm,
text-only share of the step / phase / run, throughput, skipped rows). On resume, lines for
steps after the checkpoint are dropped first, since those steps are about to be redone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


class Progress:
    """A rich progress bar with step, loss, tokens/s and ETA (silent when disabled)."""

    def __init__(self, total: int, start: int, enabled: bool | str):
        if enabled == "auto":
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", tps="-")
            self.bar.start()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class Throughput:
    """Samples and tokens per second over the last step."""

    def __init__(self):
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return max(dt, 1e-9)


def plot_metrics(metrics_path: Path, out_path: Path) -> Path | None:
    """Loss and per-group learning rate against the step, as a PNG. None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (.venv/bin/pip install -e '.[train]'); skipping the plot")
        return None
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_loss.plot(steps, [r["loss"] for r in rows], lw=1)
    ax_loss.set_ylabel("loss (assistant tokens)")
    ax_loss.grid(alpha=0.3)
    for group in rows[0].get("lr", {}):
        ax_lr.plot(steps, [r["lr"].get(group, float("nan")) for r in rows], label=group, lw=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.set_yscale("log")
    ax_lr.legend(fontsize="small")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
