"""The cost report reproduces the paper's efficiency table and reports the real counts beside it."""

from __future__ import annotations

import pytest

from jvlm.config import JinaVLMConfig
from jvlm.efficiency import efficiency_report, format_report, llm_body_params, projector_params
from jvlm.processing.image import image_layout

RELEASE = JinaVLMConfig.preset("jina-vlm")


@pytest.fixture(scope="module")
def paper():
    # the paper's figure: a 2728x2046 photo, 12 tiles + thumbnail
    return efficiency_report(2728, 2046, RELEASE)


def test_paper_table_is_reproduced(paper):
    assert paper["tiling"] == (3, 4) and paper["n_crops"] == 13
    assert paper["tokens"]["nominal_unpooled"] == 9477
    assert paper["tokens"]["nominal_pooled"] == 2366
    assert round(paper["prefill_flops"]["paper_unpooled"] / 1e12, 1) == 27.2
    assert round(paper["prefill_flops"]["paper_pooled"] / 1e12, 1) == 6.9
    assert round(paper["kv_cache"]["paper_gb_unpooled"], 2) == 2.12
    assert round(paper["kv_cache"]["paper_gb_pooled"], 2) == 0.53
    # about 4x fewer tokens, FLOPs and cache with pooling
    assert 3.9 < paper["prefill_flops"]["paper_unpooled"] / paper["prefill_flops"]["paper_pooled"] < 4.0


def test_real_counts_come_from_the_image_layout(paper):
    assert paper["tokens"]["feature_tokens"] == 1692
    assert paper["tokens"]["block_tokens"] == 1744
    assert paper["tokens"]["connector_tokens"] == 13 * 196
    for w, h in [(640, 480), (1200, 200), (333, 4000)]:
        r, lay = efficiency_report(w, h, RELEASE), image_layout(h, w, RELEASE.image)
        assert (r["tokens"]["feature_tokens"], r["tokens"]["block_tokens"]) == (lay.n_feature_tokens, lay.n_block_tokens)


def test_parameter_counts_are_derived_from_the_config():
    # spec section 12: 28 x 50,336,000 + 2,048 and 1152*12288 + 6144*2048
    assert llm_body_params(RELEASE) == 1_409_410_048
    assert projector_params(RELEASE) == 26_738_688
    deeper = RELEASE.copy()
    deeper.text.n_layers = 56
    assert llm_body_params(deeper) == 2 * (1_409_410_048 - 2048) + 2048
    tiny = efficiency_report(2728, 2046, JinaVLMConfig.preset("tiny"))
    assert tiny["tokens"]["nominal_pooled"] == 2366  # same image geometry as the release
    assert tiny["prefill_flops"]["paper_unpooled"] < 1e-3 * efficiency_report(2728, 2046, RELEASE)["prefill_flops"]["paper_unpooled"]


def test_kv_cache_paper_convention_ignores_gqa(paper):
    per_tok = paper["kv_bytes_per_token"]
    assert per_tok["paper"] == 224 * 1024  # 2 x 28 x 2048 x 2 bytes
    assert per_tok["gqa"] == per_tok["paper"] // 2  # 8 KV heads of 16
    assert paper["kv_cache"]["gqa_bytes_real"] == 1744 * per_tok["gqa"]


def test_max_crops_override(paper):
    small = efficiency_report(2728, 2046, RELEASE, max_crops=4)
    assert small["n_crops"] <= 5 and small["max_crops"] == 4
    assert small["tokens"]["nominal_pooled"] < paper["tokens"]["nominal_pooled"]


def test_vit_cost_is_reported(paper):
    # spec: about 2 x 0.41B x 729 x 13 = 7.8 TFLOPs over all 27 blocks; the report counts the 25 that run
    assert paper["params"]["vit_layers_used"] == 25
    assert 6.5e12 < paper["vit_flops"]["linear"] < 7.8e12


def test_format_report_shows_paper_and_real_figures(paper):
    text = format_report(paper)
    for figure in ("9,477", "2,366", "27.2", "6.9", "2.12", "0.53", "1,692", "1,744", "2728×2046"):
        assert figure in text
    assert "paper" in text and "real" in text
    assert "MFLOPs" in format_report(efficiency_report(640, 480, JinaVLMConfig.preset("tiny")))


def test_efficiency_names_the_compute_path_this_machine_would_run(monkeypatch, capsys):
    """`jvlm efficiency` says which dtype and decode kernels `--dtype auto` / `--kernels auto`
    pick here, the same choice the loader makes, so a user can see it before loading 5 GB."""
    import json

    import torch

    from jvlm.cli.__init__ import main
    from jvlm.hardware import choose_compute_dtype, dtype_name
    from jvlm.inference import kernels

    assert main(["efficiency", "--width", "640", "--height", "480", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["machine"]
    compute, why = choose_compute_dtype(torch.bfloat16, "cpu")
    assert m["compute_dtype_for_bf16_weights"] == dtype_name(compute) and m["reason"] == why
    isa = kernels.default_isa()
    assert m["decode_kernels"].startswith(kernels.label(isa) if isa else "pytorch")

    monkeypatch.setenv("JVLM_KERNELS", "off")
    assert main(["efficiency", "--width", "640", "--height", "480"]) == 0
    text = capsys.readouterr().out
    assert "This machine:" in text and "decode kernels  pytorch" in text
