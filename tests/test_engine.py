"""The engine: streaming, batching, sampling, stop strings, caches and the token budget.

Everything runs on the tiny random model in fp32, where greedy decoding is deterministic,
so "the same answer" can be asserted token for token.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import jvlm
from jvlm.errors import ContextLengthError
from jvlm.inference.detok import IncrementalDetokenizer, StopStringMatcher
from jvlm.inference.engine import Engine
from jvlm.inference.feature_cache import FeatureCache, PrefixCache
from jvlm.inference.prompt import build_request
from jvlm.inference.request import SamplingParams
from jvlm.inference.sampling import sample_rows


def _image(seed: int, h: int = 120, w: int = 160) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def engine(tiny):
    model, processor = tiny
    return Engine(model, processor)


def _req(processor, prompt, images=(), **params):
    params.setdefault("max_new_tokens", 8)
    return build_request(processor, prompt, list(images), params=SamplingParams(**params))


def test_streaming_yields_the_same_tokens_and_text_as_generate(tiny, engine):
    _, processor = tiny
    whole = engine.generate(_req(processor, "Describe it.", [_image(0)], max_new_tokens=10))
    events = list(engine.stream(_req(processor, "Describe it.", [_image(0)], max_new_tokens=10)))
    assert [e.token_id for e in events if e.token_id is not None] == whole.token_ids
    assert "".join(e.text for e in events) == whole.text
    assert events[-1].finished and not any(e.finished for e in events[:-1])
    assert events[-1].result.token_ids == whole.token_ids


def test_batch_of_four_equals_each_alone(tiny):
    """Left padding, positions from the mask, rows leaving early: none may change an answer."""
    model, processor = tiny
    prompts = [("Hi", [_image(1)], 3), ("What colour is the sky over the hills?", [], 9),
               ("Read the text.", [_image(2, 300, 200)], 6), ("Compare.", [_image(3), _image(4)], 12)]
    alone = [Engine(model, processor).generate(_req(processor, p, ims, max_new_tokens=n, ignore_eos=True))
             for p, ims, n in prompts]
    engine = Engine(model, processor, max_batch_size=4)
    together = engine.generate_many([_req(processor, p, ims, max_new_tokens=n, ignore_eos=True)
                                     for p, ims, n in prompts])
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [len(r.token_ids) for r in together] == [3, 9, 6, 12]  # short ones left without stalling
    assert engine.n_running == 0 and not engine.has_unfinished()


def test_request_joining_a_running_batch_gets_its_solo_answer(tiny):
    model, processor = tiny
    solo = Engine(model, processor).generate(_req(processor, "Late", [_image(5)], max_new_tokens=6, ignore_eos=True))
    engine = Engine(model, processor)
    first = engine.add_request(_req(processor, "Early question, long answer", max_new_tokens=12, ignore_eos=True))
    engine.step(), engine.step(), engine.step()
    late = _req(processor, "Late", [_image(5)], max_new_tokens=6, ignore_eos=True)
    engine.add_request(late)
    results = {}
    while engine.has_unfinished():
        for ev in engine.step():
            if ev.finished:
                results[ev.request_id] = ev.result
    assert results[late.request_id].token_ids == solo.token_ids
    assert len(results[first].token_ids) == 12


def test_seed_reproduces_a_sampled_answer_and_another_seed_differs(tiny, engine):
    _, processor = tiny
    kw = {"max_new_tokens": 16, "temperature": 1.5, "top_p": 0.95, "top_k": 200, "ignore_eos": True}
    a = engine.generate(_req(processor, "Tell a story.", seed=7, **kw)).token_ids
    b = engine.generate(_req(processor, "Tell a story.", seed=7, **kw)).token_ids
    c = engine.generate(_req(processor, "Tell a story.", seed=8, **kw)).token_ids
    assert a == b
    assert a != c
    # The same seed inside a batch with a greedy neighbour still gives the same answer.
    batched = engine.generate_many([_req(processor, "Other", max_new_tokens=4),
                                    _req(processor, "Tell a story.", seed=7, **kw)])
    assert batched[1].token_ids == a


def test_structural_image_ids_are_never_sampled(tiny):
    """Even when a structural id has by far the highest logit, greedy or sampled."""
    model, processor = tiny
    structural = sorted(processor.token_ids.structural())
    engine = Engine(model, processor)
    logits = torch.zeros(2, max(structural) + 10)
    logits[:, structural] = 100.0
    params = [SamplingParams(), SamplingParams(temperature=1.0)]
    nxt = sample_rows(logits, params, [None, torch.Generator().manual_seed(0)], engine._banned)
    assert not set(nxt.tolist()) & set(structural)
    res = engine.generate(_req(processor, "x", max_new_tokens=20, temperature=5.0, seed=0, ignore_eos=True))
    assert not set(structural) & set(res.token_ids)


class _CharTokenizer:
    """One character per token, with 'é' split into two byte tokens like byte-level BPE does."""

    def __init__(self):
        self.vocab = list("abc XY#\n") + ["\xc3", "\xa9"]

    def decode(self, ids, skip_special_tokens=True):
        raw = "".join(self.vocab[i] for i in ids).encode("latin-1")
        return raw.decode("utf-8", errors="replace")


def test_stop_string_split_across_tokens_is_cut_and_never_streamed():
    tok = _CharTokenizer()
    ids = [tok.vocab.index(c) for c in "ab X"] + [tok.vocab.index("#")] * 2 + [tok.vocab.index("c")]
    detok, matcher = IncrementalDetokenizer(tok), StopStringMatcher(("X##",))
    streamed, stopped_at = [], None
    for n, i in enumerate(ids):
        out, stopped = matcher.feed(detok.push(i))
        streamed.append(out)
        if stopped:
            stopped_at = n
            break
    assert "".join(streamed) == "ab "
    assert stopped_at == 5  # the second '#' completes the stop string
    assert streamed[3] == ""  # 'X' was held back while it could still start "X##"


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    tok = _CharTokenizer()
    detok, matcher = IncrementalDetokenizer(tok), StopStringMatcher(("X#",))
    out = [matcher.feed(detok.push(tok.vocab.index(c)))[0] for c in "aXb"]
    assert out == ["a", "", "Xb"]


def test_multibyte_character_is_emitted_whole():
    tok = _CharTokenizer()
    detok = IncrementalDetokenizer(tok)
    assert detok.push(tok.vocab.index("a")) == "a"
    assert detok.push(tok.vocab.index("\xc3")) == ""  # half of 'é'
    assert detok.push(tok.vocab.index("\xa9")) == "é"


def test_engine_stop_string_truncates_text(tiny, engine):
    _, processor = tiny
    full = engine.generate(_req(processor, "Go on.", max_new_tokens=12, ignore_eos=True))
    assert len(full.text) > 3
    stop = full.text[2:4]  # a piece from the middle of the greedy answer
    cut = engine.generate(_req(processor, "Go on.", max_new_tokens=12, ignore_eos=True, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]


def _count_vision_calls(model):
    calls = []
    handle = model.model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_feature_cache_hit_skips_the_vision_tower_with_identical_logits(tiny):
    model, processor = tiny
    cache = FeatureCache()
    engine = Engine(model, processor, feature_cache=cache)  # no prefix cache: the full prompt is prefilled
    calls, handle = _count_vision_calls(model)
    try:
        img = _image(11, 200, 300)
        first = engine.next_token_logits(build_request(processor, "What is it?", [img], feature_cache=cache))
        assert len(calls) == 1 and cache.stats()["misses"] == 1
        second = engine.next_token_logits(build_request(processor, "What is it?", [img], feature_cache=cache))
        assert len(calls) == 1 and cache.stats()["hits"] == 1
        assert torch.equal(first, second)
        # Other processing options are another key: max_crops changes the crops.
        engine.next_token_logits(build_request(processor, "What is it?", [img], max_crops=1, feature_cache=cache))
        assert len(calls) == 2
    finally:
        handle.remove()


def test_feature_cache_respects_its_byte_budget():
    cache = FeatureCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(str(i), torch.zeros(100))  # 400 bytes each
    assert len(cache) == 3 and cache.bytes_used <= 1200
    assert cache.get("0") is None and cache.get("4") is not None


def test_prefix_cache_reuses_the_image_prefill_for_a_new_question(tiny):
    model, processor = tiny
    fc, pc = FeatureCache(), PrefixCache()
    engine = Engine(model, processor, feature_cache=fc, prefix_cache=pc)
    img = _image(12, 250, 250)
    engine.generate(_req_cached(processor, "First question?", img, fc))
    second = engine.generate(_req_cached(processor, "Second, different question?", img, fc))
    assert second.stats["prefix_cached_tokens"] > second.stats["prefill_tokens"]
    fresh = Engine(model, processor).generate(_req(processor, "Second, different question?", [img], max_new_tokens=8))
    assert second.token_ids == fresh.token_ids


def _req_cached(processor, prompt, img, fc):
    return build_request(processor, prompt, [img], params=SamplingParams(max_new_tokens=8), feature_cache=fc)


def test_budget_error_fires_before_any_forward_pass(tiny):
    model, processor = tiny
    engine = Engine(model, processor, context_length=300)
    forwards = []
    handles = [m.register_forward_pre_hook(lambda *a: forwards.append(1))
               for m in (model.model.vision_model, model.model.language_model)]
    try:
        with pytest.raises(ContextLengthError) as err:
            engine.add_request(_req(processor, "Read this page.", [_image(13, 800, 600)], max_new_tokens=100))
        msg = str(err.value)
        assert "prompt tokens" in msg and "image tokens" in msg and "300" in msg
        with pytest.raises(ContextLengthError):
            build_request(processor, "x", [], params=SamplingParams(max_new_tokens=10_000))
    finally:
        for h in handles:
            h.remove()
    assert forwards == []
    assert not engine.has_unfinished()


def test_abort_ends_a_running_request(tiny, engine):
    _, processor = tiny
    rid = engine.add_request(_req(processor, "Long", max_new_tokens=50, ignore_eos=True))
    engine.step()
    engine.abort(rid)
    events = engine.step()
    assert events[-1].finish_reason == "abort" and not engine.has_unfinished()


def test_model_generate_matches_engine(tiny, engine):
    model, processor = tiny
    msgs = [{"role": "user", "content": [{"type": "image", "image": _image(14)}, {"type": "text", "text": "Hi"}]}]
    batch = processor.apply_chat_template(msgs, tokenize=True, return_dict=True)
    out = jvlm.generate(model, **batch, max_new_tokens=7, eos_token_id=[])
    res = engine.generate(_req(processor, "Hi", [_image(14)], max_new_tokens=7, ignore_eos=True))
    assert out[0, batch["input_ids"].shape[1]:].tolist() == res.token_ids


def test_abandoned_stream_frees_its_slot(tiny, engine):
    """A client that stops reading (closed connection) must not keep decoding forever."""
    _, processor = tiny
    stream = engine.stream(_req(processor, "Long answer please", max_new_tokens=40, ignore_eos=True))
    next(stream), next(stream)
    stream.close()
    assert engine.n_running == 0 and engine.n_waiting == 0


_MIXED_TEXT = "Grüße aus Köln 🌧️ — 東京は晴れ, naïve café\n\n### Answer: 42 🎉"


def test_fast_decoder_gives_the_processors_text_for_any_window(tiny):
    """The engine decodes through the Rust tokenizer; every window (including ones that cut a
    character in half, and special tokens to skip) must read exactly as ``processor.decode``."""
    _, processor = tiny
    from jvlm.inference.detok import make_decoder

    ids = processor.tokenizer.encode(_MIXED_TEXT, add_special_tokens=False)
    chat_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = ids[:5] + [chat_end] + ids[5:9] + [processor.token_ids.im_end] + ids[9:]  # special tokens mid-answer
    decode = make_decoder(processor)
    for start in range(0, len(ids), 3):
        for end in range(start, len(ids) + 1):
            assert decode(ids[start:end]) == processor.decode(ids[start:end]), (start, end)


def test_decoder_keeps_the_wrappers_decode_when_it_cleans_up_spaces():
    """A tokenizer that post-processes its backend's text must not be bypassed."""
    from tokenizers import Tokenizer, models

    from jvlm.inference.detok import make_decoder

    class Wrapper:
        backend_tokenizer = Tokenizer(models.BPE())
        clean_up_tokenization_spaces = True

        def decode(self, ids, skip_special_tokens=True):
            return "cleaned"

    assert make_decoder(Wrapper())([1, 2]) == "cleaned"


