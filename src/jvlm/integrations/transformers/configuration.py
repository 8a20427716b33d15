"""``JinaVLMConfig`` as a Transformers config: the released ``config.json``, read unchanged.

The nested ``vision_config`` / ``text_config`` stay plain dicts in the release's own layout
(``to_jvlm()`` turns them into jvlm's typed config). The decoder sizes Transformers' generic
code asks for (``num_hidden_layers``, ``num_key_value_heads``, ``vocab_size``...) are read-only
views of ``text_config``, so ``generate``'s cache and PEFT see the Qwen3 decoder.
"""

from __future__ import annotations

try:  # Transformers 5 renamed the base class; 4.x has only the old name
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - depends on the installed version
    from transformers import PretrainedConfig as _BaseConfig

from jvlm.config import JinaVLMConfig as CoreConfig


class JinaVLMConfig(_BaseConfig):
    """Transformers config for ``model_type: "jvlm"`` (the name the release's ``auto_map`` uses)."""

    model_type = "jvlm"

    def __init__(self, vision_config: dict | None = None, text_config: dict | None = None, **kwargs):
        self.vision_config = dict(vision_config or {})
        self.text_config = dict(text_config or {})
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @classmethod
    def from_jvlm(cls, cfg: CoreConfig, **kwargs) -> "JinaVLMConfig":
        return cls(**{**cfg.to_official_dict(), **kwargs})

    def to_jvlm(self) -> CoreConfig:
        return CoreConfig.from_official_dict(self.to_dict())

    # ----------------------------------------------------- the decoder, for generic code
    def get_text_config(self, *args, **kwargs) -> "JinaVLMConfig":
        return self  # the attributes below describe the decoder

    def _text(self):
        return self.to_jvlm().text

    @property
    def num_hidden_layers(self) -> int:
        return self._text().n_layers

    @property
    def hidden_size(self) -> int:
        return self._text().hidden_size

    @property
    def num_attention_heads(self) -> int:
        return self._text().n_heads

    @property
    def num_key_value_heads(self) -> int:
        return self._text().n_kv_heads

    @property
    def head_dim(self) -> int:
        return self._text().head_dim

    @property
    def vocab_size(self) -> int:
        return self._text().base_rows

    @property
    def max_position_embeddings(self) -> int:
        return self._text().max_sequence_length
