"""`jvlm infer` on the tiny model: each usage line of the published infer.py, and its errors.

The CLI runs in-process through ``jvlm.cli.main`` (what the ``jvlm`` script and the root
``infer.py`` call), so a failure shows the exit code and both output streams.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import shipped
from PIL import Image

from jvlm.cli import main
from jvlm_demo.synthetic import GOAL_MARK


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(d / "photo.png")
    Image.fromarray(rng.integers(0, 256, (200, 150, 3), dtype=np.uint8)).save(d / "scan.jpg")
    pages = [Image.new("RGB", (120, 160), c) for c in ("white", "gray", "black")]
    pages[0].save(d / "doc.pdf", save_all=True, append_images=pages[1:])
    (d / "notes.png").write_text("this is text, not a PNG")
    return d


def run(capsys, *argv):
    code = main(["infer", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def ask(capsys, model, *argv):
    return run(capsys, "--model", model, "--max-new-tokens", 6, *argv)


def test_single_image(capsys, tiny_model_dir, files):
    code, out, err = ask(capsys, tiny_model_dir, "-i", files / "photo.png", "-p", "Describe this image")
    assert code == 0, err
    assert out.strip() and "Traceback" not in err


def test_several_images_json_reports_tiles_and_tokens(capsys, tiny_model_dir, files):
    code, out, err = ask(capsys, tiny_model_dir, "-i", files / "photo.png", "-i", files / "scan.jpg",
                         "-p", "Compare these images", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [im["source"] for im in rep["images"]] == [str(files / "photo.png"), str(files / "scan.jpg")]
    assert all(im["visual_tokens"] > 0 and im["crops"] == 1 + im["tiles"][0] * im["tiles"][1]
               for im in rep["images"])
    assert rep["usage"]["image_tokens"] == sum(im["visual_tokens"] for im in rep["images"])
    assert rep["usage"]["completion_tokens"] == 6 or rep["finish_reason"] == "stop"
    t = rep["timings"]
    assert 0 < t["time_to_first_token_s"] <= t["total_s"] and t["tokens_per_s"] >= 0


def test_stream_prints_the_same_answer(capsys, tiny_model_dir, files):
    code, plain, _ = ask(capsys, tiny_model_dir, "-i", files / "photo.png", "-p", "What is in it?")
    code2, streamed, err = ask(capsys, tiny_model_dir, "-i", files / "photo.png", "-p", "What is in it?", "--stream")
    assert code == code2 == 0, err
    assert streamed == plain


def test_text_only(capsys, tiny_model_dir):
    code, out, err = ask(capsys, tiny_model_dir, "-p", "What is the capital of France?", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["images"] == [] and rep["usage"]["image_tokens"] == 0


def test_pdf_pages_become_images(capsys, tiny_model_dir, files):
    code, out, err = ask(capsys, tiny_model_dir, "-i", files / "doc.pdf", "--pages", "1,3", "-p", "Read it", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [im["source"] for im in rep["images"]] == [f"{files / 'doc.pdf'}#page=1", f"{files / 'doc.pdf'}#page=3"]


def test_sampling_seed_reproduces(capsys, tiny_model_dir):
    args = ("-p", "Tell a story", "--temperature", "1.2", "--seed", "3")
    assert ask(capsys, tiny_model_dir, *args)[1] == ask(capsys, tiny_model_dir, *args)[1]


@pytest.mark.parametrize("case", ["missing", "not_an_image", "bad_pages", "incomplete_model", "uncached_repo",
                                  "bad_max_crops"])
def test_errors_are_one_clear_line(capsys, tiny_model_dir, files, tmp_path, case):
    incomplete = tmp_path / "model"
    incomplete.mkdir()
    (incomplete / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    argv = {
        "missing": ("-i", files / "nope.png", "-p", "x"),
        "not_an_image": ("-i", files / "notes.png", "-p", "x"),
        "bad_pages": ("-i", files / "doc.pdf", "--pages", "4", "-p", "x"),
        "incomplete_model": ("--model", incomplete, "-p", "x"),
        "uncached_repo": ("--model", "nobody-xyz/not-a-model", "-p", "x"),
        "bad_max_crops": ("--max-crops", "0", "-p", "x"),
    }[case]
    if case not in ("incomplete_model", "uncached_repo"):
        argv = ("--model", tiny_model_dir, *argv)
    code, out, err = run(capsys, *argv)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jvlm infer: error:"), err
    assert "Traceback" not in err and out == ""
    expected = {"missing": "does not exist", "not_an_image": "neither an image", "bad_pages": "has 3 pages",
                "incomplete_model": "tokenizer", "uncached_repo": "hf download nobody-xyz/not-a-model",
                "bad_max_crops": "max_crops"}[case]
    assert expected in lines[0]


def test_random_placeholder_model_is_labelled_random(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("JVLM_CACHE", str(tmp_path))
    code, out, err = run(capsys, "--model", "jvlm/tiny-random", "-p", "Hello", "--max-new-tokens", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["model_is_random"] is True
    assert "RANDOM weights" in err
    assert (tmp_path / "tiny-random" / "config.json").is_file()


def test_default_model_is_the_shipped_trained_demo(capsys):
    code, out, err = run(capsys, "-p", "Hello", "--max-new-tokens", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["model_is_random"] is False
    assert "RANDOM weights" not in err


def test_json_gives_the_reading_and_the_answer_apart(capsys):
    """The shipped model reads a chart out in a <think> block before answering: --json must
    give that block as ``reasoning`` and the same answer the plain command prints, with no
    tag left in either."""
    example = shipped.example("bar_chart")
    argv = ("-i", shipped.EXAMPLES / example["image"], "-p", example["question"], "--max-new-tokens", 160)
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    reply = json.loads(out)
    code, plain, err = run(capsys, *argv, "--hide-reasoning")
    assert code == 0, err
    assert reply["answer"] == plain.strip() and reply["answer"]
    goal, *lines = reply["reasoning"].splitlines()  # "? (tea)", then "label: value" lines
    assert goal.startswith(GOAL_MARK) and lines and all(": " in line for line in lines)
    assert not any(tag in reply["answer"] + reply["reasoning"] for tag in ("<think>", "</think>"))


def test_root_infer_py_forwards_to_the_cli(capsys, monkeypatch, tiny_model_dir):
    """Run as a script (in-process, to stay fast): same command, same output."""
    argv = ["--model", str(tiny_model_dir), "-p", "Hi", "--max-new-tokens", "3", "--json"]
    monkeypatch.setattr(sys, "argv", [str(shipped.ROOT / "infer.py"), *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(shipped.ROOT / "infer.py"), run_name="__main__")
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["usage"]["completion_tokens"] <= 3


def test_ctrl_c_prints_one_word_and_exits_130(capsys, monkeypatch, files):
    """Ctrl-C during a run is not a crash: no traceback, the shell's usual 130."""
    import jvlm.cli.infer

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(jvlm.cli.infer, "run", interrupted)
    code, out, err = run(capsys, "-i", files / "photo.png", "-p", "hi")
    assert (code, out, err.strip()) == (130, "", "interrupted")


