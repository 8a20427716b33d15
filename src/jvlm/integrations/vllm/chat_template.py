"""The chat template vLLM renders for Jina-VLM: the model folder's own template, BOS first.

jvlm's processor prepends BOS to every prompt's ids (spec §4.4); the folder's template adds
none. vLLM renders chat prompts to text and tokenizes them without special tokens, so without
help every vLLM prompt would lack the BOS the model was trained with. vLLM prefers a
processor's chat template over the tokenizer's; this processor class (registered with
Transformers' ``AutoProcessor`` for ``model_type: jvlm`` inside vLLM only) carries the
folder's template behind a literal BOS token, so text-only and image prompts alike start
with it -- exactly the ids jvlm's processor produces.

A ``--chat-template`` given to vLLM replaces this (add the BOS to it yourself). So do requests
that pass ``tools``: vLLM then reads the tokenizer's template, which has no BOS.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import ProcessorMixin

from jvlm.processing.text import load_tokenizer, special_token_ids


def bos_first(template: str, bos_token: str) -> str:
    """``template`` with ``bos_token`` rendered before everything else."""
    return "{{- " + json.dumps(bos_token) + " -}}\n" + template


class JinaVLMChatProcessor(ProcessorMixin):
    """Holds the tokenizer and the BOS-first chat template; vLLM reads only ``chat_template``."""

    attributes = ["tokenizer"]
    tokenizer_class = ("PreTrainedTokenizerFast", "TokenizersBackend")

    def __init__(self, tokenizer=None, chat_template: str | None = None, **kwargs):
        # ProcessorMixin's own checks want tokenizer classes it can name; keep this a plain holder.
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def from_pretrained(cls, folder, *_args, **_kwargs) -> "JinaVLMChatProcessor":
        tokenizer = load_tokenizer(Path(folder))
        bos = tokenizer.convert_ids_to_tokens(special_token_ids(tokenizer).bos)
        return cls(tokenizer, chat_template=bos_first(tokenizer.chat_template, bos))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tokenizer={type(self.tokenizer).__name__})"
