"""(c) Tiling: how accuracy on high-resolution documents follows the tile budget.

An already trained model (the shipped jvlm-demo by default, trained on 224 px images with
one tile) reads receipts, forms and tables rendered at 672 px, once per ``max_crops``
value. Each value is one point of accuracy against the mean visual tokens per image
(thumbnail + tiles, as the processor lays them out). Layout under ``OUT/tiling``:
``data``, ``eval/max_crops_<k>.json``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from jvlm.config import JinaVLMConfig
from jvlm.processing.image import image_layout
from jvlm_demo.repro.common import (
    RunSettings,
    accuracy_axis,
    figure,
    score,
    write_report,
    write_split,
)

log = logging.getLogger(__name__)

NAME = "tiling"
TASKS = ("receipt", "form", "table")
IMAGE_SIZE = 672
TEST_QUESTIONS = 180  # 10 per family and language
TEST_SEED = 1
MAX_CROPS = (1, 2, 4, 6, 9)
COLUMNS = ("max crops", "crops / image", "visual tokens / image", "accuracy")


def run(out: Path, settings: RunSettings, model: str | Path | None = None,
        max_crops: Sequence[int] = MAX_CROPS) -> str:
    """Score ``model`` (default: the shipped jvlm-demo) at every ``max_crops``; write the report."""
    from jvlm_demo.eval_task import load_synthetic
    from jvlm.resolve import resolve_model

    root = out / NAME
    folder = resolve_model(model).path
    data = write_split(root / "data", n=settings.count(TEST_QUESTIONS, len(TASKS)), seed=TEST_SEED, split="test",
                       tasks=TASKS, image_size=IMAGE_SIZE)
    image_cfg = JinaVLMConfig.load(folder).image
    sizes = []
    for sample in load_synthetic(data):
        for path in sample.images:
            with Image.open(path) as im:  # reads the header only
                sizes.append(im.size)  # (w, h)
    rows, details = [], {}
    for k in max_crops:
        layouts = [image_layout(h, w, image_cfg, k) for w, h in sizes]
        table = score(folder, data, root / "eval" / f"max_crops_{k}.json", max_crops=k)
        rows.append({"max crops": k, "crops / image": float(statistics.mean(lay.n_crops for lay in layouts)),
                     "visual tokens / image": float(statistics.mean(lay.n_feature_tokens for lay in layouts)),
                     "accuracy": table["family_average"]})
        details[str(k)] = table
        log.info("max_crops %d: %.0f visual tokens per image, %.1f%%", k, rows[-1]["visual tokens / image"],
                 table["family_average"])
    return write_report(root, NAME, COLUMNS, rows, settings, _plot(rows),
                        {"model": str(folder), "image_size": IMAGE_SIZE, "tasks": list(TASKS), "max_crops": details})


def _plot(rows: list[dict]):
    fig, (ax,) = figure()
    xs, ys = [r["visual tokens / image"] for r in rows], [r["accuracy"] for r in rows]
    ax.plot(xs, ys, marker="o")
    points: dict[tuple[float, float], list[str]] = {}  # budgets that give the same tiling share a label
    for r, x, y in zip(rows, xs, ys):
        points.setdefault((x, y), []).append(str(r["max crops"]))
    for (x, y), budgets in points.items():
        ax.annotate(f"max crops {', '.join(budgets)}", (x, y), textcoords="offset points", xytext=(4, 6),
                    fontsize="small")
    ax.margins(x=0.2)
    ax.set_xlabel("visual tokens per image (mean)")
    accuracy_axis(ax, ys, "accuracy (%, family average)")
    ax.set_title(f"{', '.join(TASKS)} at {IMAGE_SIZE} px")
    return fig
