"""End-to-end training on the tiny preset: the loss falls, outputs are complete, bad rows are
reported, checkpoints are atomic and pruned, and a SIGKILLed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jvlm.errors import TrainConfigError
from jvlm.train import train
from jvlm.train.metrics import read_metrics
from jvlm.train.toy import write_toy_dataset

FAST_LR = {g: {"lr": 3e-3, "warmup_steps": 0} for g in ("connector", "decoder", "new_embeddings")}
FAST_LR["vision"] = {"lr": 1e-3, "warmup_steps": 0}


def write_config(folder: Path, model_dir: Path, **over) -> Path:
    """A small run on the toy data. ``threads: 1`` keeps CPU runs fast and reproducible on a
    busy machine (several threads contend badly for two cores)."""
    data = folder / "data"
    if not (data / "captions.jsonl").is_file():
        write_toy_dataset(data, n_image=8, n_text=4, image_size=(32, 32))
    raw = {
        "model": {"checkpoint": str(model_dir)},
        "data": {"sources": [{"name": "captions", "path": "data/captions.jsonl"},
                             {"name": "text", "path": "data/text.jsonl"}], "text_only_share": 0.25},
        "output_dir": "run", "seed": 0, "threads": 1,
        "optim": {"steps": 12, "global_batch_size": 4, "micro_batch_size": 2, "schedule": "constant",
                  "groups": FAST_LR},
        "checkpoint": {"every": 4, "keep_last": 2},
        "log": {"progress": False},
    }
    for key, value in over.items():
        node = raw
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, tiny_model_dir):
    """One 12-step run with a few broken rows mixed into the captions."""
    folder = tmp_path_factory.mktemp("toy-run")
    cfg = write_config(folder, tiny_model_dir, log__progress=True)
    with open(folder / "data" / "captions.jsonl", "a") as fh:
        fh.write("{broken json\n")
        fh.write(json.dumps({"messages": [
            {"role": "user", "content": [{"type": "image", "image": "images/missing.png"}]},
            {"role": "assistant", "content": "nothing"}]}) + "\n")
    result = train(cfg)
    return folder, result


def test_loss_falls_on_a_small_fixed_dataset(toy_run):
    _, result = toy_run
    losses = [r["loss"] for r in read_metrics(result.metrics)]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_metrics_record_the_text_only_share_and_throughput_every_step(toy_run):
    _, result = toy_run
    rows = read_metrics(result.metrics)
    assert [r["step"] for r in rows] == list(range(1, 13))
    for r in rows:
        assert set(r["lr"]) == {"vision", "connector", "decoder", "new_embeddings"}
        assert r["tokens_per_s"] > 0 and r["samples_per_s"] > 0
    assert rows[-1]["text_only_share_run"] == pytest.approx(0.25, abs=0.01)
    assert result.plot is not None and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_rows_are_skipped_counted_and_reported(toy_run):
    folder, result = toy_run
    assert result.bad_rows["captions"]["malformed"] == 1
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert summary["bad_rows"] == result.bad_rows
    reasons = {e["reason"] for e in summary["bad_row_examples"]}
    assert "malformed" in reasons
    # every epoch of the caption pool visits the row with the missing image; it is counted
    # once and then never drawn again
    assert result.bad_rows["captions"]["missing_image"] == 1


def test_final_model_and_checkpoints_are_usable_folders(toy_run):
    import jvlm

    folder, result = toy_run
    ckpts = sorted(p.name for p in (folder / "run" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-00000008", "step-00000012"]  # keep_last: 2
    assert (folder / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000012"
    model, processor = jvlm.load(result.final_model, dtype="fp32")
    batch = processor.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=True,
                                          return_dict=True, add_generation_prompt=True)
    out = jvlm.generate(model, **batch, max_new_tokens=3)
    n = batch["input_ids"].shape[1]
    assert out[:, :n].tolist() == batch["input_ids"].tolist() and n < out.shape[1] <= n + 3


def test_an_existing_run_is_not_overwritten_without_resume(toy_run):
    folder, _ = toy_run
    with pytest.raises(TrainConfigError, match="--resume"):
        train(folder / "train.yaml")


def test_a_partial_checkpoint_left_by_a_crash_is_ignored(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, optim__steps=2, checkpoint__every=1)
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / ".tmp-step-00000009-123").mkdir()  # what a kill during a save leaves behind
    (ckpts / ".tmp-step-00000009-123" / "trainer_state.json").write_text("{")
    result = train(cfg, resume=True)  # nothing complete yet: starts fresh
    assert result.steps == 2 and not list(ckpts.glob(".tmp-*"))


def _run_cli(cfg: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "jvlm", "train", str(cfg), "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """fp32 on the CPU with the same seed: the resumed run's loss at every step equals the
    uninterrupted run's, so optimiser, sampler, schedule and RNG state all came back."""
    cfg_full = write_config(tmp_path / "full", tiny_model_dir, optim__steps=10, checkpoint__every=2,
                            optim__schedule="cosine")
    cfg_kill = write_config(tmp_path / "kill", tiny_model_dir, optim__steps=10, checkpoint__every=2,
                            optim__schedule="cosine")
    full = _run_cli(cfg_full)
    victim = _run_cli(cfg_kill)
    latest = tmp_path / "kill" / "run" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.is_file() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stdout.read()
    killed_at = [r["step"] for r in read_metrics(tmp_path / "kill" / "run" / "metrics.jsonl")]
    assert killed_at and killed_at[-1] < 10 and not (tmp_path / "kill" / "run" / "final").exists()

    resumed = _run_cli(cfg_kill, "--resume")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert full.wait(timeout=300) == 0, full.stdout.read()
    a = read_metrics(tmp_path / "full" / "run" / "metrics.jsonl")
    b = read_metrics(tmp_path / "kill" / "run" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 11))  # redone steps replaced their old lines
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["lr"] == y["lr"], (x["step"], x["loss"], y["loss"])
    assert a[-1]["text_only_share_run"] == b[-1]["text_only_share_run"]


def test_resume_targets_resolve_to_complete_checkpoints(toy_run):
    from jvlm.train.loop import _find_resume

    folder, _ = toy_run
    ckpts = folder / "run" / "checkpoints"
    assert _find_resume(ckpts, True) == ckpts / "step-00000012"
    assert _find_resume(ckpts, str(ckpts / "step-00000008")) == ckpts / "step-00000008"
    assert _find_resume(ckpts, str(folder / "run")) == ckpts / "step-00000012"  # a run folder
    with pytest.raises(TrainConfigError, match="no training checkpoint"):
        _find_resume(ckpts, str(folder / "data"))


def test_curriculum_phases_drive_the_sources_of_each_step(tmp_path, tiny_model_dir):
    phases = [{"name": "text-only", "steps": 2, "weights": {"text": 1}, "text_only_share": 1.0},
              {"name": "mixed", "weights": {"captions": 1, "text": 1}, "text_only_share": 0.5}]
    cfg = write_config(tmp_path, tiny_model_dir, optim__steps=4, optim__global_batch_size=2,
                       data__phases=phases, checkpoint__every=100)
    rows = read_metrics(train(cfg).metrics)
    assert [r["phase"] for r in rows] == ["text-only", "text-only", "mixed", "mixed"]
    assert [r["text_only_share_step"] for r in rows] == [1.0, 1.0, 0.5, 0.5]
