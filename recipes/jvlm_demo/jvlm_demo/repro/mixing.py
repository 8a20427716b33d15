"""(b) Text-only data in stage 1: does a 15% share keep the decoder's text skills?

The demo model first learns the text-only families (arithmetic, translation, facts) alone;
its held-out text accuracy per language is "before". Stage 1 then trains vision on the
image families from that checkpoint twice, with ``data.text_only_share`` 0.0 and 0.15 (the
text families are a second source, so the sampler can take exactly that share from them),
and the text and image families are scored again. Layout under ``OUT/mixing``:
``data/{text_train,image_train,text_test,image_test}``, ``init``, ``text_pretrain``,
``stage1_text00``, ``stage1_text15``, each model folder's scores in ``eval/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jvlm_demo import synthetic
from jvlm_demo.stages import DEMO_IMAGE_SIZE
from jvlm_demo.repro.common import (
    TEXT_TASKS,
    TRAIN_QUESTIONS,
    RunSettings,
    accuracy_axis,
    figure,
    score,
    train_config,
    train_run,
    write_init,
    write_report,
    write_split,
)

log = logging.getLogger(__name__)

NAME = "mixing"
TEXT_STEPS, VISION_STEPS = 1500, 400
SHARES = (0.0, 0.15)
TEXT_TEST_QUESTIONS = 360  # 20 per text family and language
IMAGE_TEST_QUESTIONS = 210  # 5 per image family and language
TEXT_SEED, IMAGE_SEED, TEST_SEED, INIT_SEED = 41, 42, 0, 0
LANGUAGES = synthetic.LANGUAGES
COLUMNS = ("model", *LANGUAGES, "text average", "image accuracy")


def run(out: Path, settings: RunSettings) -> str:
    """Pretrain on text, run stage 1 at each share, score all three; write the report."""
    root, data = out / NAME, out / NAME / "data"
    text_steps, vision_steps = settings.steps(TEXT_STEPS), settings.steps(VISION_STEPS)
    image_tasks = synthetic.IMAGE_TASKS
    n_langs = len(LANGUAGES)
    text_train = write_split(data / "text_train", n=max(len(TEXT_TASKS) * n_langs, text_steps * settings.batch_size),
                             seed=TEXT_SEED, split="train", tasks=TEXT_TASKS, image_size=DEMO_IMAGE_SIZE,
                             questions=TRAIN_QUESTIONS)
    image_train = write_split(data / "image_train", n=max(len(image_tasks) * n_langs, vision_steps * settings.batch_size),
                              seed=IMAGE_SEED, split="train", tasks=image_tasks, image_size=DEMO_IMAGE_SIZE,
                              questions=TRAIN_QUESTIONS)
    # every (family, language) cell at least once, so each language column has a score
    text_test = write_split(data / "text_test", n=settings.count(TEXT_TEST_QUESTIONS, len(TEXT_TASKS) * n_langs),
                            seed=TEST_SEED, split="test", tasks=TEXT_TASKS, image_size=DEMO_IMAGE_SIZE)
    image_test = write_split(data / "image_test", n=settings.count(IMAGE_TEST_QUESTIONS, 2 * len(image_tasks)),
                             seed=TEST_SEED, split="test", tasks=image_tasks, image_size=DEMO_IMAGE_SIZE)

    init = write_init(root / "init", INIT_SEED)
    text_run = train_run(train_config(init, root / "text_pretrain", {"text": text_train}, settings,
                                      steps=text_steps, text_only_share=None))
    arms = [("before (text only)", text_run)]
    for share in SHARES:
        summary = train_run(train_config(Path(text_run["final"]), root / f"stage1_text{round(share * 100):02d}",
                                         {"images": image_train, "text": text_train}, settings,
                                         steps=vision_steps, text_only_share=share))
        arms.append((f"after stage 1, {share:.0%} text", summary))

    rows, details = [], {}
    for label, summary in arms:
        model = Path(summary["final"])
        name = model.parent.name
        text = score(model, text_test, root / "eval" / f"{name}_text.json")
        image = score(model, image_test, root / "eval" / f"{name}_image.json")
        langs = text["per_language"]
        rows.append({"model": label, **{lang: langs.get(lang, float("nan")) for lang in LANGUAGES},
                     "text average": sum(langs.values()) / len(langs), "image accuracy": image["family_average"]})
        details[name] = {"text": text, "image": image, "text_only_share_run": summary["text_only_share_run"],
                         "train": summary}
    return write_report(root, NAME, COLUMNS, rows, settings, _plot(rows),
                        {"text_steps": text_steps, "vision_steps": vision_steps, "arms": details})


def _plot(rows: list[dict]):
    fig, (ax,) = figure(width=8.0, height=4.0)
    groups = [*LANGUAGES, "text average", "image accuracy"]
    width = 0.8 / len(rows)
    for k, row in enumerate(rows):
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [row[g] for g in groups], width, label=row["model"])
    ax.set_xticks(range(len(groups)), [g.replace(" ", "\n") for g in groups])
    accuracy_axis(ax, [row[g] for row in rows for g in groups])
    ax.set_title("Text-task accuracy per language before and after stage 1")
    # below the axes: above them, it would cover the tallest bars
    ax.legend(fontsize="small", ncol=len(rows), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return fig
