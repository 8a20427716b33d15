"""Training throughput (samples/s and tokens/s) of the full training step on this machine.

Not a test. For each model size it writes a random checkpoint and the toy dataset, then
times ``Trainer.train_step`` (data encoding, forward, backward, clipping, AdamW) after a
few warm-up steps, with checkpoints switched off. Sizes:

* ``tiny`` — the test preset (0.3 M parameters, 10 ViT / 2 decoder layers);
* ``mid`` — ~50 M parameters: 12 ViT layers of width 384, 8 decoder layers of width 512,
  with the released image geometry (same crops, same token counts per image).

Tokens are all non-padding input tokens, image tokens included; "target tokens" are the
assistant tokens the loss covers.

    python bench/bench_train.py                         # tiny and mid, 64 px images (2 crops each)
    python bench/bench_train.py --sizes mid --image-px 600 --steps 4   # multi-tile images
    python bench/bench_train.py --out train_bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from jvlm.config import ConnectorConfig, JinaVLMConfig, TextConfig, VisionConfig
from jvlm.random_model import write_random_checkpoint
from jvlm.train.config import config_from_dict
from jvlm.train.loop import Trainer
from jvlm.train.toy import write_toy_dataset


def mid_config() -> JinaVLMConfig:
    """~50 M parameters; vocabulary of the tiny tokenizer so no external files are needed."""
    cfg = JinaVLMConfig.preset("tiny")
    cfg.vision = VisionConfig(n_layers=12, hidden_size=384, n_heads=6, head_dim=64, mlp_size=1536)
    cfg.connector = ConnectorConfig(n_heads=6, head_dim=64, projector_size=1536)
    cfg.text = TextConfig(n_layers=8, hidden_size=512, n_heads=8, n_kv_heads=4, head_dim=64, mlp_size=1536,
                          vocab_size=1024, additional_vocab_size=128, max_sequence_length=8192,
                          tie_word_embeddings=False)
    return cfg.validate()


SIZES = {"tiny": lambda: JinaVLMConfig.preset("tiny"), "mid": mid_config}


def bench_size(name: str, work: Path, steps: int, warmup: int, batch: int, micro: int, image_px: int,
               threads: int | None, bf16: bool) -> dict:
    model_dir = write_random_checkpoint(work / f"model-{name}", "tiny", config=SIZES[name]())
    data = work / f"data-{image_px}"
    if not (data / "captions.jsonl").is_file():
        write_toy_dataset(data, n_image=32, n_text=16, image_size=(image_px, image_px))
    cfg = config_from_dict({
        "model": {"checkpoint": str(model_dir)},
        "data": {"sources": [{"name": "captions", "path": str(data / "captions.jsonl")},
                             {"name": "text", "path": str(data / "text.jsonl")}], "text_only_share": 0.15},
        "output_dir": str(work / f"run-{name}"), "threads": threads,
        "optim": {"steps": warmup + steps, "global_batch_size": batch, "micro_batch_size": micro, "bf16": bf16},
        "checkpoint": {"every": 10**9}, "log": {"progress": False, "plot": False},
    })
    trainer = Trainer(cfg)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    times, samples, tokens, targets = [], 0, 0, 0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        rec = trainer.train_step()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            samples += rec["samples"]
            tokens += rec["tokens"]
            targets += rec["target_tokens"]
    total = sum(times)
    return {"size": name, "params_m": n_params / 1e6, "steps": steps, "global_batch": batch, "image_px": image_px,
            "bf16": bf16, "s_per_step_median": statistics.median(times), "samples_per_s": samples / total,
            "tokens_per_s": tokens / total, "target_tokens_per_s": targets / total,
            "tokens_per_sample": tokens / samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="global batch (samples per step)")
    ap.add_argument("--micro", type=int, default=2, help="micro-batch")
    ap.add_argument("--image-px", type=int, default=64, help="side of the square toy images")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            results.append(bench_size(name, Path(tmp), args.steps, args.warmup, args.batch, args.micro,
                                      args.image_px, args.threads, args.bf16))
    env = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__,
           "threads": args.threads or torch.get_num_threads()}
    print(f"environment: {env}")
    print("| size | params | image px | global batch | s/step | samples/s | tokens/s | target tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']} | {r['params_m']:.1f} M | {r['image_px']} | {r['global_batch']} | "
              f"{r['s_per_step_median']:.2f} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{r['target_tokens_per_s']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
