"""``jvlm eval`` end to end on fixture files, with the tiny model."""

from __future__ import annotations

import json

import pytest
from test_eval_runner import chartqa_fixture, mmlu_fixture, running_server

from jvlm.cli import main


def run_cli(*args: str) -> int:
    return main(["eval", *args, "--no-progress"])


def test_eval_in_process_writes_results_cache_and_summary(tmp_path, tiny_model_dir, capsys):
    data = mmlu_fixture(tmp_path / "mmlu", 4)
    out = tmp_path / "out" / "mmlu.json"
    args = ["--task", "mmlu", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out),
            "--max-new-tokens", "4"]
    assert run_cli(*args, "--limit", "2") == 0
    assert run_cli(*args, "--summary", str(tmp_path / "summary")) == 0
    printed = capsys.readouterr().out
    assert "mmlu  tiny-model" in printed and "(4 scored of 4, 2 cached)" in printed
    [result] = json.loads(out.read_text())["results"]
    assert (result["task"], result["n_samples"], result["metric"]) == ("mmlu", 4, "accuracy")
    assert [s["id"] for s in result["samples"]] == [f"astronomy-{i}" for i in range(1, 5)]
    assert len((tmp_path / "out" / "mmlu.answers.jsonl").read_text().splitlines()) == 4
    assert "| mmlu | accuracy |" in (tmp_path / "summary" / "summary.md").read_text()
    assert (tmp_path / "summary" / "summary.png").stat().st_size > 0


def test_text_backbone_side_by_side(tmp_path, tiny_model_dir, capsys):
    data = mmlu_fixture(tmp_path / "mmlu", 2)
    out = tmp_path / "mmlu.json"
    code = run_cli("--task", "mmlu", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                   "--text-backbone", str(tiny_model_dir), "--max-new-tokens", "3", "--summary", str(tmp_path / "s"))
    assert code == 0
    roles = [r["role"] for r in json.loads(out.read_text())["results"]]
    assert roles == ["model", "text_backbone"]
    assert "(text backbone)" in capsys.readouterr().out
    summary = (tmp_path / "s" / "summary.md").read_text()
    assert "## Text-only: vision model vs its text backbone" in summary


def test_report_only_merges_earlier_runs(tmp_path, tiny_model_dir):
    data = mmlu_fixture(tmp_path / "mmlu", 1)
    first = tmp_path / "a.json"
    assert run_cli("--task", "mmlu", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(first),
                   "--max-new-tokens", "2", "--no-cache") == 0
    assert not (tmp_path / "a.answers.jsonl").exists()  # --no-cache writes no cache either
    assert run_cli("--report", str(first), "--summary", str(tmp_path / "merged")) == 0
    assert "| mmlu |" in (tmp_path / "merged" / "summary.md").read_text()


def test_eval_through_a_server(tmp_path, tiny_model_dir, capsys):
    data = chartqa_fixture(tmp_path / "chartqa", 2)
    out = tmp_path / "chartqa.json"
    with running_server(tiny_model_dir) as url:
        code = run_cli("--task", "chartqa", "--data", str(data), "--server", url, "--out", str(out),
                       "--max-new-tokens", "3")
    assert code == 0
    [result] = json.loads(out.read_text())["results"]
    assert result["model"] == "jina-vlm" and result["n_scored"] == 2
    assert "chartqa  jina-vlm  relaxed accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "x.json", "--model", "m"], "--task is required"),
        (["--task", "nope", "--data", "x", "--model", "m"], "unknown task 'nope'"),
        (["--task", "mmlu", "--model", "m"], "--data is required"),
        (["--task", "mmlu", "--data", "x", "--model", "m", "--server", "http://h"], "exactly one of"),
        (["--task", "mmlu", "--data", "x", "--model", "m", "--limit", "0"], "--limit must be at least 1"),
        (["--report", "r.json"], "add --summary DIR"),
        (["--task", "docvqa", "--data", "x", "--model", "m", "--text-backbone", "q"], "docvqa has images"),
        # how a model runs is the server's business with --server: not silently dropped
        (["--task", "mmlu", "--data", "x", "--server", "http://h", "--quantize", "int8"], "start the server with them"),
        (["--task", "mmlu", "--data", "x", "--server", "http://h", "--dtype", "fp32"], "start the server with them"),
    ],
)
def test_argument_mistakes_say_what_to_do(args, message):
    with pytest.raises(SystemExit, match=message):
        run_cli(*args)


def test_unreadable_benchmark_file_is_one_error_line(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "test.jsonl"
    bad.write_text("{not json\n")
    assert run_cli("--task", "gsm8k", "--data", str(bad), "--model", str(tiny_model_dir),
                   "--out", str(tmp_path / "r.json")) == 1
    err = capsys.readouterr().err
    assert err.startswith("jvlm eval: error:") and "line 1" in err


def test_list_tasks(capsys):
    assert run_cli("--list-tasks") == 0
    listed = capsys.readouterr().out.split("\n")
    assert any(line.startswith("mmbench_tr") and "circular accuracy" in line for line in listed)


def test_quantized_in_process_answers_are_cached_apart_from_float_ones(tiny_model_dir):
    """`jvlm eval --quantize int8` runs the int8 decoder and never reuses the float model's
    cached answers (the cache key names the weight format)."""
    from jvlm.eval.runner import InProcessBackend

    plain = InProcessBackend.from_folder(tiny_model_dir, batch_size=1, kernels="torch")
    int8 = InProcessBackend.from_folder(tiny_model_dir, batch_size=1, quantize="int8", kernels="torch")
    assert plain.setup.weights != "int8" and int8.setup.weights == "int8"
    assert plain.key != int8.key
