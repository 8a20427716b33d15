"""bench/bench_inference.py end to end on the tiny preset: the script behind
docs/performance.md must keep running as the library changes (its numbers are not checked,
only that every part runs on the path `jvlm infer` takes and reports what it measured)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the script imports its peer module from beside it
    try:
        spec = importlib.util.spec_from_file_location("bench_inference_under_test", BENCH / "bench_inference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_every_part_runs_and_reports_against_its_limit(bench, tmp_path):
    import torch

    from jvlm.inference import kernels

    out = tmp_path / "results.json"
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--preset", "tiny", "--parts", "limits,jvlm,int8,int4,baseline", "--threads", "1",
                          "--repeats", "1", "--decode-tokens", "3", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script sets it for the whole process
    assert out.is_file()
    isa = kernels.default_isa()
    assert res["kernels"] == (kernels.label(isa) if isa else "pytorch")
    assert res["setup"]["linear_kernel"] == res["kernels"]
    for part in ("image", "decode", "decode_torch", "speedup_vs_transformers"):
        assert part in res, part
    assert res["image"]["vit_s"] > 0 and res["image"]["prefill_tokens_per_s"] > 0
    assert res["decode"]["ms"] > 0 and res["decode"]["limit_ms"] > 0
    assert res["int8"]["setup"]["weights"] == "int8"
    # every decoder projection and the LM head runs the format measured, not only some of them
    for fmt in ("int8", "int4"):
        if "skipped" not in res[fmt]:
            assert res[fmt]["layers_in_format"] == res[fmt]["layers"] > 1, fmt
    if isa is None:  # int4 needs the kernels, and says so
        assert "skipped" in res["int4"]
    else:
        assert res["int4"]["setup"]["weights"] == "int4"
        # int4 rounds each weight 16x more coarsely than int8: its logits must move further
        assert res["int4"]["kl"] > res["int8"]["kl"]
    # each decode timing is set against the bandwidth measured beside it, not only the start's
    assert res["decode"]["read_gbps_beside"] > 0
    assert res["decode"]["fraction_of_limit"] == pytest.approx(res["decode"]["limit_ms"] / res["decode"]["ms"])


def test_runs_with_its_default_repeats_and_decode_length(bench):
    """The documented command passes neither --repeats nor --decode-tokens."""
    import torch

    threads = torch.get_num_threads()
    try:
        res = bench.main(["--preset", "tiny", "--parts", "limits,jvlm", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert res["decode"]["ms"] > 0 and res["image"]["vit_s"] > 0
