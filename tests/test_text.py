"""Tokenizer, special-token ids and chat template (jvlm.processing.text).

The Qwen tests need Qwen's rank file from the `qwen-agent` wheel
(`pip install --no-deps qwen-agent`); they skip, saying so, only when it cannot be found.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from jvlm.config import JinaVLMConfig, SpecialTokens
from jvlm.errors import ModelFolderError, PromptError, TokenizerError
from jvlm.processing.text import (
    DEFAULT_CHAT_TEMPLATE,
    STRUCTURAL_TOKENS,
    load_tokenizer,
    render_chat,
    save_tokenizer,
    special_token_ids,
)
from jvlm.tools import tokenizers as T
from jvlm.tools.tokenizers import build_qwen_tokenizer, build_tiny_tokenizer, find_qwen_tiktoken


@pytest.fixture(scope="module")
def qwen():
    try:
        path = find_qwen_tiktoken()
    except TokenizerError as exc:
        pytest.skip(f"Qwen tokenizer unavailable: {exc}")
    return build_qwen_tokenizer(path)


@pytest.fixture
def tiny():
    return build_tiny_tokenizer()


MULTILINGUAL = [
    "Hello world",
    "今天天气很好，我们去公园散步吧。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "I ❤️ 🦀 and 👩🏽‍💻, really 🙂!",
    "Olá, ação e coração; Привет, мир! İstanbul'da güzel bir gün.",
    "line one\n\n\tindented  two spaces\r\nend  ",
    "x = [1, 2, 3]  # 3.14159 <not a token>",
]


# ------------------------------------------------------------------------------- Qwen ids
@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [9707, 1879]),
        ("What is 2+2?", [3838, 374, 220, 17, 10, 17, 30]),  # digits split one by one
        ("How many r in strawberry.", [4340, 1657, 435, 304, 72600, 13]),
        (
            "您好, 请从 1 数到 10000000.",
            [111308, 11, 220, 14880, 45181, 220, 16, 47685, 26939, 220, 16, 15, 15, 15, 15, 15, 15, 15, 13],
        ),
        (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
            [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198],
        ),
    ],
)
def test_qwen_matches_published_token_ids(qwen, text, ids):
    # Ids as printed by Qwen2/Qwen3 users; a wrong merge order or split regex changes them.
    assert qwen.encode(text) == ids


def test_qwen_added_tokens_sit_on_qwen3_ids(qwen):
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<|vision_start|>": 151652, "<tool_response>": 151665, "<think>": 151667, "</think>": 151668}
    for token, tid in expected.items():
        assert qwen.encode(token) == [tid], token
    # One tokenizer id per row of embedding + new_embedding: nothing out of range, nothing missing.
    assert len(qwen) == JinaVLMConfig.preset("jina-vlm").text.total_rows == 152_064


def test_qwen_structural_ids_follow_spec_layout(qwen):
    cfg = JinaVLMConfig.preset("jina-vlm")
    ids = special_token_ids(qwen)
    assert (ids.im_start, ids.im_end, ids.im_patch, ids.im_col, ids.image, ids.im_slice) == tuple(range(151936, 151942))
    assert ids.bos == cfg.bos_token_id == 151643  # no BOS in Qwen -> EOS (Corrections 6)
    assert ids.eos == (151643, 151645)
    assert ids.pad == 151643
    assert ids.image == cfg.image_token_index
    assert set(ids.structural()).isdisjoint(ids.eos)
    assert qwen.convert_tokens_to_ids("<jvlm_extra_127>") == 152063
    # Inside running text each structural token stays one id (the processor splices on them).
    assert qwen.encode("a<im_start><im_patch><im_col><im_end>b")[1:5] == [151936, 151938, 151939, 151937]


def test_qwen_build_is_cached_in_process_and_on_disk(qwen, monkeypatch):
    def no_rebuild(*_):
        raise AssertionError("the tokenizer was rebuilt instead of read from the cache")

    monkeypatch.setattr(T, "_build_qwen_json", no_rebuild)
    assert build_qwen_tokenizer().encode("Hello world") == [9707, 1879]  # lru_cache hit
    T._qwen_tokenizer_file.cache_clear()  # as in a new process: only the disk copy remains
    assert build_qwen_tokenizer().encode("Hello world") == [9707, 1879]


def test_rank_file_is_located_without_importing_qwen_agent(qwen, monkeypatch):
    monkeypatch.delenv(T.TIKTOKEN_ENV, raising=False)
    sys.modules.pop("qwen_agent", None)
    assert find_qwen_tiktoken().name == "qwen.tiktoken"
    assert "qwen_agent" not in sys.modules  # importing it would need dependencies we never install


def test_missing_rank_file_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv(T.TIKTOKEN_ENV, str(tmp_path / "nope.tiktoken"))
    with pytest.raises(TokenizerError, match="pip install --no-deps qwen-agent"):
        build_qwen_tokenizer()


def test_wrong_rank_file_is_refused(tmp_path):
    bad = tmp_path / "other.tiktoken"
    bad.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(TokenizerError, match="151643"):
        T._read_ranks(bad)


# ------------------------------------------------------------------------- both tokenizers
@pytest.mark.parametrize("kind", ["qwen", "tiny"])
@pytest.mark.parametrize("text", MULTILINGUAL)
def test_decode_inverts_encode(kind, text, request):
    tok = request.getfixturevalue(kind)
    ids = tok.encode(text)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", ["qwen", "tiny"])
def test_text_is_nfc_normalised_like_qwen(kind, request):
    tok = request.getfixturevalue(kind)
    assert tok.decode(tok.encode("cafe\u0301")) == "caf\u00e9"


# ------------------------------------------------------------------------------------ tiny
def test_tiny_layout_matches_tiny_preset(tiny):
    text = JinaVLMConfig.preset("tiny").text
    assert len(tiny) == text.total_rows == 1152
    assert [tiny.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [1021, 1022, 1023]
    ids = special_token_ids(tiny)
    assert (ids.im_start, ids.im_end, ids.im_patch, ids.im_col, ids.image, ids.im_slice) == tuple(range(1024, 1030))
    assert ids.bos == 1021 and ids.eos == (1021, 1023) and ids.pad == 1021
    assert tiny.convert_tokens_to_ids("<jvlm_extra_127>") == 1151
    # Ordinary text never produces an extra-token id: the model's new_embedding rows stay image-only.
    assert max(tiny.encode(" ".join(MULTILINGUAL))) < 1021


def test_tiny_splits_digits_like_qwen(tiny):
    assert tiny.tokenize("2024") == ["2", "0", "2", "4"]


def test_tiny_build_is_deterministic(tiny):
    first = tiny.backend_tokenizer.to_str()
    T._tiny_tokenizer_json.cache_clear()
    assert build_tiny_tokenizer().backend_tokenizer.to_str() == first


@pytest.mark.slow
def test_tiny_build_is_identical_across_processes(tiny):
    # Rust hash maps are seeded per process; a checkpoint's tokenizer must not depend on it.
    code = "import hashlib; from jvlm.tools.tokenizers import build_tiny_tokenizer as b; " \
           "print(hashlib.sha256(b().backend_tokenizer.to_str().encode()).hexdigest())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(tiny.backend_tokenizer.to_str().encode()).hexdigest()


# --------------------------------------------------------------------------- special ids
def test_missing_structural_token_is_named(tiny, tmp_path):
    data = json.loads(tiny.backend_tokenizer.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<im_patch>"]
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    broken = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token="<|endoftext|>")
    with pytest.raises(TokenizerError, match="<im_patch>"):
        special_token_ids(broken)


def test_custom_token_names_are_checked(tiny):
    with pytest.raises(TokenizerError, match="<im_column>"):
        special_token_ids(tiny, SpecialTokens(im_col="<im_column>"))


def test_im_slice_is_optional(tiny):
    ids = special_token_ids(tiny, SpecialTokens(im_slice="<no_such_slice>"))
    assert ids.im_slice is None
    assert ids.structural() == (1024, 1025, 1026, 1027, 1028)


def test_structural_names_come_from_config():
    assert STRUCTURAL_TOKENS == ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>", "<im_slice>")


# ------------------------------------------------------------------------- chat template
USER = "<|im_start|>user\n"
GEN = "<|im_start|>assistant\n"


def test_user_image_and_text(tiny):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    assert render_chat(tiny, msgs) == USER + "<|image|>What is this?<|im_end|>\n" + GEN


def test_two_images_in_order_in_any_image_format(tiny):
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "Compare "},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": " and "},
        {"type": "image", "image": "b.png"},
    ]}]
    assert render_chat(tiny, msgs) == USER + "Compare <|image|> and <|image|><|im_end|>\n" + GEN


def test_text_only_prompt(tiny):
    out = render_chat(tiny, [{"role": "user", "content": "Hi there"}])
    assert out == USER + "Hi there<|im_end|>\n" + GEN


def test_multi_turn_with_system(tiny):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Sure?"},
    ]
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n" + USER + "<|image|>Colour?<|im_end|>\n"
                + "<|im_start|>assistant\nRed.<|im_end|>\n" + USER + "Sure?<|im_end|>\n")
    assert render_chat(tiny, msgs, add_generation_prompt=False) == expected
    assert render_chat(tiny, msgs) == expected + GEN


def test_rendered_prompt_has_no_bos_and_one_id_per_image(tiny):
    ids = special_token_ids(tiny)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]}]
    encoded = tiny.encode(render_chat(tiny, msgs))
    assert encoded[0] == tiny.convert_tokens_to_ids("<|im_start|>")  # the processor adds BOS, not the template
    assert encoded.count(ids.image) == 2


@pytest.mark.parametrize("msgs, what", [
    ([{"role": "tool", "content": "x"}], "tool"),
    ([{"role": "user", "content": [{"type": "video"}]}], "video"),
])
def test_unsupported_roles_and_parts_raise_prompt_error(tiny, msgs, what):
    with pytest.raises(PromptError, match=what):
        render_chat(tiny, msgs)


# ------------------------------------------------------------------------------ folders
def test_save_load_round_trip_keeps_ids_and_template(tiny, tmp_path):
    template = DEFAULT_CHAT_TEMPLATE.replace("<|im_start|>assistant\\n", "<|im_start|>assistant\\nSure:")
    save_tokenizer(tiny, tmp_path, chat_template=template)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}
    loaded = load_tokenizer(tmp_path)
    assert special_token_ids(loaded) == special_token_ids(tiny)
    assert len(loaded) == len(tiny)
    assert loaded.encode(MULTILINGUAL[1]) == tiny.encode(MULTILINGUAL[1])
    assert render_chat(loaded, [{"role": "user", "content": "Hi"}]).endswith("assistant\nSure:")


def test_folder_template_file_wins_and_default_fills_in(tiny, tmp_path):
    save_tokenizer(tiny, tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert render_chat(load_tokenizer(tmp_path), [{"role": "user", "content": "Hi"}]) == "[Hi]"
    (tmp_path / "chat_template.jinja").unlink()
    assert load_tokenizer(tmp_path).chat_template == DEFAULT_CHAT_TEMPLATE


def test_incomplete_folder_names_missing_file(tiny, tmp_path):
    save_tokenizer(tiny, tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")
