"""The jvlm-demo recipe end to end from its own entry points, at a micro scale.

The recipe lives outside the library (``recipes/jvlm_demo``) and reaches it only through public
commands, so this runs each step as a user does, in its own process: write a stage's data,
write the random starting folder, train stage 1 for two steps with the shipped stage config,
then score the result both with the recipe's evaluation and with ``jvlm eval``, which only
knows the ``synthetic`` task through the recipe's ``jvlm.benchmarks`` entry point. The scores
mean nothing at this size; every file each step promises must exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_recipe_runs_from_data_to_a_scored_model(tmp_path):
    data, init, run, scores = tmp_path / "data", tmp_path / "init", tmp_path / "stage1", tmp_path / "eval"
    _run("-m", "jvlm_demo", "data", "--out", str(data), "--only", "stage1", "--scale", "0.001")
    rows = (data / "stage1" / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 60  # the smallest a scaled set gets

    _run("-m", "jvlm_demo", "init", "--out", str(init))
    assert (init / "model.safetensors").is_file() and (init / "tokenizer.json").is_file()

    cfg = yaml.safe_load((ROOT / "examples" / "train" / "demo_stage1.yaml").read_text(encoding="utf-8"))
    cfg["output_dir"] = str(run)
    cfg["model"]["checkpoint"] = str(init)
    cfg["data"]["sources"] = [{"name": "reading", "path": str(data / "stage1" / "data.jsonl")}]
    cfg["optim"].update(steps=2, global_batch_size=2, micro_batch_size=2)
    cfg["optim"]["groups"] = {k: {**v, "warmup_steps": 1} for k, v in cfg["optim"]["groups"].items()}
    cfg["threads"] = 1
    config = tmp_path / "stage1.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    _run("-m", "jvlm", "train", str(config), "--no-progress")
    final = run / "final"
    assert (final / "model.safetensors").is_file()

    _run("-m", "jvlm_demo.eval_task", "--model", str(final), "--data", str(data / "stage1"),
         "--out", str(scores), "--limit", "4", "--batch-size", "4")
    table = json.loads((scores / "table.json").read_text(encoding="utf-8"))
    assert table["n"] == 4 and 0.0 <= table["overall"] <= 100.0
    assert "| family |" in (scores / "table.md").read_text(encoding="utf-8")

    out = tmp_path / "jvlm-eval" / "synthetic.json"
    _run("-m", "jvlm", "eval", "--task", "synthetic", "--data", str(data / "stage1" / "data.jsonl"),
         "--model", str(final), "--limit", "4", "--out", str(out), "--no-progress", "--no-cache")
    assert out.is_file()
    listed = _run("-m", "jvlm", "eval", "--list-tasks")
    assert "synthetic" in listed.split()
