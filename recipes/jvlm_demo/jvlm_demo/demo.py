"""Everything the ``jvlm-demo`` retraining needs besides the trainer: data and a starting folder.

``scripts/train_demo.sh`` runs, in order:

    python -m jvlm_demo data --out runs/demo/data     # train/test JSONL at 224 px (stages.yaml)
    python -m jvlm_demo init --out runs/demo/init     # random jvlm-demo weights + tokenizer
    jvlm train examples/train/demo_stage1.yaml        # stage 1 from runs/demo/init
    jvlm train examples/train/demo_stage2.yaml        # stage 2 from stage 1's final folder
    python -m jvlm_demo ship --model runs/demo/stage2/final --out src/jvlm/assets/jvlm-demo

The trainer starts stage 1 from a model folder (``model.checkpoint``) rather than a preset,
because the demo has its own tokenizer, which a preset cannot name.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jvlm_demo import synthetic
from jvlm_demo.stages import DATASETS, DEMO_IMAGE_SIZE, DOCUMENT_TASKS  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from jvlm.config import JinaVLMConfig

log = logging.getLogger(__name__)


def write_data(out: str | Path, scale: float = 1.0, only: Sequence[str] | None = None) -> list[Path]:
    """Generate the demo's training and held-out data under ``out`` (deterministic).

    The sets are those of ``stages.yaml`` (``jvlm_demo.stages.DATASETS``); ``only`` names the
    sets to write (default: all).
    """
    known = [d.name for d in DATASETS]
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown data sets {unknown}; expected some of {known}")
    paths = []
    for ds in DATASETS:
        if only and ds.name not in only:
            continue
        n = ds.n if ds.split == "test" else max(60, int(ds.n * scale))
        log.info("writing %d %s samples to %s/%s", n, ds.split, out, ds.name)
        stream = synthetic.generate(n, ds.seed, ds.split, ds.tasks, image_size=DEMO_IMAGE_SIZE,
                                    questions=ds.questions, reworded_facts=ds.reworded_facts)
        if ds.form == "transcription":
            stream = map(synthetic.transcription, stream)
        elif ds.form == "key_values":
            stream = map(synthetic.key_values, stream)
        elif ds.form == "drill":
            stream = (synthetic.reading_drill(sample, **ds.reading_style()) for sample in stream)
        elif ds.form == "read_then_answer":
            stream = (synthetic.read_then_answer(sample, **ds.reading_style()) for sample in stream)
        paths.append(synthetic.write_jsonl(stream, Path(out) / ds.name))
    return paths


def write_initial_model(out: str | Path, seed: int = 0,
                        configure: Callable[[JinaVLMConfig], None] | None = None) -> Path:
    """A jvlm-demo folder with random weights and the demo tokenizer (stage 1's start).

    ``configure`` may change the jvlm-demo config in place before the model is built (an
    ablation's one difference, e.g. ``connector.pooling_type``); the result is validated.
    """
    import torch

    from jvlm.config import JinaVLMConfig
    from jvlm_demo.demo_tokenizer import build_demo_tokenizer
    from jvlm.loading import save_pretrained
    from jvlm.model.vlm import (
        JinaVLMForConditionalGeneration,
        init_connector_fan_in,
        init_random,
    )
    from jvlm.processing.processor import JinaVLMProcessor
    from jvlm.processing.text import special_token_ids

    tok = build_demo_tokenizer()
    ids = special_token_ids(tok)
    cfg = JinaVLMConfig.preset("jvlm-demo")
    if configure is not None:
        configure(cfg)
        cfg.validate()
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = ids.bos, ids.eos[0], ids.pad
    cfg.image_token_index = ids.image
    torch.manual_seed(seed)
    model = init_random(JinaVLMForConditionalGeneration(cfg), seed).float().eval()
    init_connector_fan_in(model, seed)  # a flat 0.02 connector leaves the model blind
    processor = JinaVLMProcessor(tok, cfg)
    model.use_token_ids(processor.token_ids)
    save_pretrained(model, out, processor=processor)
    n = sum(p.numel() for p in model.parameters())
    log.info("wrote the initial jvlm-demo model (%.2fM parameters) to %s", n / 1e6, out)
    return Path(out)


#: image embeddings' root mean square that ``rescale`` sets (text embeddings sit near 0.03)
IMAGE_EMBED_RMS = 1.0


def rescale_image_embeddings(model_dir: str | Path, out: str | Path, target_rms: float = IMAGE_EMBED_RMS,
                             n_images: int = 70) -> tuple[float, float]:
    """Copy a model folder with the connector's output scaled to ``target_rms``; returns (before, after).

    Trained from scratch, the connector's output grows without bound (root mean square 0.3
    at the start, about 60 after stage 1 and 640 after stage 2, while text embeddings stay
    near 0.03). The decoder's first RMSNorm hides the scale from layer 1, but in the
    residual stream every layer's update is then negligible beside an image token, so the
    decoder can no longer mix information between image positions. Scaling the projector's
    last matrix changes only that balance. The RMS is measured on ``n_images`` fixed
    training images (seed 0, every image family).
    """
    import torch

    from jvlm.loading import load, save_pretrained

    model, processor = load(model_dir)
    model = model.float().eval()
    crops, masks = [], []
    for sample in synthetic.generate(n_images, 0, "train", synthetic.IMAGE_TASKS, image_size=DEMO_IMAGE_SIZE):
        processed = processor.process_image(sample.images[0])
        crops.append(torch.from_numpy(processed.crops))
        masks.append(torch.from_numpy(processed.masks))
    images, image_masks = torch.stack(crops), torch.stack(masks)
    with torch.no_grad():
        before = model.model.image_features(images, image_masks).pow(2).mean().sqrt().item()
        model.model.vision_model.vl_connector.projector.down.weight.mul_(target_rms / before)
        after = model.model.image_features(images, image_masks).pow(2).mean().sqrt().item()
    save_pretrained(model, out, processor=processor)
    log.info("image embedding RMS %.3g -> %.3g; wrote %s", before, after, out)
    return before, after


def graft_vision(decoder_dir: str | Path, vision_dir: str | Path, out: str | Path) -> Path:
    """A folder with the decoder, embeddings and tokenizer of ``decoder_dir`` and the whole
    vision side (ViT and connector) of ``vision_dir``.

    For swapping a newly trained vision encoder into a trained model: ``vision_dir`` is
    typically ``python -m jvlm_demo vision``'s output, whose connector is still the
    fan-in initialised one, so the result needs connector training (stage 1) next.
    Both folders must share the vision config.
    """
    from jvlm.errors import CheckpointError
    from jvlm.loading import load, save_pretrained

    model, processor = load(decoder_dir)
    donor, _ = load(vision_dir)
    if donor.config.vision != model.config.vision or donor.config.connector != model.config.connector:
        raise CheckpointError(f"{vision_dir} and {decoder_dir} have different vision configs; cannot graft")
    target = model.model.vision_model
    target.load_state_dict(donor.model.vision_model.state_dict())
    save_pretrained(model.float(), out, processor=processor)
    log.info("grafted the vision side of %s onto %s; wrote %s", vision_dir, decoder_dir, out)
    return Path(out)


#: the family whose example the README asks about (shapes/en: "What colour is the triangle?")
README_FAMILY = "shapes"


def write_examples(out: str | Path) -> Path:
    """The images of ``examples/`` and their ``answers.json``, chosen by a fixed rule.

    Rule (independent of any model): for each image family in ``synthetic.IMAGE_TASKS``
    order, the first held-out test sample (split ``test``, seed 0, 224 px) in the language
    that rotates through ``LANGUAGES`` (receipt/en, form/zh, bar_chart/ar, ...). The entry of
    ``README_FAMILY`` comes first: it is the README's main example (chosen before the
    shipped model was trained). Returns the path of ``answers.json``.
    """
    import json

    from jvlm_demo.synth_lexicon import LANGUAGES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, task in enumerate(synthetic.IMAGE_TASKS):
        lang = LANGUAGES[i % len(LANGUAGES)]
        sample = next(synthetic.generate(1, 0, "test", [task], [lang], image_size=DEMO_IMAGE_SIZE))
        name = f"{task}_{lang}.png"
        sample.images[0].save(out / name, format="PNG")
        entries.append({"image": name, "question": sample.question, "answer": sample.answer,
                        "task": task, "language": lang, "id": sample.id})
    entries.sort(key=lambda e: e["task"] != README_FAMILY)  # stable: the rest keep family order
    path = out / "answers.json"
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


SHIPPED_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "preprocessor_config.json", "generation_config.json",
)
SCORES_START, SCORES_END = "<!-- scores:start -->", "<!-- scores:end -->"


def ship(model: str | Path, out: str | Path, eval_dir: str | Path | None = None) -> Path:
    """Copy a trained folder's files into ``out`` (the packaged model) and refresh the card's scores.

    Only the inference files are copied (no optimiser state). If ``eval_dir`` holds the
    ``table.md`` of ``python -m jvlm_demo.eval_task``, it replaces the text between the
    score markers of ``out/MODEL_CARD.md``, so the card always shows the shipped weights' scores.
    """
    import shutil

    model, out = Path(model), Path(out)
    missing = [n for n in SHIPPED_FILES if not (model / n).is_file()]
    if missing:
        from jvlm.errors import ModelFolderError

        raise ModelFolderError(f"{model} lacks {missing}; pass the final folder of a demo training run")
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(model / name, out / name)
    card = out / "MODEL_CARD.md"
    table = Path(eval_dir) / "table.md" if eval_dir else None
    if table is not None and table.is_file() and card.is_file():
        text = card.read_text(encoding="utf-8")
        head, sep, rest = text.partition(SCORES_START)
        _, sep2, tail = rest.partition(SCORES_END)
        if sep and sep2:
            card.write_text(f"{head}{SCORES_START}\n{table.read_text(encoding='utf-8')}{SCORES_END}{tail}",
                            encoding="utf-8")
        else:
            log.warning("%s has no score markers; scores not updated", card)
    size = (out / "model.safetensors").stat().st_size / 2**20
    log.info("shipped %s to %s (%.1f MB of weights)", model, out, size)
    return out


def score_readout(gold: str, predicted: str) -> tuple[int, int, int]:
    """(lines, labels right, values right) of one key-value answer against its gold, line by line.

    A label is a line's part before the last ``": "``, a value the part after; line ``i`` of
    the prediction is compared with line ``i`` of the gold (a missing line is wrong in both).
    """
    got = predicted.split("\n")
    labels = values = 0
    want = gold.split("\n")
    for i, line in enumerate(want):
        label, _, value = line.rpartition(": ")
        p_label, _, p_value = got[i].strip().rpartition(": ") if i < len(got) else ("", "", "")
        labels += p_label == label
        values += p_value == value
    return len(want), labels, values


def readout(model: str | Path, n: int = 72, seed: int = 0) -> dict[str, dict[str, float]]:
    """Ask a model for the key-value form of held-out charts and tables; score labels and values apart.

    A diagnostic for the lookup families: a question about a chart is right only if the
    model both reads the label it is asked about and the value beside it. ``n`` test-split
    images (the three families, every language, each asked in its own language) are written
    out with ``synthetic.key_values``; returns, per family and overall, the share of lines
    whose label and whose value are exactly right.
    """
    from jvlm.eval.prompts import Prompt
    from jvlm.eval.runner import InProcessBackend

    samples = [synthetic.key_values(s) for s in
               synthetic.generate(n, seed, "test", synthetic.KEY_VALUE_TASKS, image_size=DEMO_IMAGE_SIZE)]
    backend = InProcessBackend.from_folder(model)
    prompts = [Prompt(s.question, (s.images[0],), max_new_tokens=128) for s in samples]
    answers = []
    for start in range(0, len(prompts), backend.batch_size):
        answers += backend.generate(prompts[start:start + backend.batch_size])
    totals: dict[str, list[int]] = {}
    for sample, answer in zip(samples, answers):
        counts = score_readout(sample.answer, answer.text)
        for key in (sample.task, "all"):
            totals[key] = [a + b for a, b in zip(totals.get(key, [0, 0, 0]), counts)]
    return {key: {"lines": t[0], "labels": 100 * t[1] / t[0], "values": 100 * t[2] / t[0]}
            for key, t in totals.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jvlm_demo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="generate the stage 1, stage 2 and held-out test data")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--scale", type=float, default=1.0, help="multiply the training set sizes (not the test set)")
    d.add_argument("--only", nargs="+", metavar="SET", choices=[ds.name for ds in DATASETS],
                   help="write only these sets (default: all)")
    i = sub.add_parser("init", help="write the random starting model folder")
    i.add_argument("--out", required=True, type=Path)
    i.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("examples", help="write the example images and answers.json (held-out, fixed rule)")
    e.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("rescale", help="copy a model folder with its image embeddings scaled to a set RMS")
    r.add_argument("--model", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--rms", type=float, default=IMAGE_EMBED_RMS, help=f"target RMS (default {IMAGE_EMBED_RMS})")
    v = sub.add_parser("vision", help="pretrain a folder's vision encoder on per-patch labels (characters, shapes)")
    v.add_argument("--model", required=True, type=Path)
    v.add_argument("--out", required=True, type=Path)
    v.add_argument("--steps", type=int, default=1500)
    v.add_argument("--batch", type=int, default=32)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--level", choices=("token", "patch"), default="token",
                   help="label the connector's output tokens (trains ViT and connector) or the ViT's patches")
    pr = sub.add_parser("probe", help="check that a folder's frozen vision side still reads (sign-text probe)")
    pr.add_argument("--model", required=True, type=Path)
    pr.add_argument("--images", type=int, default=2400, help="sign images to render (a quarter are held out)")
    g = sub.add_parser("graft", help="copy a trained model with the vision side of another folder")
    g.add_argument("--decoder", required=True, type=Path, help="folder whose decoder, embeddings and tokenizer are kept")
    g.add_argument("--vision", required=True, type=Path, help="folder whose ViT and connector are taken")
    g.add_argument("--out", required=True, type=Path)
    ro = sub.add_parser("readout", help="score a model's key-value read-out of held-out charts and tables "
                        "(labels and values apart)")
    ro.add_argument("--model", required=True, type=Path)
    ro.add_argument("--n", type=int, default=72, help="held-out images (default 72: 4 per family and language)")
    s = sub.add_parser("ship", help="copy a trained model into the package and refresh its card's scores")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--eval", type=Path, default=None, help="folder written by python -m jvlm_demo.eval_task")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jvlm.errors import run_reporting_errors

    def run() -> int:
        if args.cmd == "data":
            for p in write_data(args.out, args.scale, args.only):
                print(f"wrote {p}")
        elif args.cmd == "examples":
            print(f"wrote {write_examples(args.out)}")
        elif args.cmd == "rescale":
            before, after = rescale_image_embeddings(args.model, args.out, args.rms)
            print(f"image embedding RMS {before:.3g} -> {after:.3g}; wrote {args.out}")
        elif args.cmd == "vision":
            from jvlm_demo.demo_vision import pretrain_vision

            metrics = pretrain_vision(args.model, args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                                      level=args.level)
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
        elif args.cmd == "probe":
            from jvlm_demo.demo_vision import probe_sign_text

            m = probe_sign_text(args.model, n=args.images)
            print(f"{args.model}: sign text named correctly on {m['held_out_acc']:.1%} of held-out images "
                  f"({m['train_acc']:.1%} of those fitted; {m['classes']:.0f} classes, {m['images']:.0f} images)")
        elif args.cmd == "readout":
            print("| family | lines | labels right | values right |\n|---|---|---|---|")
            for key, m in sorted(readout(args.model, n=args.n).items(), key=lambda kv: kv[0] == "all"):
                print(f"| {key} | {m['lines']} | {m['labels']:.1f}% | {m['values']:.1f}% |")
        elif args.cmd == "graft":
            print(f"wrote {graft_vision(args.decoder, args.vision, args.out)}")
        elif args.cmd == "init":
            print(f"wrote {write_initial_model(args.out, args.seed)}")
        else:
            print(f"shipped {ship(args.model, args.out, args.eval)}")
        return 0

    return run_reporting_errors(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
