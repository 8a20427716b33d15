"""Every Python example in docs/transformers.md runs as typed (from the repository root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "transformers.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_doc_has_the_examples_it_promises():
    text = "\n".join(BLOCKS)
    for needle in ("AutoModelForCausalLM", "pipeline(\"image-text-to-text\"", "TorchAoConfig", "get_peft_model",
                   "merge_and_unload"):
        assert needle in text, needle


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # run in a copy of the repository's examples so written files land in tmp_path
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    res = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip()
