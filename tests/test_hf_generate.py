"""Transformers' own ``generate`` drives jvlm's decoder: token for token the same as
``Qwen3ForCausalLM`` holding the same decoder weights, for every decoding option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config, Qwen3ForCausalLM
from transformers.generation.streamers import BaseStreamer

import jvlm
from release_folder import write_release_folder


# the auto classes registered (and mlx-vlm's AutoProcessor patch undone) for this module
pytestmark = pytest.mark.usefixtures("transformers_registered")


PROMPT = "Translate the word red into Turkish and then count"


def _qwen3_from(model) -> Qwen3ForCausalLM:
    """A Qwen3ForCausalLM with the jvlm decoder's weights (fused qkv and [value | gate] split)."""
    t = model.cfg.text
    cfg = Qwen3Config(
        vocab_size=t.base_rows, hidden_size=t.hidden_size, intermediate_size=t.mlp_size,
        num_hidden_layers=t.n_layers, num_attention_heads=t.n_heads, num_key_value_heads=t.n_kv_heads,
        head_dim=t.head_dim, rms_norm_eps=t.norm_eps, max_position_embeddings=t.max_sequence_length,
        rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta}, attention_bias=True,
        tie_word_embeddings=False, use_sliding_window=False,
    )
    assert t.norm_eps == t.qk_norm_eps  # Qwen3 has one epsilon
    q = Qwen3ForCausalLM(cfg).eval()
    lm = model.model.language_model
    qd, kd = t.n_heads * t.head_dim, t.n_kv_heads * t.head_dim
    sd = {"model.embed_tokens.weight": lm.embedding.embedding, "model.norm.weight": lm.ln_f.weight,
          "lm_head.weight": model.lm_head.weight}
    for i, layer in enumerate(lm.layers):
        p, a = f"model.layers.{i}.", layer.attn
        w = a.qkv_w.weight
        sd.update({
            p + "self_attn.q_proj.weight": w[:qd], p + "self_attn.k_proj.weight": w[qd:qd + kd],
            p + "self_attn.v_proj.weight": w[qd + kd:], p + "self_attn.q_proj.bias": a.q_b,
            p + "self_attn.k_proj.bias": a.k_b, p + "self_attn.v_proj.bias": a.v_b,
            p + "self_attn.o_proj.weight": a.out.weight, p + "self_attn.o_proj.bias": torch.zeros(t.hidden_size),
            p + "self_attn.q_norm.weight": a.q_lnorm.weight, p + "self_attn.k_norm.weight": a.k_lnorm.weight,
            p + "mlp.up_proj.weight": layer.ffn.up.weight[:t.mlp_size],
            p + "mlp.gate_proj.weight": layer.ffn.up.weight[t.mlp_size:],
            p + "mlp.down_proj.weight": layer.ffn.down.weight,
            p + "input_layernorm.weight": layer.attn_lnorm.weight,
            p + "post_attention_layernorm.weight": layer.ffn_lnorm.weight,
        })
    missing, unexpected = q.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    assert not missing and not unexpected
    return q


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(jvlm under Transformers, Qwen3ForCausalLM, processor), each loaded from its own folder."""
    root = tmp_path_factory.mktemp("gen")
    folder = write_release_folder(root / "jvlm", seed=3)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    qwen_dir = root / "qwen3"
    _qwen3_from(model).save_pretrained(qwen_dir)
    model.generation_config.save_pretrained(qwen_dir)
    qwen = AutoModelForCausalLM.from_pretrained(str(qwen_dir), dtype=torch.float32)
    assert type(qwen).__name__ == "Qwen3ForCausalLM"
    _, processor = jvlm.load(folder)
    return model, qwen.eval(), processor


@pytest.fixture(scope="module")
def prompt_ids(pair):
    _, _, processor = pair
    return processor.tokenizer(PROMPT, return_tensors="pt")["input_ids"]


def _both(pair, ids, **kw):
    model, qwen, _ = pair
    a = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    b = qwen.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    return a, b


def test_same_logits_as_qwen3(pair, prompt_ids):
    model, qwen, _ = pair
    with torch.no_grad():
        a, b = model(prompt_ids).logits, qwen(prompt_ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [
    {"do_sample": False, "max_new_tokens": 12},
    {"do_sample": False, "num_beams": 4, "max_new_tokens": 8},
    {"do_sample": False, "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 6},
    {"do_sample": False, "repetition_penalty": 1.8, "max_new_tokens": 12},
    {"do_sample": False, "no_repeat_ngram_size": 2, "max_new_tokens": 12},
], ids=["greedy", "beam4", "beam4-two-returned", "repetition-penalty", "no-repeat-ngram"])
def test_generate_matches_qwen3_token_for_token(pair, prompt_ids, options):
    a, b = _both(pair, prompt_ids, **options)
    assert a.shape[1] > prompt_ids.shape[1]
    assert torch.equal(a, b)


def test_options_change_the_output(pair, prompt_ids):
    """The options above are not silently ignored: each gives a different continuation."""
    model, _, _ = pair
    greedy = model.generate(prompt_ids, do_sample=False, max_new_tokens=12)
    penal = model.generate(prompt_ids, do_sample=False, max_new_tokens=12, repetition_penalty=1.8)
    ngram = model.generate(prompt_ids, do_sample=False, max_new_tokens=12, no_repeat_ngram_size=2)
    assert not torch.equal(greedy, penal) or not torch.equal(greedy, ngram)


def test_stop_strings_and_min_new_tokens_match_qwen3(pair, prompt_ids):
    model, _, processor = pair
    n = prompt_ids.shape[1]
    greedy = model.generate(prompt_ids, do_sample=False, max_new_tokens=12)
    new = greedy[0, n:].tolist()
    # stop at the text of a later new token that decodes to plain letters
    k = next(i for i in range(1, len(new)) if processor.tokenizer.decode(new[i:i + 1]).strip().isalpha())
    stop = processor.tokenizer.decode(new[k:k + 1]).strip()
    a, b = _both(pair, prompt_ids, do_sample=False, max_new_tokens=12, stop_strings=[stop],
                 tokenizer=processor.tokenizer)
    assert torch.equal(a, b) and a.shape[1] < greedy.shape[1]
    assert stop in processor.tokenizer.decode(a[0, n:])
    # make the third new token an EOS: without min_new_tokens it stops there, with 8 it goes on
    eos = new[2]
    a, _ = _both(pair, prompt_ids, do_sample=False, max_new_tokens=12, eos_token_id=eos)
    assert a.shape[1] <= n + 3
    a, b = _both(pair, prompt_ids, do_sample=False, max_new_tokens=12, eos_token_id=eos, min_new_tokens=8)
    assert torch.equal(a, b) and a.shape[1] >= n + 8


def test_generation_config_streamer_and_scores(pair, prompt_ids):
    model, qwen, _ = pair
    gc = GenerationConfig(do_sample=False, max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                          eos_token_id=model.generation_config.eos_token_id,
                          pad_token_id=model.generation_config.pad_token_id)

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer = Collect()
    out = model.generate(prompt_ids, generation_config=gc, streamer=streamer)
    ref = qwen.generate(prompt_ids, generation_config=gc)
    assert torch.equal(out.sequences, ref.sequences)
    assert len(out.scores) == out.sequences.shape[1] - prompt_ids.shape[1]
    for s, r in zip(out.scores, ref.scores):
        torch.testing.assert_close(s, r, rtol=1e-4, atol=1e-4)
    assert streamer.ended and streamer.chunks[0] == prompt_ids[0].tolist()
    assert sum(streamer.chunks[1:], []) == out.sequences[0, prompt_ids.shape[1]:].tolist()


def test_sampling_is_seeded_and_follows_temperature(pair, prompt_ids):
    model, _, _ = pair
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(prompt_ids, do_sample=True, temperature=1.3, top_k=50, top_p=0.95,
                                   max_new_tokens=10))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(7)
    cold = model.generate(prompt_ids, do_sample=True, temperature=1e-4, max_new_tokens=10)
    greedy = model.generate(prompt_ids, do_sample=False, max_new_tokens=10)
    assert torch.equal(cold, greedy)


def test_model_basics(pair):
    model, _, _ = pair
    n = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == n > 0
    assert model.can_generate()
    assert model.generation_config.do_sample is False
    assert set(model.generation_config.eos_token_id) == set(model.stop_token_ids)


def test_image_prompts_through_generate_match_the_engine(pair):
    model, _, processor = pair
    img = Image.fromarray((np.random.RandomState(5).rand(120, 200, 3) * 255).astype("uint8"))
    msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "What?"}]}]
    inputs = processor.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    core, _ = jvlm.load(model.config._name_or_path)
    ref = jvlm.generate(core, **inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, ref)
    # the image is read: other pixels, other first logits
    with torch.no_grad():
        a = model(**inputs).logits[0, -1]
        b = model(**{**inputs, "images": inputs["images"].flip(-1)}).logits[0, -1]
    assert not torch.allclose(a, b)


def test_left_padded_batch_matches_single_prompts(pair):
    model, _, processor = pair
    texts = ["red", "The colour of the sea and the sky is"]
    batch = processor(text=texts, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    for i, text in enumerate(texts):
        single = processor(text=text, return_tensors="pt")
        ref = model.generate(**single, max_new_tokens=6, do_sample=False)
        new_b = out[i, batch["input_ids"].shape[1]:].tolist()
        new_s = ref[0, single["input_ids"].shape[1]:].tolist()
        assert new_b[:len(new_s)] == new_s
