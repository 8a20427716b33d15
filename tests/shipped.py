"""Paths to what the repository ships for users to try: the jvlm-demo model and the
``examples/`` images with their held-out questions and answers (``examples/answers.json``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEMO_DIR = ROOT / "src" / "jvlm" / "assets" / "jvlm-demo"


def examples() -> list[dict]:
    """Every example, in file order (the first is the README's main one)."""
    return json.loads((EXAMPLES / "answers.json").read_text(encoding="utf-8"))


def example(task: str) -> dict:
    """The example of one task family (e.g. ``bar_chart``); its ``image`` is a file name in EXAMPLES."""
    return next(e for e in examples() if e["task"] == task)