def test_python_m_entry_points_share_the_error_report(capsys):
    """The python -m tools report typed errors like the jvlm command; repro keeps its exit 2."""
    from jvlm.errors import CheckpointError, run_reporting_errors
    from jvlm_demo.repro import main as repro_main

    def broken():
        raise CheckpointError("no weights in /nowhere")

    assert run_reporting_errors("tool", broken) == 1
    assert capsys.readouterr().err == "tool: error: no weights in /nowhere\n"
    assert run_reporting_errors("tool", lambda: 3) == 3
    assert repro_main(["all", "--out", "unused", "--scale", "0"]) == 2
    assert "python -m jvlm_demo.repro: error: --scale" in capsys.readouterr().err


def test_json_names_the_compute_path_and_why(capsys, tiny_model_dir):
    """A user who wonders why decoding is slow reads the path off --json: the compute dtype
    and its reason, the decoder's weight format and the kernels that run them."""
    code, out, err = ask(capsys, tiny_model_dir, "-p", "Hi", "--json", "--quantize", "int8", "--kernels", "torch",
                         "--dtype", "fp32")
    assert code == 0, err
    rt = json.loads(out)["runtime"]
    assert rt["compute_dtype"] == "fp32" and rt["dtype_reason"] == "--dtype fp32"
    assert rt["weights"] == "int8" and rt["linear_kernel"] == "pytorch" and rt["attention"] == "sdpa"
    assert rt["decode_step"] == "modules"  # no kernels in this test: the modules run every step
    assert rt["cpu"]
