"""Print the tiling, visual tokens, prefill FLOPs and KV-cache bytes of one image, and the
compute path this machine would run the model on.

Example: jvlm efficiency --width 2728 --height 2046
"""

from __future__ import annotations

import argparse
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, required=True, help="image width in pixels")
    p.add_argument("--height", type=int, required=True, help="image height in pixels")
    p.add_argument("--max-crops", type=int, default=None, help="tile budget (default: the preset's; 12 for jina-vlm)")
    p.add_argument("--preset", default="jina-vlm", help="model dimensions to cost (default: jina-vlm)")
    p.add_argument("--model", default=None, help="read dimensions from this model folder instead of a preset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def machine_path() -> dict:
    """What ``--dtype auto`` and ``--kernels auto`` pick here for bf16 weights (the release's),
    without loading a model or compiling anything."""
    import torch

    from jvlm.hardware import choose_compute_dtype, cpu_name, dtype_name, simd_summary
    from jvlm.inference import kernels

    compute, why = choose_compute_dtype(torch.bfloat16, "cpu")
    try:
        isa = kernels.default_isa()
    except ValueError as e:  # a JVLM_KERNELS value this CPU cannot run: say so, as loading would
        kernel = f"none ({e})"
    else:
        kernel = kernels.label(isa) if isa else "pytorch (no decode kernels for this CPU, or JVLM_KERNELS=off)"
    return {"cpu": f"{cpu_name()} ({simd_summary()})", "compute_dtype_for_bf16_weights": dtype_name(compute),
            "reason": why, "decode_kernels": kernel, "threads": torch.get_num_threads()}


def format_machine(m: dict) -> str:
    return "\n".join([
        f"This machine: {m['cpu']}, {m['threads']} threads",
        f"  compute dtype   {m['compute_dtype_for_bf16_weights']} for bf16 weights: {m['reason']}",
        f"  decode kernels  {m['decode_kernels']}",
        "  (--dtype and --kernels override both; jvlm infer --json and the server's /metrics report the path run)",
    ])


def run(args: argparse.Namespace) -> int:
    from jvlm.config import JinaVLMConfig
    from jvlm.efficiency import efficiency_report, format_report

    if args.width <= 0 or args.height <= 0:
        raise SystemExit("jvlm efficiency: error: --width and --height must be positive")
    cfg = JinaVLMConfig.load(args.model) if args.model else JinaVLMConfig.preset(args.preset)
    report = efficiency_report(args.width, args.height, cfg, max_crops=args.max_crops)
    report["machine"] = machine_path()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report) + "\n\n" + format_machine(report["machine"]))
    return 0
