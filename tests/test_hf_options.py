"""``from_pretrained`` options take effect or raise; checkpoint and config details that
the release reads its own way (mixed dtypes, norm epsilons)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import jvlm
from jvlm.errors import ModelFolderError


# the auto classes registered (and mlx-vlm's AutoProcessor patch undone) for this module
pytestmark = pytest.mark.usefixtures("transformers_registered")


@pytest.fixture(scope="module")
def folder(tiny_model_dir):
    return str(tiny_model_dir)


@pytest.fixture(scope="module")
def ids():
    return torch.tensor([[1021, 40, 41, 300, 301, 302, 77]])


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def test_attn_implementation_eager_and_sdpa_agree_and_are_applied(folder, ids):
    sdpa = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert {layer.attn.attn_implementation for layer in eager.model.language_model.layers} == {"eager"}
    assert eager.config._attn_implementation == "eager"
    torch.testing.assert_close(_logits(eager, ids), _logits(sdpa, ids), rtol=1e-4, atol=1e-4)
    assert torch.equal(eager.generate(ids, max_new_tokens=5, do_sample=False),
                       sdpa.generate(ids, max_new_tokens=5, do_sample=False))


def test_unsupported_attention_and_options_raise(folder):
    with pytest.raises(ValueError, match="CUDA|not supported"):
        AutoModelForCausalLM.from_pretrained(folder, attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="not supported"):
        AutoModelForCausalLM.from_pretrained(folder, attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="bitsandbytes"):
        AutoModelForCausalLM.from_pretrained(folder, load_in_8bit=True)
    with pytest.raises(TypeError, match="does not support"):
        AutoModelForCausalLM.from_pretrained(folder, rope_scaling={"type": "linear", "factor": 2.0})


def test_dtype_auto_keeps_the_checkpoint_dtype_and_explicit_dtypes_apply(folder, tmp_path):
    from jvlm.random_model import write_random_checkpoint

    bf16_dir = write_random_checkpoint(tmp_path / "bf16", "tiny", dtype=torch.bfloat16)
    assert AutoModelForCausalLM.from_pretrained(str(bf16_dir), dtype="auto").dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(str(bf16_dir)).dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    m = AutoModelForCausalLM.from_pretrained(str(bf16_dir), dtype=torch.float32)
    assert {p.dtype for p in m.parameters()} == {torch.float32}


def test_device_map_auto_and_explicit(folder, ids):
    auto = AutoModelForCausalLM.from_pretrained(folder, device_map="auto")
    assert auto.device.type == "cpu" and set(map(str, auto.hf_device_map.values())) == {"cpu"}
    one = AutoModelForCausalLM.from_pretrained(folder, device_map={"": "cpu"})
    assert torch.equal(_logits(auto, ids), _logits(one, ids))
    with pytest.raises(ValueError, match="CUDA|cuda"):
        AutoModelForCausalLM.from_pretrained(folder, device_map="cuda")


def test_torchao_int8_weight_only_quantizes_the_decoder(folder, ids):
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    ref = AutoModelForCausalLM.from_pretrained(folder)
    q = AutoModelForCausalLM.from_pretrained(folder, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
    w = q.model.language_model.layers[0].ffn.up.weight
    assert type(w).__name__ != "Parameter" or type(w.data).__name__ != "Tensor"
    assert "Int8" in type(w).__name__ or "Affine" in type(w).__name__
    assert type(q.model.vision_model.patch_embed.proj.weight).__name__ == "Parameter"  # vision stays float
    a, b = _logits(q, ids), _logits(ref, ids)
    assert not torch.equal(a, b)  # weights really were rounded
    # int8 per-row weights: logits stay close (relative to their spread)
    assert (a - b).abs().max() < 0.05 * b.std()
    with pytest.raises(ValueError, match="TorchAoConfig"):
        AutoModelForCausalLM.from_pretrained(folder, quantization_config={"quant_method": "bitsandbytes"})


def test_mixed_dtype_checkpoint_loads_into_one_dtype(tiny_model_dir, tmp_path, ids):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_model_dir, mixed)
    for f in mixed.glob("*.safetensors"):
        sd = load_file(f)
        # every other tensor in bf16, as some conversions store norms and embeddings
        sd = {k: (v.to(torch.bfloat16) if i % 2 else v) for i, (k, v) in enumerate(sorted(sd.items()))}
        save_file(sd, f)
    model, _ = jvlm.load(mixed)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.isfinite(model(ids).logits).all()
    hf = AutoModelForCausalLM.from_pretrained(str(mixed))
    assert {p.dtype for p in hf.parameters()} == {torch.float32}


def test_block_norm_eps_comes_from_the_block_config(tiny_model_dir):
    d = json.loads((tiny_model_dir / "config.json").read_text())
    bc = d["text_config"]["block_config"]
    bc["lnorm_config"]["eps"] = None  # null -> 1e-5 for block norms
    bc["attn_config"]["lnorm_config"]["eps"] = 1e-6
    cfg = jvlm.JinaVLMConfig.from_official_dict(d)
    assert cfg.text.norm_eps == 1e-5 and cfg.text.qk_norm_eps == 1e-6
    from jvlm.model.text import TextDecoder

    dec = TextDecoder(cfg.text)
    assert dec.layers[0].attn_lnorm.eps == 1e-5 and dec.ln_f.eps == 1e-5
    assert dec.layers[0].attn.q_lnorm.eps == 1e-6
    # and written back the same way
    again = jvlm.JinaVLMConfig.from_official_dict(cfg.to_official_dict())
    assert (again.text.norm_eps, again.text.qk_norm_eps) == (1e-5, 1e-6)


def test_from_pretrained_names_a_training_checkpoint_or_missing_folder_clearly(tmp_path):
    with pytest.raises((ModelFolderError, OSError)):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "nothing-here"))


def test_save_pretrained_round_trips(folder, tmp_path, ids):
    model = AutoModelForCausalLM.from_pretrained(folder)
    out = tmp_path / "saved"
    model.save_pretrained(out, max_shard_size="1MB")
    again = AutoModelForCausalLM.from_pretrained(str(out))
    assert torch.equal(_logits(model, ids), _logits(again, ids))
    assert (out / "model.safetensors.index.json").is_file()
