"""The Transformers config class vLLM reads for ``model_type: jvlm`` folders.

vLLM sizes its KV cache and context from flat Transformers names (``num_hidden_layers``,
``num_key_value_heads``, ``head_dim``, ``max_position_embeddings``...), while the released
``config.json`` nests everything OLMo-style (``text_config.block_config.attn_config``).
This class keeps the released dictionary as it is (``jvlm_official``) and exposes the
decoder's sizes under the flat names, derived by ``JinaVLMConfig.from_official_dict`` -- the
one parser of that layout.

The released sub-dictionaries are stored as ``jvlm_official`` rather than as ``text_config``
/ ``vision_config`` attributes: Transformers' ``get_text_config()`` (which vLLM calls) would
otherwise hand vLLM a plain dictionary instead of this config.
"""

from __future__ import annotations

from typing import Any

try:  # Transformers 5 renamed the base class; 4.x has only the old name
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - depends on the installed version
    from transformers import PretrainedConfig as _BaseConfig

from jvlm.config import JinaVLMConfig

# Top-level keys of the released config.json that describe the model (kept verbatim).
_OFFICIAL_KEYS = ("vision_config", "text_config", "jvlm_image_processing", "bos_token_id", "eos_token_id",
                  "pad_token_id", "image_token_index")


class JinaVLMVllmConfig(_BaseConfig):
    """``config.json`` of a Jina-VLM folder, with the decoder sizes under Transformers' names."""

    model_type = "jvlm"

    def __init__(self, jvlm_official: dict[str, Any] | None = None, **kwargs):
        official = dict(jvlm_official or {})
        for key in _OFFICIAL_KEYS:
            if key in kwargs:
                value = kwargs.pop(key) if key in ("vision_config", "text_config", "jvlm_image_processing") \
                    else kwargs[key]
                official[key] = value
        # Derived names must not come back from a serialised copy: they are recomputed below.
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                    "rope_parameters", "hidden_act", "tie_word_embeddings"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        self.jvlm_official = official
        t = self.to_jvlm().text
        self.hidden_size = t.hidden_size
        self.num_hidden_layers = t.n_layers
        self.num_attention_heads = t.n_heads
        self.num_key_value_heads = t.n_kv_heads
        self.head_dim = t.head_dim
        self.intermediate_size = t.mlp_size
        self.vocab_size = t.base_rows  # lm_head rows; the structural image ids are never sampled
        self.max_position_embeddings = t.max_sequence_length
        self.rms_norm_eps = t.norm_eps
        self.rope_theta = t.rope_theta
        self.rope_parameters = {"rope_type": "default", "rope_theta": t.rope_theta}
        self.hidden_act = "silu"
        # The released file says false at the top level; the decoder's own flag decides (spec,
        # Corrections 2), and the model unties whenever the checkpoint stores lm_head.weight.
        self.tie_word_embeddings = False

    def to_jvlm(self) -> JinaVLMConfig:
        """The typed jvlm config (vision, connector and decoder sizes)."""
        return JinaVLMConfig.from_official_dict(self.jvlm_official)

    def get_text_config(self, *args, **kwargs):
        return self
