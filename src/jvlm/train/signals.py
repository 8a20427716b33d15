"""Stopping a run cleanly, and reporting it when no one watches a progress bar.

``GracefulStop`` turns the first SIGINT (Ctrl-C) or SIGTERM (what Slurm, Kubernetes and
spot-instance preemption send) into a request the loop sees between steps: it finishes the
step, saves a checkpoint and leaves with ``TrainingInterrupted``, whose message gives the
command that resumes. A second signal stops at once (the last checkpoint still resumes).

``StepLog`` writes one line per logged step (loss, throughput, ETA) to the log when the
progress bar is off: under nohup, Slurm or CI a run would otherwise say nothing until done.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from jvlm.errors import JVLMError

log = logging.getLogger("jvlm.train")


class TrainingInterrupted(JVLMError):
    """The run stopped on a signal after saving a checkpoint; ``resume`` continues it."""

    code = "training_interrupted"

    def __init__(self, signum: int, step: int, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint saved to {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal ended


class GracefulStop:
    """Context manager: records SIGINT/SIGTERM instead of dying mid-step (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing this step and saving a checkpoint (send it again to stop at once)",
                    signal.Signals(signum).name)


class StepLog:
    """One log line per logged step, with an ETA from the mean step time of this session."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()

    def line(self, rec: dict) -> str:
        step = rec["step"]
        done = max(step - self.start, 1)
        eta = (time.perf_counter() - self.t0) / done * (self.total - step)
        return (f"step {step}/{self.total} loss {rec['loss']:.4f} {rec['tokens_per_s']:,.0f} tok/s "
                f"{rec['samples_per_s']:.2f} samples/s ETA {_clock(eta)}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
