"""The small tokenizer of the ``jvlm-demo`` model, trained on the synthetic world's own text.

The demo model learns from scratch on ``jvlm_demo.synthetic``, so a 152k-row Qwen vocabulary
would be mostly dead weight (and most of the 40 MB budget). Instead a byte-level BPE of
``DEMO_BASE_VOCAB`` ids is trained on the questions, answers and image words of the
train split in all six languages. The pipeline is Qwen's (NFC, Qwen's split regex,
byte-level BPE, no BOS), so any text still encodes -- unseen characters fall back to bytes.

Layout (as ``jvlm.processing.text`` lays out every Jina-VLM tokenizer):
ids ``0 .. DEMO_BASE_VOCAB - 4`` are BPE tokens, then ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``; the 128 Jina-VLM extra tokens follow on ``DEMO_BASE_VOCAB ..`` (structural
six first). Training is deterministic: the corpus is drawn from fixed seeds without
rendering any image, and the BPE trainer breaks ties by order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from functools import lru_cache

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from jvlm.errors import TokenizerError
from jvlm.tools import tokenizers as text_mod

#: base rows of the demo decoder's embedding (BPE tokens + 3 chat tokens)
DEMO_BASE_VOCAB = 2048
DEMO_EXTRA_TOKENS = 128
DEMO_MAX_LENGTH = 2048
_ADDED = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True))
_CORPUS_SEED = "jvlm-demo-tokenizer"


def _spec_strings(value) -> Iterator[str]:
    """Every string inside an image spec (the words the image shows)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _spec_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _spec_strings(v)


def demo_corpus(per_pair: int = 300) -> list[str]:
    """Lines of text from ``per_pair`` train-split drafts of every (task, language) pair.

    Drafts are made without rendering (cheap) and filtered to the train buckets, so the
    tokenizer never sees a held-out question. The chat template's role words are added so
    the prompt scaffolding gets whole tokens too.
    """
    from jvlm_demo.synth_lexicon import LANGUAGES
    from jvlm_demo.synthetic import SPLIT_BUCKETS, TASK_FAMILIES, content_bucket

    low, high = SPLIT_BUCKETS["train"]
    lines = ["user\n", "assistant\n", "system\n"]
    for task, family in TASK_FAMILIES.items():
        for lang in LANGUAGES:
            rng = random.Random(f"{_CORPUS_SEED}|{task}|{lang}")
            kept = 0
            while kept < per_pair:
                draft = family.make(rng, lang)
                if not low <= content_bucket(task, lang, draft) < high:
                    continue
                kept += 1
                lines += [draft.question, draft.answer]
                if draft.spec is not None:
                    lines += [s for s in _spec_strings(draft.spec) if not s.startswith("#")]
    return lines


@lru_cache(maxsize=2)
def _demo_tokenizer_json(vocab_size: int, per_pair: int) -> str:
    tok = text_mod._qwen_pipeline(Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False)))
    n_bpe = vocab_size - len(_ADDED)
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(demo_corpus(per_pair), trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise TokenizerError(
            f"the demo corpus yields {tok.get_vocab_size()} BPE tokens, not {n_bpe}; lower vocab_size "
            "or raise per_pair"
        )
    text_mod.add_jvlm_tokens(tok, _ADDED, vocab_size, DEMO_EXTRA_TOKENS)
    return tok.to_str()


def build_demo_tokenizer(vocab_size: int = DEMO_BASE_VOCAB, per_pair: int = 300) -> PreTrainedTokenizerFast:
    """The demo model's tokenizer: ``vocab_size`` base ids plus 128 Jina-VLM tokens.

    Same call, same tokenizer (byte-identical ``tokenizer.json``), so retraining the demo
    from scratch reproduces its vocabulary.
    """
    return text_mod.wrap_tokenizer(Tokenizer.from_str(_demo_tokenizer_json(vocab_size, per_pair)), DEMO_MAX_LENGTH)


def tokenizer_digest(tok: PreTrainedTokenizerFast) -> str:
    """A short fingerprint of the vocabulary, for the model card and reproducibility checks."""
    import hashlib

    vocab = json.dumps(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]), ensure_ascii=False)
    return hashlib.sha256(vocab.encode("utf-8")).hexdigest()[:16]
