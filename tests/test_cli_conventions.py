"""`jvlm infer` with the habits of Transformers, vLLM and mlx-vlm users, and the inputs
newcomers really pass: each behaviour a first-hour user hits, asserted as they would see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shipped import EXAMPLES
from shipped import example as example_of

from jvlm.cli import build_parser, main



def run(capsys, *argv):
    code = main(["infer", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", *map(str, argv)])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conv") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    return path


def test_the_demo_model_says_what_it_is(capsys):
    code, out, err = run(capsys, "-p", "What is 6 × 7?", "--kernels", "torch")
    assert code == 0 and out.strip() == "42"
    notice = [line for line in err.splitlines() if "jvlm-demo" in line]
    assert len(notice) == 1 and "--model jinaai/jina-vlm" in notice[0] and "hf download" in notice[0]


def test_a_real_checkpoint_gets_no_demo_notice(capsys, tiny_model_dir):
    code, _, err = run(capsys, "--model", tiny_model_dir, "-p", "hi", "--max-tokens", 2)
    assert code == 0 and "jvlm-demo" not in err


@pytest.mark.parametrize("spelling, canonical", [("float16", "fp16"), ("bfloat16", "bf16"), ("half", "fp16"),
                                                 ("float32", "fp32"), ("fp16", "fp16"), ("BF16", "bf16")])
def test_dtype_spellings_of_transformers_and_vllm(spelling, canonical):
    args = build_parser(only="infer").parse_args(["infer", "-p", "x", "--dtype", spelling])
    assert args.dtype == canonical


def test_bfloat16_runs_and_max_tokens_caps_the_answer(capsys, tiny_model_dir):
    code, out, err = run(capsys, "--model", tiny_model_dir, "-p", "Tell me a story", "--dtype", "bfloat16",
                         "--max-tokens", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["usage"]["completion_tokens"] <= 3


def test_system_prompt_reaches_the_model(capsys, tiny_model_dir):
    def prompt_tokens(*extra):
        code, out, err = run(capsys, "--model", tiny_model_dir, "-p", "hi", "--max-tokens", 1, "--json", *extra)
        assert code == 0, err
        return json.loads(out)["usage"]["prompt_tokens"]

    assert prompt_tokens("--system", "You answer in one word only.") > prompt_tokens() + 5


def test_mistyped_options_and_commands_get_a_suggestion(capsys):
    assert "did you mean '--max-tokens'" in usage_error(capsys, "-p", "x", "--max-tokns", "3")
    with pytest.raises(SystemExit):
        main(["infr", "-p", "x"])
    assert "did you mean 'infer'" in capsys.readouterr().err


def test_empty_prompt_is_refused(capsys):
    assert "the prompt is empty" in usage_error(capsys, "-p", "")
    assert "the prompt is empty" in usage_error(capsys, "-p", "   ")


def test_pages_without_a_pdf_is_refused(capsys, photo):
    code, out, err = run(capsys, "-i", photo, "--pages", "1-2", "-p", "What is it?")
    assert code == 1 and out == ""
    assert "--pages" in err and "no input is a PDF" in err


def test_truncated_png_is_named_as_such(capsys, tmp_path):
    data = (EXAMPLES / "shapes_en.png").read_bytes()
    for cut in (len(data) // 2, 40):  # pixel data cut off; header cut off
        (tmp_path / "cut.png").write_bytes(data[:cut])
        code, _, err = run(capsys, "-i", tmp_path / "cut.png", "-p", "x")
        assert code == 1 and "truncated" in err and "PNG" in err and "neither an image" not in err, err


def test_large_image_is_downscaled_with_a_notice(capsys, photo):
    code, out, err = run(capsys, "-i", photo, "-p", "What is it?", "--max-image-pixels", 30_000,
                         "--max-tokens", 2, "--kernels", "torch")
    assert code == 0 and "400×300 = 120,000 pixels" in err and "downscaled to" in err
    w, h = map(int, err.split("downscaled to ")[1].split()[0].split("×"))
    assert w * h <= 30_000 and abs(w / h - 4 / 3) < 0.02


def test_an_image_above_pils_bomb_limit_is_downscaled_not_refused(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (9600, 9600), 200).save(big)  # 92 M pixels: above PIL's warning limit
    res = subprocess.run([sys.executable, "-m", "jvlm", "infer", "-i", str(big), "-p", "What colour is it?",
                          "--max-tokens", "2", "--kernels", "torch"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "downscaled to" in res.stderr and "DecompressionBomb" not in res.stderr


def test_verbose_after_the_subcommand_keeps_pil_quiet():
    res = subprocess.run([sys.executable, "-m", "jvlm", "infer", "-i", str(EXAMPLES / "shapes_en.png"),
                          "-p", "What colour is the triangle?", "--kernels", "torch", "-v"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "blue", res.stderr
    assert "PIL" not in res.stderr and "STREAM" not in res.stderr  # PNG chunk debug lines
    args = build_parser(only="infer").parse_args(["infer", "-p", "x", "-v"])
    assert args.verbose is True
    assert build_parser(only="infer").parse_args(["-v", "infer", "-p", "x"]).verbose is True


def test_a_reply_cut_inside_the_reasoning_tag_prints_no_partial_tag(capsys):
    example = example_of("bar_chart")
    for n in (1, 2, 3):
        code, out, err = run(capsys, "-i", EXAMPLES / example["image"], "-p", example["question"],
                             "--max-tokens", n, "--kernels", "torch")
        assert code == 0 and "<" not in out, (n, out)


@pytest.mark.parametrize("mode", ["P", "I;16", "1", "RGBA", "L"])
def test_downscaling_keeps_every_image_mode_usable(mode):
    import io

    from jvlm.cli.inputs import check_image
    from jvlm.processing.image import load_image

    buf = io.BytesIO()
    Image.new(mode, (300, 200)).save(buf, "PNG")
    small, done = check_image(buf.getvalue(), "x.png", 10_000)
    assert done is not None and small.size[0] * small.size[1] <= 10_000
    assert load_image(small).shape[2] == 3  # the processor takes it as any other image
    unchanged, none = check_image(buf.getvalue(), "x.png", 0)  # 0 = no limit
    assert unchanged == buf.getvalue() and none is None
