"""Print the tiling, visual tokens, prefill FLOPs and KV-cache bytes of one image.

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


def run(args: argparse.Namespace) -> int:
    from jvlm.config import JinaVLMConfig
    from jvlm.efficiency import efficiency_report, format_report

    if args.width <= 0 or args.height <= 0:
        raise SystemExit("jvlm efficiency: error: --width and --height must be positive")
    cfg = JinaVLMConfig.load(args.model) if args.model else JinaVLMConfig.preset(args.preset)
    report = efficiency_report(args.width, args.height, cfg, max_crops=args.max_crops)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
