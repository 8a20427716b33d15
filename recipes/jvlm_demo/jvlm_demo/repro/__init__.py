"""Small-scale reproduction of three claims of the Jina-VLM paper on the demo model.

    python -m jvlm_demo.repro {connector,mixing,tiling,all} --out runs/repro [--scale F] [--threads N]

connector   2x2 attention pooling vs 2x2 mean pooling vs no pooling: visual tokens per
            image, prefill time, training speed and held-out accuracy (jvlm_demo.repro.connector)
mixing      text-task accuracy per language before and after stage 1 with 0% vs 15%
            text-only rows, plus image accuracy (jvlm_demo.repro.mixing)
tiling      accuracy against visual tokens for max_crops 1..9 on 672 px documents,
            for an already trained model (jvlm_demo.repro.tiling)

Each experiment writes OUT/<name>/results.json, table.md and plot.png and prints the
table; its data, models and scores stay under OUT/<name>, and a rerun skips every step
whose output exists (an interrupted training run continues from its last checkpoint).
The plan and the filled-in tables are in docs/reproduction.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

EXPERIMENTS = ("connector", "mixing", "tiling")
EPILOG = """\
sizes at --scale 1.0 (batch 16, lr 1e-3, cosine, bf16):
  connector  3 x 400 steps on 7 image families, 210 held-out questions per variant
  mixing     1500 text-only steps, then 2 x 400 stage-1 steps; 360 text + 210 image
             questions per model
  tiling     180 questions at 672 px for each --max-crops value

On one busy CPU core (--threads 1) training ran at about 13 samples/s with 2x2 pooling,
5 samples/s without pooling and 50 samples/s on text only, so --scale 1.0 takes about
40 min (connector) + 20 min (mixing) + 2 min (tiling).

examples:
  python -m jvlm_demo.repro all --out runs/repro --threads 2
  python -m jvlm_demo.repro tiling --out runs/repro --model runs/demo/stage2/final
  python -m jvlm_demo.repro connector --out /tmp/smoke --scale 0.01 --batch-size 2
"""


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m jvlm_demo.repro", description=doc[0] + "\n\n" + doc[2] + "\n\n" + doc[3],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG)
    parser.add_argument("experiment", choices=(*EXPERIMENTS, "all"), help="which ablation to run (all: one after another)")
    parser.add_argument("--out", required=True, type=Path, help="folder for data, models, scores and reports")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every step count and data size (default 1.0; 0.01 for a smoke run)")
    parser.add_argument("--threads", type=int, default=_default_threads(),
                        help="torch CPU threads for training, scoring and the prefill timing "
                             "(default: the CPUs this process may use)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="global training batch (default 16, the demo recipe; smaller only for smoke runs)")
    parser.add_argument("--variants", default="attention_meanq,mean,none",
                        help="connector: comma-separated pooling types (default attention_meanq,mean,none)")
    parser.add_argument("--model", default=None,
                        help="tiling: the trained model folder to evaluate (default: the shipped jvlm-demo)")
    parser.add_argument("--max-crops", default="1,2,4,6,9",
                        help="tiling: comma-separated tile budgets to evaluate (default 1,2,4,6,9)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from jvlm.errors import run_reporting_errors
    from jvlm_demo.repro.common import ReproError, RunSettings

    def run() -> None:
        if args.scale <= 0 or args.threads < 1 or args.batch_size < 1:
            raise ReproError(f"--scale, --threads and --batch-size must be positive, got {args.scale}, "
                             f"{args.threads} and {args.batch_size}")
        if importlib.util.find_spec("matplotlib") is None:  # before hours of training, not after
            raise ReproError("the plots need matplotlib: .venv/bin/pip install -e '.[train]'")
        import torch

        torch.set_num_threads(args.threads)
        settings = RunSettings(scale=args.scale, threads=args.threads, batch_size=args.batch_size)
        out = args.out.resolve()
        for name in EXPERIMENTS if args.experiment == "all" else (args.experiment,):
            table = _run(name, out, settings, args)
            print(f"\n{name} ({out / name}):\n\n{table}", flush=True)

    return run_reporting_errors("python -m jvlm_demo.repro", run, error_code=2)


def _run(name: str, out: Path, settings, args: argparse.Namespace) -> str:
    from jvlm_demo.repro.common import ReproError

    if name == "connector":
        from jvlm_demo.repro import connector

        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(variants) - set(connector.VARIANTS))
        if unknown or not variants:
            raise ReproError(f"--variants: unknown pooling types {unknown or variants}; choose from {connector.VARIANTS}")
        return connector.run(out, settings, variants)
    if name == "mixing":
        from jvlm_demo.repro import mixing

        return mixing.run(out, settings)
    from jvlm_demo.repro import tiling

    try:
        budgets = [int(k) for k in args.max_crops.split(",") if k.strip()]
    except ValueError:
        raise ReproError(f"--max-crops must be comma-separated integers, got {args.max_crops!r}") from None
    if not budgets or min(budgets) < 1:
        raise ReproError(f"--max-crops needs values of at least 1, got {args.max_crops!r}")
    return tiling.run(out, settings, args.model, budgets)
