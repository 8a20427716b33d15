"""The shipped default model answers held-out questions, through the same path as `jvlm infer`.

A broken loader, tokenizer, chat template, image processor or decoder turns these answers
into noise, so the checks below fail on any of them. The examples are held-out test
questions chosen by a fixed rule, not by the model (``python -m jvlm_demo examples``:
the first test sample of each image family, languages in rotation); the first one is the
README's main example.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from shipped import DEMO_DIR, EXAMPLES, examples

from jvlm.resolve import DEFAULT_MODEL, resolve_model

#: the README's main command: jvlm infer -i examples/<image> -p "<question>"
README_EXAMPLE = examples()[0]


@pytest.fixture(scope="module")
def engine():
    from jvlm.cli.infer import load_engine

    engine, processor, resolved, _ = load_engine(None, "auto", "cpu")
    return engine, processor, resolved


def _ask(engine, image: Path | bytes | None, question: str) -> str:
    from jvlm.inference.prompt import build_request
    from jvlm.inference.reasoning import split_reasoning
    from jvlm.inference.request import SamplingParams

    eng, processor, _ = engine
    images = [] if image is None else [image if isinstance(image, bytes) else image.read_bytes()]
    # the budget of the card's evaluation: room for a chart's or table's reading block
    request = build_request(processor, question, images, params=SamplingParams(max_new_tokens=160, temperature=0.0),
                            feature_cache=eng.feature_cache, context_length=eng.context_length)
    return split_reasoning(eng.generate(request).text)[1].strip()  # the answer after any reading block


def test_default_model_is_the_shipped_demo_within_budget():
    resolved = resolve_model(None)
    assert DEFAULT_MODEL == "jvlm-demo"
    assert resolved.path.resolve() == DEMO_DIR.resolve()
    assert not resolved.is_random
    # The budget: the weights ship inside the repository.
    assert (DEMO_DIR / "model.safetensors").stat().st_size <= 40 * 2**20
    assert (DEMO_DIR / "MODEL_CARD.md").is_file()


def test_example_image_is_cut_like_the_training_data(engine):
    """224 px crops, thumbnail + one tile: 2 crops of 16x16 patches, 64 pooled tokens each.
    A processor that disagreed with training would feed the model inputs it never saw."""
    _, processor, _ = engine
    processed = processor.process_image(str(EXAMPLES / README_EXAMPLE["image"]))
    assert tuple(processed.crops.shape) == (2, 256, 14 * 14 * 3)
    block = processor.image_block(processed)
    assert sum(int(t == processor.token_ids.im_patch) for t in block) == 2 * 64


def test_readme_question_is_answered_correctly(engine):
    answer = _ask(engine, EXAMPLES / README_EXAMPLE["image"], README_EXAMPLE["question"])
    assert answer == README_EXAMPLE["answer"]


def test_held_out_accuracy_matches_the_card(engine):
    """The first 120 questions of the card's held-out split (regenerated here, identical to
    ``runs/demo/data/test``): the shipped model scored 95% on them (image families 94%, the
    card's full split 92.8%). A broken loader, template or decoder falls to near 0; a broken
    image path falls to the question-prior level of the image families (5-8%)."""
    from jvlm_demo import synthetic

    samples = list(synthetic.generate(120, 0, "test", image_size=224))
    right = {s.id: _ask(engine, _png(s) if s.images else None, s.question) == s.answer for s in samples}
    image_ids = [s.id for s in samples if s.images]
    overall = sum(right.values()) / len(samples)
    image = sum(right[i] for i in image_ids) / len(image_ids)
    assert overall >= 0.70, f"held-out accuracy {overall:.1%}; the shipped model scored 95% on these questions"
    assert image >= 0.65, f"image-family accuracy {image:.1%}; the shipped model scored 94% on these questions"


def _png(sample) -> bytes:
    buf = io.BytesIO()
    sample.images[0].save(buf, format="PNG")
    return buf.getvalue()


def test_answers_depend_on_the_image(engine):
    """The same question about two images with different answers: a model (or processor)
    that ignored the pixels would answer both alike, so it could never get both right.
    Sign and shape questions, the image families the card reports above 40%; the shipped
    model gets both right in all 20 of these pairs."""
    from jvlm_demo import synthetic

    samples = list(synthetic.generate(80, 5, "test", ["sign", "shapes"], ["en"], image_size=224))
    by_question: dict[str, list] = {}
    for s in samples:
        by_question.setdefault(s.question, []).append(s)
    pairs = [(a, b) for group in by_question.values() for a, b in zip(group, group[1:]) if a.answer != b.answer]
    assert len(pairs) >= 20, "the generator should repeat questions with different answers"
    both = sum(_ask(engine, _png(a), a.question) == a.answer and _ask(engine, _png(b), b.question) == b.answer
               for a, b in pairs[:20])
    assert both >= 12, f"only {both} of 20 image pairs told apart"


def test_shipped_tokenizer_is_rebuilt_identically():
    """The retraining command rebuilds the vocabulary from the synthetic data; if the rebuild
    drifted, a retrained model would not be comparable with (or loadable as) the shipped one."""
    from jvlm_demo.demo_tokenizer import build_demo_tokenizer, tokenizer_digest
    from jvlm.processing.text import load_tokenizer

    assert tokenizer_digest(build_demo_tokenizer()) == tokenizer_digest(load_tokenizer(DEMO_DIR))
