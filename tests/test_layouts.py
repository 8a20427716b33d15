"""The checkpoint-layout seam: every registered adapter converts both ways, is detected from
its keys, and a layout name that is not registered is refused with the known ones listed."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
from safetensors.torch import load_file

import jvlm
from jvlm import layouts
from jvlm.errors import CheckpointError
from jvlm.layouts import parts
from jvlm.layouts.base import StateDictAdapter

WRITABLE = [a for a in layouts.ADAPTERS.values() if a.writes]


@pytest.fixture(scope="module")
def cfg():
    return jvlm.JinaVLMConfig.preset("tiny")


@pytest.fixture(scope="module")
def official_sd(tiny_model_dir):
    """The tiny checkpoint with every text q/k/v bias non-zero, so none can be dropped unseen."""
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(3)
    for k, t in sd.items():
        if k.startswith("model.language_model.") and k.endswith(("q_b", "k_b", "v_b")):
            sd[k] = torch.randn(t.shape, generator=gen).to(t.dtype)
    return sd


def _as_parts(sd: dict[str, torch.Tensor], cfg) -> tuple[dict, dict]:
    """Official tensors as a SigLIP and a Qwen3 state dict, by running the parts tables backwards
    (splitting what they concatenate, turning the Linear patch embedding back into a Conv2d)."""
    v, t = cfg.vision, cfg.text
    splits = {
        ("model.vision_model.", "layers.{L}.attn.qkv_w.weight"): [v.n_heads * v.head_dim] * 3,
        ("model.language_model.", "layers.{L}.attn.qkv_w.weight"):
            [t.n_heads * t.head_dim, t.n_kv_heads * t.head_dim, t.n_kv_heads * t.head_dim],
        ("model.language_model.", "layers.{L}.ffn.up.weight"): [t.mlp_size, t.mlp_size],
    }
    out = []
    for table, prefix, n_layers in ((parts.SIGLIP_TABLE, "model.vision_model.", v.n_layers),
                                    (parts.QWEN3_TABLE, "model.language_model.", t.n_layers)):
        part = {}
        for ours, theirs, combine in table:
            for layer in range(n_layers) if "{L}" in ours else [None]:
                tensor = sd[prefix + ours.replace("{L}", str(layer))]
                names = [n.replace("{L}", str(layer)) for n in theirs]
                if len(names) > 1:
                    part.update(zip(names, tensor.split(splits[(prefix, ours)])))
                elif combine is None:
                    part[names[0]] = tensor
                else:  # the patch embedding: [W, p*p*C] over (dy, dx, c) -> [W, C, p, p]
                    p = v.patch_size
                    part[names[0]] = tensor.reshape(tensor.shape[0], p, p, -1).permute(0, 3, 1, 2)
        out.append(part)
    return out[0], out[1]


def test_every_layout_module_is_registered_once():
    found = [importlib.import_module(f"jvlm.layouts.{m.name}") for m in pkgutil.iter_modules(layouts.__path__)]
    adapters = [m.ADAPTER for m in found if hasattr(m, "ADAPTER")]
    assert {id(a) for a in adapters} == {id(a) for a in layouts.ADAPTERS.values()}
    assert all(isinstance(a, StateDictAdapter) and layouts.ADAPTERS[a.name] is a for a in adapters)
    assert {a.name for a in WRITABLE} >= {"official", "mlx"}


@pytest.mark.parametrize("adapter", WRITABLE, ids=lambda a: a.name)
def test_writable_layouts_round_trip_exactly(adapter, official_sd, cfg):
    back = adapter.to_official(adapter.from_official(official_sd, cfg), cfg)
    assert back.keys() == official_sd.keys()
    assert all(torch.equal(back[k], official_sd[k]) for k in official_sd)


def test_zero_text_biases_left_out_of_mlx_come_back_as_zeros_of_the_model_dtype(official_sd, cfg):
    sd = {k: (torch.zeros_like(t) if k.startswith("model.language_model.") and k.endswith(("q_b", "k_b", "v_b"))
              else t).to(torch.bfloat16) for k, t in official_sd.items()}
    mlx = layouts.get("mlx").from_official(sd, cfg)
    assert not [k for k in mlx if k.startswith("language_model.") and k.endswith("qkv.bias")]
    back = layouts.to_official(mlx, cfg)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) and back[k].dtype == torch.bfloat16 for k in sd)


def test_parts_map_to_the_official_tensors_they_came_from(official_sd, cfg):
    vision, text = _as_parts(official_sd, cfg)
    got = layouts.to_official(parts.ADAPTER.join(vision, text), cfg, layout="parts")
    new = ("model.vision_model.vl_connector.", "model.language_model.embedding.new_embedding")
    wanted = {k: t for k, t in official_sd.items()
              if not k.startswith(new) and not (k.startswith("model.language_model.") and k.endswith(("q_b", "k_b", "v_b")))}
    zero_biases = {k for k in got if k.startswith("model.language_model.") and k.endswith(("q_b", "k_b", "v_b"))}
    assert got.keys() == wanted.keys() | zero_biases  # Qwen3 without attention_bias: zeros
    assert all(torch.equal(got[k], wanted[k]) for k in wanted if k != "lm_head.weight")
    assert all(torch.count_nonzero(got[k]) == 0 for k in zero_biases)
    # a tied Qwen3 head (no lm_head.weight) becomes an untied copy of the embedding
    assert torch.equal(got["lm_head.weight"], official_sd["model.language_model.embedding.embedding"])
    assert got["lm_head.weight"].data_ptr() != got["model.language_model.embedding.embedding"].data_ptr()


def test_parts_name_every_missing_and_unknown_tensor(official_sd, cfg):
    vision, text = _as_parts(official_sd, cfg)
    del text["model.layers.1.mlp.gate_proj.weight"]
    text["model.layers.0.mlp.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"Qwen3 .*1 missing: model\.layers\.1\.mlp\.gate_proj\.weight"
                                              r" \| \d+ not understood: model\.layers\.0\.mlp\.extra\.weight"):
        layouts.to_official(parts.ADAPTER.join(vision, text), cfg)
    with pytest.raises(CheckpointError, match=r"belong to neither part .*: stray\.weight"):
        parts.ADAPTER.to_official({**parts.ADAPTER.join(vision, text), "stray.weight": torch.zeros(1)}, cfg)


def test_detection_picks_each_layout(official_sd, cfg):
    for adapter in WRITABLE:
        assert layouts.detect(adapter.from_official(official_sd, cfg)) is adapter
    assert layouts.detect(parts.ADAPTER.join(*_as_parts(official_sd, cfg))) is parts.ADAPTER
    # a file with official and MLX names is official: the strays are named by the strict check
    assert layouts.detect(["model.vision_model.pos_embed", "vision_model.pos_embed"]) is layouts.get("official")


def test_unrecognised_keys_name_every_known_layout():
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout") as e:
        layouts.detect(["encoder.weight"])
    assert all(f"{name} (" in str(e.value) for name in layouts.ADAPTERS)


def test_an_unknown_layout_name_lists_the_known_ones(official_sd, cfg):
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout 'gguf'; known layouts: official, mlx, parts"):
        layouts.to_official(official_sd, cfg, layout="gguf")


def test_a_read_only_layout_says_it_cannot_be_written(official_sd, cfg):
    with pytest.raises(CheckpointError, match="'parts' checkpoint layout can be read but not written"):
        layouts.get("parts").from_official(official_sd, cfg)
