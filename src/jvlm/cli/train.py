"""Train or fine-tune with the two-stage recipe from a YAML config.

Examples:
  jvlm train examples/train/stage1.yaml
  jvlm train examples/train/stage1.yaml --resume          # continue after a crash or preemption
  jvlm train stage2.yaml --resume-from runs/stage2/checkpoints/step-00001000
  torchrun --nproc_per_node 8 -m jvlm train stage2.yaml   # data parallel on 8 devices
  jvlm train cfg.yaml --set optim.steps=20 --set data.max_length=2048
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config (YAML); see docs/training.md")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in output_dir; starts fresh if there is none yet")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT",
                   help="continue from this checkpoint folder (or run folder)")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value with a dotted key, e.g. optim.steps=100 (VALUE is YAML)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics are still logged)")


def _overrides(args: argparse.Namespace) -> dict:
    import yaml

    from jvlm.errors import TrainConfigError

    out = {}
    for item in args.set:
        if "=" not in item:
            raise TrainConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.steps=100")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    if args.output_dir:
        out["output_dir"] = os.path.abspath(args.output_dir)
    if args.no_progress:
        out["log.progress"] = False
    return out


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this run from its latest checkpoint, as it must be typed."""
    argv = ["jvlm", "train", args.config, "--resume"]
    for item in args.set:
        argv += ["--set", item]
    if args.output_dir:
        argv += ["--output-dir", args.output_dir]
    if args.no_progress:
        argv.append("--no-progress")
    return shlex.join(argv)


def run(args: argparse.Namespace) -> int:
    from jvlm.train.loop import train

    rank = int(os.environ.get("RANK", "0"))
    root = logging.getLogger()
    if rank != 0:  # one process speaks for the run; the others only report errors
        root.setLevel(logging.ERROR)
    elif not args.verbose:
        root.setLevel(logging.INFO)
        logging.getLogger("jvlm").setLevel(logging.INFO)
        for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from jvlm.train.signals import TrainingInterrupted

    resume = args.resume_from or (True if args.resume else None)
    try:
        result = train(args.config, resume=resume, overrides=_overrides(args))
    except TrainingInterrupted as stopped:
        if rank == 0:
            print(f"jvlm train: {stopped}", file=sys.stderr)
            print(f"resume with: {resume_command(args)}", file=sys.stderr)
        return stopped.exit_code
    if rank == 0:
        print(f"trained {result.steps} steps, final loss {result.final_loss:.4f}")
        print(f"model: {result.final_model}")
        print(f"metrics: {result.metrics}" + (f", plot: {result.plot}" if result.plot else ""))
        skipped = sum(sum(v.values()) for v in result.bad_rows.values())
        if skipped:
            print(f"skipped rows: {skipped} " + str(result.bad_rows))
    return 0
