"""A new model from a SigLIP and a Qwen3 checkpoint written by Transformers itself.

The mapped parts must compute what the Hugging Face models compute: decoder logits on text
equal Qwen3ForCausalLM's, and the tapped ViT states equal SiglipVisionModel's hidden states
for the same pixels, which checks the Conv2d -> Linear patch-embedding reordering.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from jvlm.errors import CheckpointError
from jvlm.train.init_from_parts import build_from_parts

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from transformers import (
        Qwen3Config,
        Qwen3ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    sig = SiglipVisionModel(SiglipVisionConfig(
        image_size=384, patch_size=14, hidden_size=32, num_hidden_layers=10, num_attention_heads=2,
        intermediate_size=64)).eval()  # 384 px / 14 px patches = 27 x 27, as in so400m-patch14-384
    qwen = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, rope_theta=1e6)).eval()
    # random norms and (text) biases would hide nothing: make every tensor non-trivial
    with torch.no_grad():
        for p in list(sig.parameters()) + list(qwen.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    sig.save_pretrained(root / "siglip")
    qwen.save_pretrained(root / "qwen3")
    return root, sig, qwen


@pytest.fixture(scope="module")
def built(parts):
    root, _, _ = parts
    return build_from_parts(root / "siglip", root / "qwen3", tokenizer="tiny", seed=0)


def _patchify(pixels: torch.Tensor, p: int = 14) -> torch.Tensor:
    """(1, 3, S, S) -> (1, 1, g*g, p*p*3) with each patch flattened in (dy, dx, channel) order."""
    _, c, s, _ = pixels.shape
    g = s // p
    x = pixels[:, :, : g * p, : g * p].permute(0, 2, 3, 1)  # (1, S, S, C)
    x = x.reshape(1, g, p, g, p, c).permute(0, 1, 3, 2, 4, 5)  # (1, gy, gx, dy, dx, C)
    return x.reshape(1, 1, g * g, p * p * c)


def test_decoder_logits_equal_qwen3_on_text(parts, built):
    _, _, qwen = parts
    model, _ = built
    ids = torch.randint(0, 1024, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.eval()(ids).logits
        ref = qwen(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_vit_taps_equal_siglip_hidden_states(parts, built):
    _, sig, _ = parts
    model, _ = built
    pixels = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.model.vision_model.encode(_patchify(pixels))[0, 0]  # (729, 2 * 32)
        states = sig(pixel_values=pixels, output_hidden_states=True).hidden_states  # embeddings first
    taps = model.cfg.vision.tap_indices()  # block outputs: our index i is HF's i + 1
    ref = torch.cat([states[i + 1][0] for i in taps], dim=-1)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_new_parts_are_fresh_and_the_tokenizer_fits(parts, built):
    _, _, qwen = parts
    model, processor = built
    assert processor.token_ids.im_start == 1024  # first new row = Qwen3's vocab_size
    new = model.model.language_model.embedding.new_embedding
    assert new.shape == (128, 64) and torch.unique(new, dim=0).shape[0] == 128
    head, embed = model.lm_head.weight, model.model.language_model.embedding.embedding
    assert torch.equal(head, qwen.model.embed_tokens.weight) and head.data_ptr() != embed.data_ptr()
    conn = dict(model.model.vision_model.vl_connector.named_parameters())
    assert (conn["pad_embed"] == 0).all() and conn["pooling.q_w.weight"].std() > 0


def test_the_built_model_saves_and_reloads_as_a_jvlm_folder(built, tmp_path):
    import jvlm
    from jvlm.loading import save_pretrained

    model, processor = built
    save_pretrained(model, tmp_path, processor=processor)
    again, _ = jvlm.load(tmp_path, dtype="fp32")
    ids = torch.tensor([[1, 5, 9, 300]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model.eval()(ids).logits)


def test_full_siglip_checkpoint_with_prefix_and_text_tower_is_accepted(parts, tmp_path):
    """google/siglip2-so400m-patch14-384 is a SiglipModel: 'vision_model.' keys plus a text tower."""
    root, _, _ = parts
    full = tmp_path / "siglip-full"
    full.mkdir()
    sd = {f"vision_model.{k}": v for k, v in load_file(str(root / "siglip" / "model.safetensors")).items()}
    sd["text_model.embeddings.token_embedding.weight"] = torch.zeros(4, 8)
    sd["logit_scale"] = torch.zeros(1)
    save_file(sd, str(full / "model.safetensors"))
    vision = json.loads((root / "siglip" / "config.json").read_text())
    (full / "config.json").write_text(json.dumps({"model_type": "siglip", "vision_config": vision}))
    model, _ = build_from_parts(full, root / "qwen3", tokenizer="tiny")
    assert model.cfg.vision.image_size == 378


def test_a_missing_tensor_is_named(parts, tmp_path):
    root, _, _ = parts
    broken = tmp_path / "qwen3-broken"
    broken.mkdir()
    sd = load_file(str(root / "qwen3" / "model.safetensors"))
    del sd["model.layers.1.mlp.gate_proj.weight"]
    save_file(sd, str(broken / "model.safetensors"))
    (broken / "config.json").write_text((root / "qwen3" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.gate_proj.weight"):
        build_from_parts(root / "siglip", broken, tokenizer="tiny")


def test_a_plain_qwen_tokenizer_gets_the_jvlm_tokens_on_the_new_rows(parts, tmp_path):
    """A Qwen3 folder's own tokenizer (no Jina-VLM tokens) is extended, not rejected."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root, _, _ = parts
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a small corpus of words for a test tokenizer"] * 10, trainer=trainer)
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "qwen-tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    _, processor = build_from_parts(root / "siglip", root / "qwen3", tokenizer=str(folder))
    ids = processor.token_ids
    assert (ids.im_start, ids.im_end, ids.im_patch, ids.im_col, ids.image) == (1024, 1025, 1026, 1027, 1028)
    assert ids.bos == tok.token_to_id("<|endoftext|>")


def test_a_training_config_can_start_from_the_parts(parts, tmp_path):
    import yaml

    from jvlm.train import train
    from jvlm.train.toy import write_toy_dataset

    root, _, _ = parts
    files = write_toy_dataset(tmp_path / "data", n_image=2, n_text=2, image_size=(32, 32))
    cfg = {"model": {"vision": str(root / "siglip"), "text": str(root / "qwen3"), "tokenizer": "tiny"},
           "data": {"sources": [{"name": k, "path": str(v)} for k, v in files.items()], "text_only_share": 0.5},
           "output_dir": str(tmp_path / "run"), "threads": 1,
           "optim": {"steps": 2, "global_batch_size": 2, "micro_batch_size": 1},
           "log": {"progress": False, "plot": False}}
    path = tmp_path / "stage1.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = train(path)
    assert result.steps == 2 and (result.final_model / "model.safetensors").is_file()
