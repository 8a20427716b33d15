"""bench/peer_llama_cpp.py: skips cleanly without the llama.cpp tools, and (when they are built with
scripts/build_llama_cpp.sh) converts, quantizes and benchmarks a tiny Qwen3 decoder."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "peer_llama_cpp.py"

TINY = {
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1024,
    "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
}


@pytest.fixture(scope="module")
def llama_cpp():
    spec = importlib.util.spec_from_file_location("bench_llama_cpp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skipped_without_tools(llama_cpp, tmp_path, monkeypatch):
    monkeypatch.delenv("JVLM_LLAMA_CPP", raising=False)
    monkeypatch.setenv("JVLM_CACHE", str(tmp_path))
    result = llama_cpp.run(TINY, threads=1, prompt_tokens=8, gen_tokens=4)
    assert set(result) == {"skipped"}
    assert "scripts/build_llama_cpp.sh" in result["skipped"]

    monkeypatch.setenv("JVLM_LLAMA_CPP", str(tmp_path / "nowhere"))
    result = llama_cpp.run(TINY, threads=1, prompt_tokens=8, gen_tokens=4)
    assert "JVLM_LLAMA_CPP" in result["skipped"]


def test_missing_dimension_is_an_error(llama_cpp):
    with pytest.raises(ValueError, match="head_dim"):
        llama_cpp._decoder_dims({k: v for k, v in TINY.items() if k != "head_dim"})


def test_help_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--quick" in proc.stdout and "llama-bench" in proc.stdout


def test_tiny_decoder_end_to_end(llama_cpp, tmp_path):
    build, why = llama_cpp.find_build()
    if build is None:
        pytest.skip(why)
    readings = iter([5.0, 7.0, 6.0, 4.0])  # bandwidth before and after each quant's run
    result = llama_cpp.run(TINY, threads=1, prompt_tokens=16, gen_tokens=4, quants=("BF16", "Q8_0"),
                           workdir=tmp_path, repetitions=1, bandwidth=lambda: next(readings))
    assert set(result["quants"]) == {"BF16", "Q8_0"}
    # each run is recorded with the conditions it ran in
    assert [result["quants"][q]["read_gbps_around"] for q in ("BF16", "Q8_0")] == [[5.0, 7.0], [6.0, 4.0]]
    for q, entry in result["quants"].items():
        assert entry["prefill_tok_s"] > 0 and entry["decode_ms_per_token"] > 0
        assert entry["backends"] == "CPU" and entry["build_commit"]
        assert entry["gguf_bytes"] == Path(entry["gguf"]).stat().st_size
    assert result["quants"]["Q8_0"]["gguf_bytes"] < result["quants"]["BF16"]["gguf_bytes"]
    # a second run finds the GGUFs it made
    made = sorted(p.name for p in tmp_path.rglob("*.gguf"))
    llama_cpp.run(TINY, threads=1, prompt_tokens=16, gen_tokens=4, quants=("Q8_0",),
                  workdir=tmp_path, repetitions=1)
    assert sorted(p.name for p in tmp_path.rglob("*.gguf")) == made
