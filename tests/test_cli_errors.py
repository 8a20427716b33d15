"""Every user error of the ``jvlm`` command is one line and a non-zero exit, never a traceback.

Each case runs the real command in its own process, as a user would, and reads both streams.
Processes are slow to start here (torch), so each case is one launch.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
from PIL import Image


def _jvlm(*args: str, cwd=None, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nimport sys\nfrom jvlm.cli import main\nsys.exit(main({list(args)!r}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "JVLM_SERVE_TEST_LOAD_DELAY_S": "0"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env=env)


def _one_line_error(proc: subprocess.CompletedProcess, command: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # (lines other packages log while they are imported, e.g. torch's, are not ours to judge)
    ours = [line for line in lines if line.startswith("jvlm") or " jvlm." in line or "Error" in line]
    assert len(ours) == 1 and lines[-1] == ours[0], output
    assert ours[0].startswith(f"jvlm {command}: error: "), ours[0]
    assert "Uvicorn running" not in output  # nothing was announced
    return ours[0]


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 48 KB on disk, 400 megapixels decoded
    return path


def test_infer_with_a_decompression_bomb(tiny_model_dir, bomb_png):
    line = _one_line_error(_jvlm("infer", "--model", str(tiny_model_dir), "--image", str(bomb_png), "-p", "hi"),
                           "infer")
    assert "too large" in line


def test_serve_on_a_folder_without_config_json(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-config"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").unlink()
    line = _one_line_error(_jvlm("serve", "--model", str(folder), "--port", "0"), "serve")
    assert "config.json" in line


def test_serve_on_cuda_without_cuda(tiny_model_dir):
    import torch

    assert not torch.cuda.is_available()  # this machine class has no GPU
    line = _one_line_error(_jvlm("serve", "--model", str(tiny_model_dir), "--device", "cuda"), "serve")
    assert "cuda" in line.lower()


def test_serve_with_an_unknown_dtype(tiny_model_dir):
    line = _one_line_error(_jvlm("serve", "--model", str(tiny_model_dir), "--dtype", "int4"), "serve")
    assert "int4" in line and "bf16" in line


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_refuses_a_port_out_of_range(tiny_model_dir, port):
    line = _one_line_error(_jvlm("serve", "--model", str(tiny_model_dir), "--port", port), "serve")
    assert port in line and "1-65535" in line


def test_serve_on_a_port_in_use_fails_before_loading(tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line_error(_jvlm("serve", "--model", str(tiny_model_dir), "--port", str(port)), "serve")
    assert str(port) in line and "in use" in line


def test_train_with_a_mistyped_override(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "examples" / "train" / "toy.yaml"
    line = _one_line_error(_jvlm("train", str(config), "--set", "optim.steps=abc"), "train")
    assert "optim.steps" in line and "'abc'" in line


def test_eval_against_a_server_without_the_openai_package(tmp_path):
    data = tmp_path / "mmbench.tsv"
    data.write_text("index\tquestion\tA\tB\tanswer\timage\n0\tWhat?\tyes\tno\tA\t\n")
    # the package is made unimportable for this process only, as if it were not installed
    proc = _jvlm("eval", "--task", "mmbench_ar", "--data", str(data), "--server", "http://127.0.0.1:9",
                 "--limit", "1", "--out", str(tmp_path / "out.json"), prelude="import sys; sys.modules['openai'] = None")
    line = _one_line_error(proc, "eval")
    assert "openai" in line and "pip install" in line


def test_verbose_shows_the_traceback_for_unexpected_errors():
    from jvlm.errors import run_reporting_errors

    def broken():
        raise TypeError("'<=' not supported between instances of 'str' and 'int'")

    assert run_reporting_errors("jvlm x", broken) == 1
