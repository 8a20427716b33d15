"""The image-text contract: token layout, BOS shift, image_input_idx, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jvlm.errors import PromptError
from jvlm.processing.image import image_layout
from jvlm.processing.processor import JinaVLMProcessor
from jvlm.tools.tokenizers import build_qwen_tokenizer, build_tiny_tokenizer, find_qwen_tiktoken


def _img(h, w, seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def proc():
    from jvlm.config import JinaVLMConfig

    return JinaVLMProcessor(build_tiny_tokenizer(), JinaVLMConfig.preset("tiny"))


def _check_bijection(ids: np.ndarray, idx: np.ndarray, im_patch: int):
    """Every non-negative idx points at a distinct <im_patch>, and every <im_patch> is hit."""
    targets = idx[idx >= 0]
    assert len(np.unique(targets)) == len(targets)
    assert set(targets.tolist()) == set(np.flatnonzero(ids == im_patch).tolist())


def test_bos_first_and_image_block_in_place_of_the_placeholder(proc):
    t = proc.token_ids
    enc = proc.encode("<|image|>What is this?", [_img(480, 640)])
    lay = image_layout(480, 640, proc.image_config)
    assert enc.input_ids[0] == t.bos
    assert enc.input_ids[1] == t.im_start
    block = enc.input_ids[1 : 1 + lay.n_block_tokens]
    assert block.count(t.im_patch) == lay.n_feature_tokens == 772
    assert t.image not in enc.input_ids  # the placeholder itself disappears
    assert len(enc.input_ids) == 1 + lay.n_block_tokens + len(proc.tokenizer("What is this?")["input_ids"])
    assert enc.images.shape == (5, 729, 588) and enc.image_input_idx.shape == (5, 196)
    _check_bijection(np.array(enc.input_ids), enc.image_input_idx, t.im_patch)
    # BOS shift: the thumbnail's first cell lands right after <im_start>, i.e. position 2
    assert enc.image_input_idx[0, 0] == 2


def test_two_images_each_map_onto_their_own_block(proc):
    t = proc.token_ids
    enc = proc.encode("A <|image|> and B <|image|> compare", [_img(64, 64), _img(200, 1200, 1)])
    ids = np.array(enc.input_ids)
    _check_bijection(ids, enc.image_input_idx, t.im_patch)
    n_first = image_layout(64, 64, proc.image_config).n_crops
    first = enc.image_input_idx[:n_first]
    second = enc.image_input_idx[n_first:]
    assert first[first >= 0].max() < second[second >= 0].min()


def test_images_without_placeholders_go_first_with_correct_offsets(proc):
    """The official processor points later images one token early here; we don't."""
    t = proc.token_ids
    enc = proc.encode("Describe both.", [_img(64, 64), _img(64, 64, 2)])
    _check_bijection(np.array(enc.input_ids), enc.image_input_idx, t.im_patch)


def test_placeholder_count_mismatch_is_a_prompt_error(proc):
    with pytest.raises(PromptError, match="2 <\\|image\\|> placeholders but 1 images"):
        proc.encode("<|image|><|image|>?", [_img(64, 64)])


def test_batch_left_pads_and_shifts_indices(proc):
    t = proc.token_ids
    batch = proc(text=["<|image|>short", "<|image|>a much longer question about this picture"],
                 images=[[_img(64, 64)], [_img(480, 640)]])
    ids, att, idx = batch["input_ids"], batch["attention_mask"], batch["image_input_idx"]
    assert ids.shape == att.shape and batch["images"].shape[:2] == (2, 5)
    assert att[0, 0] == 0 and att[1, 0] == 1  # the shorter row is left-padded
    # padding crops of the first row are all -1 pixels and have no positions
    assert torch.all(batch["images"][0, 2:] == -1) and torch.all(idx[0, 2:] < 0)
    for row in range(2):
        _check_bijection(ids[row].numpy(), idx[row].numpy(), t.im_patch)


def test_text_only_prompt_has_no_image_tensors(proc):
    batch = proc(text="hello")
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"][0, 0] == proc.token_ids.bos


def test_chat_template_places_images_and_generation_prompt(proc):
    msgs = [{"role": "user", "content": [{"type": "image", "image": _img(64, 64)}, {"type": "text", "text": "Hi"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert text.count("<|image|>") == 1 and text.rstrip().endswith("<|im_start|>assistant")
    batch = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                     return_tensors="pt")
    assert batch["images"].shape[1] == 2


def test_real_qwen_ids_and_bos_shift():
    try:
        find_qwen_tiktoken()
    except Exception as e:  # rank file absent
        pytest.skip(f"Qwen rank file not installed ({e}); pip install --no-deps qwen-agent")
    tok = build_qwen_tokenizer()
    from jvlm.config import JinaVLMConfig

    proc = JinaVLMProcessor(tok, JinaVLMConfig.preset("jina-vlm"))
    t = proc.token_ids
    assert (t.im_start, t.im_end, t.im_patch, t.im_col, t.image) == (151936, 151937, 151938, 151939, 151940)
    assert t.bos == 151643 and 151645 in t.eos
    enc = proc.encode("Hello world", [])
    assert enc.input_ids == [151643, 9707, 1879]
    enc = proc.encode("<|image|>Hello world", [_img(64, 64)])
    assert len(enc.input_ids) == 1 + 424 + 2  # 64x64 -> 424 block tokens (spec §4.2)
    _check_bijection(np.array(enc.input_ids), enc.image_input_idx, t.im_patch)
