"""(a) Connector: 2x2 attention pooling vs 2x2 mean pooling vs no pooling (1x1).

The same recipe trains the demo architecture three times from the same random weights
(every tensor the variants share is identical at the start), changing only
``connector.pooling_type`` (and, for "none", the 1x1 window it needs),
on the same image-family data: 224 px, thumbnail + 1 tile, four questions per image.
Each trained model is then scored on one held-out test split and timed on one image
question. Layout under ``OUT/connector``: ``data/{train,test}``, and per variant
``<pooling_type>/{init,train,eval.json}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from jvlm.config import POOLING_TYPES, JinaVLMConfig
from jvlm_demo import synthetic
from jvlm_demo.stages import DEMO_IMAGE_SIZE
from jvlm_demo.repro.common import (
    TRAIN_QUESTIONS,
    RunSettings,
    accuracy_axis,
    backend_for,
    figure,
    first_question,
    prefill_ms,
    score,
    train_config,
    train_run,
    write_init,
    write_report,
    write_split,
)

log = logging.getLogger(__name__)

NAME = "connector"
VARIANTS = POOLING_TYPES  # ("attention_meanq", "mean", "none")
LABELS = {"attention_meanq": "attention 2x2", "mean": "mean 2x2", "none": "none (1x1)"}
STEPS = 400
TEST_QUESTIONS = 210  # 5 per image family and language
TRAIN_SEED, TEST_SEED, INIT_SEED = 31, 0, 0
MAX_CROPS = 1  # thumbnail + 1 tile
COLUMNS = ("connector", "visual tokens / image", "prefill (ms)", "train samples/s", "image-family accuracy")


def pooling(pooling_type: str) -> Callable[[JinaVLMConfig], None]:
    """A config change that selects ``pooling_type`` (with the 1x1 window "none" requires)."""

    def configure(cfg: JinaVLMConfig) -> None:
        cfg.connector.pooling_type = pooling_type
        if pooling_type == "none":
            for part in (cfg.connector, cfg.image):  # the processor must lay out one token per patch
                part.pooling_h = part.pooling_w = 1

    return configure


def run(out: Path, settings: RunSettings, variants: Sequence[str] = VARIANTS) -> str:
    """Train, score and time every variant; write the report and return its table."""
    root = out / NAME
    tasks = synthetic.IMAGE_TASKS
    block = len(tasks) * len(synthetic.LANGUAGES)
    steps = settings.steps(STEPS)
    train = write_split(root / "data" / "train", n=max(block, steps * settings.batch_size), seed=TRAIN_SEED,
                        split="train", tasks=tasks, image_size=DEMO_IMAGE_SIZE, questions=TRAIN_QUESTIONS)
    test = write_split(root / "data" / "test", n=settings.count(TEST_QUESTIONS, 2 * len(tasks)), seed=TEST_SEED,
                       split="test", tasks=tasks, image_size=DEMO_IMAGE_SIZE)
    image, question = first_question(test)
    rows, details = [], {}
    reference = None  # the first variant's start; the others copy every tensor they share with it
    for variant in variants:
        folder = root / variant
        init = write_init(folder / "init", INIT_SEED, pooling(variant), label=f"pooling_type={variant}", like=reference)
        reference = reference or init
        summary = train_run(train_config(init, folder / "train", {"images": train}, settings, steps=steps,
                                          text_only_share=None, max_crops=MAX_CROPS))
        model = Path(summary["final"])
        table = score(model, test, folder / "eval.json", max_crops=MAX_CROPS)
        tokens = backend_for(str(model)).processor.process_image(str(image), MAX_CROPS).layout.n_feature_tokens
        timing = prefill_ms(model, image, question, MAX_CROPS)
        rows.append({"connector": LABELS[variant], "pooling_type": variant, "visual tokens / image": tokens,
                     "prefill (ms)": timing["prefill_ms"], "train samples/s": summary["samples_per_s"],
                     "image-family accuracy": table["family_average"]})
        details[variant] = {"eval": table, "vision_ms": timing["vision_ms"], "train": summary}
        log.info("%s: %d visual tokens, %.1f ms prefill, %.1f%%", variant, tokens, timing["prefill_ms"],
                 table["family_average"])
    return write_report(root, NAME, COLUMNS, rows, settings, _plot(rows), {"steps": steps, "variants": details})


def _plot(rows: list[dict]):
    fig, (acc, cost) = figure(columns=2)
    labels = [f"{r['connector']}\n{r['visual tokens / image']} tokens" for r in rows]
    bars = acc.bar(labels, [r["image-family accuracy"] for r in rows])
    acc.bar_label(bars, fmt="%.1f", fontsize="small")
    accuracy_axis(acc, [r["image-family accuracy"] for r in rows], "held-out accuracy (%, family average)")
    acc.set_title("Image-family accuracy")
    bars = cost.bar(labels, [r["prefill (ms)"] for r in rows], color="tab:orange")
    cost.bar_label(bars, fmt="%.0f", fontsize="small")
    cost.set_ylabel("time to first token, one image question (ms)")
    cost.set_title("Prefill time")
    return fig
