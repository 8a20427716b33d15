"""A run off a terminal logs a line per step, and SIGTERM (preemption) or Ctrl-C saves a
checkpoint before exiting and prints the command that resumes it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from test_train_loop import write_config

from jvlm.train.metrics import read_metrics
from jvlm.train.signals import GracefulStop

STEP_LINE = re.compile(r"step (\d+)/(\d+) loss \d+\.\d+ [\d,]+ tok/s [\d.]+ samples/s ETA \d+:\d\d:\d\d")


def _cli(cfg, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "jvlm", "train", str(cfg), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)


def test_sigterm_saves_a_checkpoint_prints_the_resume_command_and_resume_continues(tmp_path, tiny_model_dir):
    # no periodic checkpoint before step 1000: whatever is saved, SIGTERM saved it
    cfg = write_config(tmp_path, tiny_model_dir, optim__steps=500, checkpoint__every=1000,
                       log__progress="auto")
    proc = _cli(cfg)
    lines = []
    timer = threading.Timer(300, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:  # stdout is a pipe: the progress bar is off, step lines on
            lines.append(line)
            m = STEP_LINE.search(line)
            if m and int(m.group(1)) >= 2:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        timer.cancel()
    out = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, out
    steps = [int(m.group(1)) for m in STEP_LINE.finditer(out)]
    assert steps[:2] == [1, 2] and all(b == a + 1 for a, b in zip(steps, steps[1:])), out
    stopped = steps[-1]
    ckpt = tmp_path / "run" / "checkpoints" / f"step-{stopped:08d}"
    assert f"stopped by SIGTERM at step {stopped}" in out and ckpt.is_dir(), out
    assert f"resume with: jvlm train {cfg} --resume" in out
    assert not (tmp_path / "run" / "final").exists()

    resumed = _cli(cfg, "--resume", "--set", f"optim.steps={stopped + 2}")
    out2 = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out2
    assert f"resumed from {ckpt} at step {stopped}" in out2
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")][-3:] == \
        [stopped, stopped + 1, stopped + 2]


def test_the_first_ctrl_c_is_recorded_not_raised():
    # Python's own handler, as in a terminal: a suite started as a background job inherits
    # SIGINT ignored, and then the "restored" check below would compare against the wrong one.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum == signal.SIGINT  # the handler ran; no KeyboardInterrupt mid-step
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, before)
