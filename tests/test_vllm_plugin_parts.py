"""The parts of the vLLM plugin that need no vLLM: its config view and its chat template.

(``tests/test_vllm.py`` runs the whole plugin inside vLLM's CPU build.)
"""

from __future__ import annotations

import pytest

from jvlm.config import JinaVLMConfig


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from jvlm.tools.vllm_checkpoint import write_vllm_test_checkpoint

    return write_vllm_test_checkpoint(tmp_path_factory.mktemp("vllm-parts"))


def test_config_exposes_the_decoder_under_the_names_vllm_reads(folder):
    from jvlm.integrations.vllm.config import JinaVLMVllmConfig

    hf = JinaVLMVllmConfig.from_pretrained(folder)
    t = JinaVLMConfig.load(folder).text
    # vLLM sizes its KV cache from these: a wrong one is a wrong cache, not an error.
    assert (hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (
        t.n_layers, t.n_heads, t.n_kv_heads, t.head_dim) == (2, 4, 2, 32)
    assert (hf.hidden_size, hf.intermediate_size, hf.max_position_embeddings) == (
        t.hidden_size, t.mlp_size, t.max_sequence_length)
    assert hf.vocab_size == t.base_rows  # the head's rows; image ids are never sampled
    assert hf.get_text_config() is hf  # not the raw text_config dictionary
    # A serialised copy (vLLM hashes and ships configs between processes) reads back the same.
    again = JinaVLMVllmConfig(**hf.to_dict())
    assert again.to_jvlm().to_dict() == hf.to_jvlm().to_dict()
    assert again.num_key_value_heads == hf.num_key_value_heads


@pytest.mark.parametrize("n_images", [0, 2])
def test_chat_template_gives_the_ids_jvlm_builds(folder, n_images):
    """vLLM renders the template and tokenizes without special tokens: the BOS must come from
    the template, and the ids (placeholders still in) must be jvlm's before image blocks."""
    from jvlm.integrations.vllm.chat_template import JinaVLMChatProcessor
    from jvlm.processing.processor import JinaVLMProcessor

    processor = JinaVLMProcessor.from_pretrained(folder)
    holder = JinaVLMChatProcessor.from_pretrained(folder)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": "Hi there"}]}]
    text = holder.tokenizer.apply_chat_template(messages, chat_template=holder.chat_template, tokenize=False,
                                                add_generation_prompt=True)
    vllm_ids = holder.tokenizer(text, add_special_tokens=False)["input_ids"]
    plain = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    jvlm_ids = [processor.token_ids.bos] + processor.tokenizer(plain, add_special_tokens=False)["input_ids"]
    assert vllm_ids == jvlm_ids
    assert vllm_ids.count(processor.token_ids.image) == n_images


def test_the_plugin_is_declared_where_vllm_looks_for_it():
    """vLLM finds out-of-tree models only through the ``vllm.general_plugins`` entry point."""
    import importlib
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["vllm.general_plugins"]["jvlm"]
    module, _, name = target.partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert not any(dep.split("[")[0].strip().startswith("vllm") for dep in project["project"]["dependencies"])


def test_a_missing_vllm_environment_is_named_with_the_fix(tmp_path, monkeypatch):
    """tests/test_vllm.py fails (never skips) with this message when .venv-vllm is absent."""
    from vllm_server import VLLM_VENV_ENV, vllm_python

    monkeypatch.setenv(VLLM_VENV_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="scripts/install_vllm.sh"):
        vllm_python()
