"""Training rows -> examples: loss only on assistant tokens, inference-identical inputs, bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jvlm.config import JinaVLMConfig
from jvlm.processing.processor import JinaVLMProcessor
from jvlm.tools.tokenizers import build_tiny_tokenizer
from jvlm.train.data import (
    IMAGE,
    TEXT,
    BadRows,
    ExampleEncoder,
    RowError,
    collate,
    encode_ref,
    index_source,
)
from jvlm.train.toy import draw_shape


@pytest.fixture(scope="module")
def proc():
    return JinaVLMProcessor(build_tiny_tokenizer(), JinaVLMConfig.preset("tiny"))


@pytest.fixture()
def image_dir(tmp_path):
    import random

    (tmp_path / "img").mkdir()
    draw_shape("red", "circle", (64, 48), random.Random(0)).save(tmp_path / "img" / "a.png")
    return tmp_path


def _row(answer="A red circle.", image="img/a.png"):
    user = [{"type": "image", "image": image}, {"type": "text", "text": "What is this?"}] if image else "Hi there"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _learned_text(proc, ex) -> str:
    return proc.tokenizer.decode([int(t) for t in ex.labels if t >= 0], skip_special_tokens=False)


def test_loss_covers_exactly_the_assistant_reply_and_its_end_token(proc, image_dir):
    enc = ExampleEncoder(proc, max_length=4096)
    ex = enc.encode(_row(), image_dir)
    assert _learned_text(proc, ex) == "A red circle.<|im_end|>"
    ids = np.asarray(ex.encoded.input_ids)
    lab = ex.labels
    # label[t] is the token after input[t]; the last position predicts nothing
    on = lab >= 0
    assert (lab[:-1][on[:-1]] == ids[1:][on[:-1]]).all() and lab[-1] == -1
    # no image-structure token and nothing of the user turn is ever a target
    structural = set(proc.token_ids.structural())
    assert not structural & set(lab[on].tolist())
    assert "What is this" not in _learned_text(proc, ex)


def test_every_assistant_turn_of_a_multi_turn_conversation_is_learned(proc, image_dir):
    row = _row("A red circle.")
    row["messages"] += [{"role": "user", "content": "And its colour?"}, {"role": "assistant", "content": "Red."}]
    ex = ExampleEncoder(proc, 4096).encode(row, image_dir)
    assert _learned_text(proc, ex) == "A red circle.<|im_end|>Red.<|im_end|>"


def test_inputs_are_exactly_what_inference_builds_for_the_same_conversation(proc, image_dir):
    """Same chat template, same image processing: the training ids are the inference prompt
    plus the reply, and the crops are the processor's own."""
    ex = ExampleEncoder(proc, 4096).encode(_row(), image_dir)
    path = str(image_dir / "img" / "a.png")
    conv = [{"role": "user", "content": [{"type": "image", "image": path}, {"type": "text", "text": "What is this?"}]}]
    prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
    n = prompt["input_ids"].shape[1]
    assert ex.encoded.input_ids[:n] == prompt["input_ids"][0].tolist()
    assert np.array_equal(ex.encoded.images, prompt["images"][0].numpy())
    assert np.array_equal(ex.encoded.image_input_idx, prompt["image_input_idx"][0].numpy())


def test_collate_left_pads_labels_with_the_inputs(proc, image_dir):
    enc = ExampleEncoder(proc, 4096)
    a, b = enc.encode(_row(), image_dir), enc.encode(_row(image=None, answer="Hello to you too."), image_dir)
    batch = collate(proc, [a, b])
    length = batch["input_ids"].shape[1]
    assert batch["labels"].shape == (2, length)
    short = b.n_tokens
    assert torch.equal(batch["labels"][1, length - short:], torch.from_numpy(b.labels))
    assert (batch["labels"][1, : length - short] == -1).all()
    assert batch["images"].shape[0] == 2  # the text-only row gets padding crops


def test_bad_rows_are_skipped_with_their_reason(proc, image_dir):
    (image_dir / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows = [
        json.dumps(_row()),  # fine
        "{not json",  # malformed at indexing
        json.dumps({"text": "no messages"}),  # malformed at indexing
        json.dumps(_row(image="img/missing.png")),
        json.dumps(_row(image="img/broken.png")),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),  # nothing to learn
        json.dumps(_row(answer="word " * 300)),  # too long for max_length below
        json.dumps({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    ]
    path = image_dir / "rows.jsonl"
    path.write_text("\n".join(rows) + "\n")
    bad = BadRows()
    src = index_source("mixed", path, bad)
    assert bad.counts == {"mixed": {"malformed": 2}}
    assert src.count(IMAGE) == 4 and src.count(TEXT) == 2
    enc = ExampleEncoder(proc, max_length=600)
    reasons = {}
    for cat in (TEXT, IMAGE):
        for i in range(src.count(cat)):
            try:
                encode_ref(enc, src, cat, i)
                reasons[src.line(cat, i)] = "ok"
            except RowError as e:
                reasons[src.line(cat, i)] = e.reason
    assert reasons == {1: "ok", 4: "missing_image", 5: "bad_image", 6: "no_target", 7: "too_long", 8: "malformed"}


def test_assistant_spans_are_found_in_non_latin_text(proc, image_dir):
    row = {"messages": [{"role": "system", "content": "Antworte kurz."},
                        {"role": "user", "content": "这张图片里有什么？"},
                        {"role": "assistant", "content": "桌子上有三个红色的苹果。"}]}
    ex = ExampleEncoder(proc, 4096).encode(row, image_dir)
    assert ex.text_only and _learned_text(proc, ex) == "桌子上有三个红色的苹果。<|im_end|>"
