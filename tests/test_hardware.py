"""The compute dtype follows the CPU: bf16 arithmetic only where the CPU has it natively.

On a CPU without native bf16 PyTorch's bf16 matrix products run a fallback several times
slower than fp32 (measured: a 13-crop photo's first token in 631 s bf16 vs 94 s fp32), so
the loader must widen bf16 checkpoints there -- and must not where bf16 is native (it would
double the memory and the bytes read per decoded token for nothing).
"""

from __future__ import annotations

import pytest
import torch

from jvlm import hardware
from jvlm.loading import load_model
from jvlm.tools.random_model import write_random_checkpoint

AVX2_ONLY = frozenset({"avx", "avx2", "fma", "f16c"})
ZEN4 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "avx512_fp16"}


@pytest.fixture
def flags(monkeypatch):
    def use(value: frozenset[str], machine: str = "x86_64"):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: value)
        monkeypatch.setattr(hardware, "machine", lambda: machine)
    return use


@pytest.mark.parametrize("cpu,expected", [(AVX2_ONLY, torch.float32), (ZEN4, torch.bfloat16),
                                          (SAPPHIRE_RAPIDS, torch.bfloat16)])
def test_bf16_weights_compute_in_bf16_only_on_cpus_with_native_bf16(flags, cpu, expected):
    flags(cpu)
    dtype, why = hardware.choose_compute_dtype(torch.bfloat16, "cpu")
    assert dtype == expected
    assert ("no native bf16" in why) == (expected == torch.float32)


def test_fp32_weights_stay_fp32_and_gpus_keep_the_checkpoint_dtype(flags):
    flags(AVX2_ONLY)
    assert hardware.choose_compute_dtype(torch.float32, "cpu")[0] == torch.float32
    assert hardware.choose_compute_dtype(torch.bfloat16, "cuda")[0] == torch.bfloat16


def test_fp16_needs_native_fp16(flags):
    flags(ZEN4)
    assert hardware.choose_compute_dtype(torch.float16, "cpu")[0] == torch.float32
    flags(SAPPHIRE_RAPIDS)
    assert hardware.choose_compute_dtype(torch.float16, "cpu")[0] == torch.float16


def test_arm_bf16_feature_counts_as_native(flags):
    flags(frozenset({"fp", "asimd", "bf16"}), machine="aarch64")
    assert hardware.choose_compute_dtype(torch.bfloat16, "cpu")[0] == torch.bfloat16
    assert hardware.simd_summary() == "NEON BF16"


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    write_random_checkpoint(folder, dtype=torch.bfloat16)
    return folder


def test_loader_widens_a_bf16_checkpoint_on_an_avx2_cpu_and_remembers_what_it_stored(flags, bf16_folder):
    flags(AVX2_ONLY)
    model = load_model(bf16_folder)
    assert model.compute_dtype == torch.float32 and model.stored_dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # an explicit dtype, or "checkpoint", is obeyed whatever the CPU
    assert load_model(bf16_folder, dtype="bf16").compute_dtype == torch.bfloat16
    assert load_model(bf16_folder, dtype="checkpoint").compute_dtype == torch.bfloat16


def test_loader_keeps_bf16_where_the_cpu_has_it(flags, bf16_folder):
    flags(ZEN4)
    assert load_model(bf16_folder).compute_dtype == torch.bfloat16


def test_cli_dtype_checkpoint_keeps_bf16_on_an_avx2_cpu_and_says_why(flags, bf16_folder):
    """`--dtype checkpoint` is the command line's way to opt out of the per-CPU choice; the
    runtime report names the flag as the reason."""
    from jvlm.cli.infer import load_engine
    from jvlm.cli.options import dtype_arg

    flags(AVX2_ONLY)
    assert dtype_arg("Checkpoint") == "checkpoint"
    engine, _, _, setup = load_engine(str(bf16_folder), dtype_arg("checkpoint"), "cpu", kernels="torch")
    assert setup.compute_dtype == "bf16" and setup.dtype_reason == "--dtype checkpoint"
    _, _, _, auto = load_engine(str(bf16_folder), dtype_arg("auto"), "cpu", kernels="torch")
    assert auto.compute_dtype == "fp32" and "no native bf16" in auto.dtype_reason


def test_report_never_credits_the_cpu_rule_for_a_dtype_it_did_not_choose(flags, bf16_folder):
    """A model loaded in bf16 on an AVX2 CPU (by the Python API) is reported as such, not with
    the rule's reason for a dtype it is not running in."""
    from jvlm.inference.quantize import describe

    flags(AVX2_ONLY)
    setup = describe(load_model(bf16_folder, dtype="bf16"))
    assert setup.compute_dtype == "bf16"
    assert "set when the model was loaded" in setup.dtype_reason and "fp32" in setup.dtype_reason
    assert "no native bf16" in describe(load_model(bf16_folder)).dtype_reason
