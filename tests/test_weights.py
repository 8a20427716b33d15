"""Checkpoint I/O: official layout, strictness, sharding, MLX names, no unpickling."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import jvlm
from jvlm import weights
from jvlm.errors import CheckpointError, ModelFolderError
from jvlm.layouts.mlx import official_to_mlx
from jvlm.loading import load_model


def _official_keys_sample(sd):
    return [k for k in sd if "layers.0." in k or "layers" not in k]


def test_written_checkpoint_uses_the_official_key_names(tiny_model_dir):
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    expected = {
        "model.vision_model.patch_embed.proj.weight", "model.vision_model.pos_embed",
        "model.vision_model.layers.0.attn.qkv_w.weight", "model.vision_model.layers.0.attn.q_b",
        "model.vision_model.layers.0.attn_lnorm.bias", "model.vision_model.post_lnorm.weight",
        "model.vision_model.vl_connector.pad_embed", "model.vision_model.vl_connector.pooling.q_w.weight",
        "model.vision_model.vl_connector.pooling.kv_w.weight", "model.vision_model.vl_connector.pooling.v_b",
        "model.vision_model.vl_connector.projector.up.weight", "model.language_model.embedding.embedding",
        "model.language_model.embedding.new_embedding", "model.language_model.layers.0.attn.qkv_w.weight",
        "model.language_model.layers.0.attn.k_b", "model.language_model.layers.0.attn.q_lnorm.weight",
        "model.language_model.layers.0.ffn.up.weight", "model.language_model.ln_f.weight", "lm_head.weight",
    }
    assert expected <= set(sd)
    cfg = jvlm.JinaVLMConfig.preset("tiny")
    v, t = cfg.vision, cfg.text
    assert sd["model.vision_model.layers.0.attn.qkv_w.weight"].shape == (3 * v.hidden_size, v.hidden_size)
    assert sd["model.vision_model.vl_connector.pad_embed"].shape == (2, 2 * v.hidden_size)
    assert sd["model.language_model.embedding.new_embedding"].shape == (128, t.hidden_size)
    assert sd["lm_head.weight"].shape == (t.vocab_size, t.hidden_size)


def test_round_trip_is_bit_exact_and_loads_with_no_missing_keys(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    weights.save_official(model, tmp_path)
    shutil.copy(tiny_model_dir / "config.json", tmp_path)
    a = load_file(str(tiny_model_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = load_model(tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


def test_sharded_checkpoint_loads(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    weights.save_official(model, tmp_path, max_shard_bytes=200_000)
    shutil.copy(tiny_model_dir / "config.json", tmp_path)
    index = json.loads((tmp_path / weights.INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_model(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def _copy_with(tiny_model_dir, tmp_path, edit):
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    edit(sd)
    save_file(sd, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_missing_key_is_named(tiny_model_dir, tmp_path):
    d = _copy_with(tiny_model_dir, tmp_path, lambda sd: sd.pop("model.language_model.layers.1.attn.v_b"))
    with pytest.raises(CheckpointError, match=r"missing: model\.language_model\.layers\.1\.attn\.v_b"):
        load_model(d)


def test_wrong_shape_and_unexpected_keys_are_named_in_one_error(tiny_model_dir, tmp_path):
    def edit(sd):
        sd["model.vision_model.pos_embed"] = torch.zeros(10, 3)
        sd["model.vision_model.extra.weight"] = torch.zeros(1)

    d = _copy_with(tiny_model_dir, tmp_path, edit)
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    msg = str(e.value)
    assert "model.vision_model.pos_embed: checkpoint (10, 3)" in msg
    assert "unexpected: model.vision_model.extra.weight" in msg


def test_lm_head_is_tied_only_when_absent_and_asked_for(tiny_model_dir, tmp_path):
    d = _copy_with(tiny_model_dir, tmp_path, lambda sd: sd.pop("lm_head.weight"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["tie_word_embeddings"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    m = load_model(d)
    assert m.lm_head.weight.data_ptr() == m.model.language_model.embedding.embedding.data_ptr()
    cfg["text_config"]["tie_word_embeddings"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lm_head"):
        load_model(d)
    # stored lm_head wins even when the config asks for tying (released checkpoint case)
    m2 = load_model(tiny_model_dir)
    assert m2.lm_head.weight.data_ptr() != m2.model.language_model.embedding.embedding.data_ptr()


def test_pickle_files_are_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(jvlm.JinaVLMConfig.preset("tiny").to_official_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelFolderError, match="never unpickles"):
        load_model(tmp_path)


def test_missing_folder_and_missing_shard_are_clear(tiny_model_dir, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_model(tmp_path / "nope")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, tmp_path)
    (tmp_path / weights.INDEX_FILE).write_text(json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelFolderError, match="missing"):
        load_model(tmp_path)


def test_truncated_safetensors_is_a_typed_error(tiny_model_dir, tmp_path):
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises((CheckpointError, ModelFolderError)):
        load_model(tmp_path)


def test_mlx_layout_loads_to_the_same_model(tiny_model_dir, tmp_path):
    ref = load_model(tiny_model_dir)
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    mlx = official_to_mlx(sd)
    assert "vl_connector.pooling.kv.bias" in mlx and "vision_model.post_norm.weight" in mlx
    assert "language_model.layers.0.ffn.gate_up.weight" in mlx
    # The MLX conversion stores no text q/k/v biases when they are zero; they must load as zeros.
    for k in list(mlx):
        if k.startswith("language_model.") and k.endswith("attn.qkv.bias"):
            mlx.pop(k)
    mlx["language_model.lm_head.weight"] = mlx.pop("lm_head.weight")
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path)
    save_file(mlx, str(tmp_path / "model.safetensors"))
    m = load_model(tmp_path)
    for (k, a), b in zip(ref.state_dict().items(), m.state_dict().values()):
        if k.startswith("model.language_model.") and k.endswith(("q_b", "k_b", "v_b")):
            assert torch.count_nonzero(b) == 0
        else:
            assert torch.equal(a, b), k