def test_streamed_pieces_join_to_the_full_text_and_stop_before_a_split_stop_string(tiny):
    _, processor = tiny
    ids = processor.tokenizer.encode(_MIXED_TEXT, add_special_tokens=False)
    full = processor.decode(ids)
    detok = IncrementalDetokenizer(processor)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == full
    assert "" in pieces[:-1]  # some character was split across tokens and held back...
    assert not any("\ufffd" in p for p in pieces)  # ...and every emoji / kanji arrives whole
    assert not any("\n\n###" in processor.decode([i]) for i in ids)  # the stop spans tokens
    # "\n\n###" spans several tokens here; nothing from it on may ever be streamed.
    detok, matcher = IncrementalDetokenizer(processor), StopStringMatcher(("\n\n###",))
    streamed = ""
    for i in ids:
        out, stopped = matcher.feed(detok.push(i))
        streamed += out
        assert "\n" not in streamed  # the text's only newlines start the stop string
        if stopped:
            break
    assert stopped and streamed == full[: full.index("\n\n###")]


def test_batched_streamed_text_equals_a_one_shot_decode_of_each_answer(tiny):
    """Eight rows decoded step by step (random weights pick odd bytes and special tokens):
    each row's streamed text is exactly the decode of its ids."""
    model, processor = tiny
    engine = Engine(model, processor, max_batch_size=8)
    reqs = [_req(processor, f"Question {i}?", max_new_tokens=10 + i, ignore_eos=True, temperature=1.5, seed=i)
            for i in range(8)]
    for r in reqs:
        engine.add_request(r)
    texts = {r.request_id: "" for r in reqs}
    results = {}
    while engine.has_unfinished():
        for ev in engine.step():
            texts[ev.request_id] += ev.text
            if ev.finished:
                results[ev.request_id] = ev.result
    for r in reqs:
        res = results[r.request_id]
        assert texts[r.request_id] == res.text == processor.decode(res.token_ids)
        assert len(res.token_ids) == r.params.max_new_tokens
