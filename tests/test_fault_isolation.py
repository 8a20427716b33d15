"""One request must never hurt another: sampling settings at their extremes, a request whose
data makes the engine raise, and the same through the real server with concurrent streams.

The tiny random model in fp32 decodes greedily and deterministically, so "its normal answer"
is asserted token for token against the same request run alone.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from test_server import API_KEY, client_for, data_uri, png, serve, user

from jvlm.errors import PromptError
from jvlm.inference.engine import Engine
from jvlm.inference.feature_cache import PrefixCache
from jvlm.inference.prompt import build_request
from jvlm.inference.request import SamplingParams
from jvlm.inference.sampling import filter_logits, select_next

AUTH = {"Authorization": f"Bearer {API_KEY}"}


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("top_p", [1e-46, 1e-300, 5e-324])
def test_a_top_p_that_rounds_to_zero_keeps_the_best_token(top_p):
    logits = torch.tensor([[0.5, 3.0, 1.0, -2.0], [9.0, 0.0, 0.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, top_p=top_p))
    assert kept.tolist() == [[False, True, False, False], [True, False, False, False]]
    drawn = select_next(logits, do_sample=True, temperature=1.0, top_p=top_p, generator=torch.Generator())
    assert drawn.tolist() == [1, 0]


def test_top_k_one_on_ties_and_an_overflowing_temperature_still_draw():
    ties = torch.zeros((1, 6))
    assert select_next(ties, do_sample=True, temperature=1.0, top_k=1, generator=torch.Generator()).item() in range(6)
    logits = torch.tensor([[1.0, 2.0, 30.0]])
    tiny = select_next(logits, do_sample=True, temperature=1e-45, generator=torch.Generator())
    assert tiny.item() == 2  # dividing by the temperature overflows: the best token, not a crash


@pytest.mark.parametrize("field,value", [("temperature", float("nan")), ("temperature", float("inf")),
                                         ("top_p", float("nan")), ("top_p", 0.0), ("top_k", -3)])
def test_sampling_params_refuse_values_outside_their_range(field, value):
    with pytest.raises(PromptError):
        SamplingParams(**{field: value})


def test_a_seed_of_any_size_is_usable():
    params = SamplingParams(temperature=1.0, seed=10**40)
    torch.Generator().manual_seed(params.seed)  # raised "Overflow" before folding


# ----------------------------------------------------------------------------- engine

def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))


def test_a_row_that_makes_prefill_raise_fails_alone(tiny):
    model, processor = tiny
    engine = Engine(model, processor)

    def req(text, images=()):
        return build_request(processor, text, list(images), params=SamplingParams(max_new_tokens=6))

    alone = [engine.generate(req("First question?", [_image(1)])).token_ids,
             engine.generate(req("Second one, text only.")).token_ids]
    poisoned = req("Poisoned.", [_image(2)])
    bad = poisoned.images[0]
    # features of the wrong width: the vision-to-text splice raises for this row only
    bad.features, bad.crops = torch.zeros((bad.n_crops, bad.image_input_idx.shape[1], 3)), None
    results = engine.generate_many([req("First question?", [_image(1)]), poisoned, req("Second one, text only.")])
    assert [r.finish_reason for r in results] == ["length", "error", "length"]
    assert [results[0].token_ids, results[2].token_ids] == alone
    assert engine.counters["request_failures"] == 1
    assert engine.generate(req("Second one, text only.")).token_ids == alone[1]  # and the engine goes on


def test_a_row_whose_sampling_raises_fails_alone_mid_decode(tiny):
    model, processor = tiny
    engine = Engine(model, processor)
    good = build_request(processor, "Keep going.", params=SamplingParams(max_new_tokens=5))
    expected = engine.generate(good).token_ids

    def seeded():
        return build_request(processor, "A seeded one.", params=SamplingParams(max_new_tokens=5, temperature=1.0,
                                                                                seed=7))

    seeded_alone = engine.generate(seeded()).token_ids
    params = SamplingParams(max_new_tokens=5, temperature=1.0)
    broken = build_request(processor, "Sample me.", params=params)
    ids = [engine.add_request(build_request(processor, "Keep going.", params=SamplingParams(max_new_tokens=5))),
           engine.add_request(seeded()), engine.add_request(broken)]
    engine.step()  # both admitted, first tokens drawn
    engine._batch.rows[2].generator = "not a generator"  # the row's own state is now unusable
    done = {}
    while engine.has_unfinished():
        for ev in engine.step():
            if ev.finished:
                done[ev.request_id] = ev
    assert done[ids[2]].finish_reason == "error" and done[ids[2]].error is not None
    assert done[ids[0]].finish_reason == "length" and done[ids[0]].result.token_ids == expected
    assert done[ids[1]].result.token_ids == seeded_alone  # its generator was rewound before the retry


def test_an_id_outside_the_vocabulary_is_refused_before_compute(tiny):
    model, processor = tiny
    engine = Engine(model, processor)
    req = build_request(processor, "hello", params=SamplingParams(max_new_tokens=2))
    req.prompt_ids = req.prompt_ids + [model.config.text.total_rows + 5]
    with pytest.raises(PromptError, match="outside this model's vocabulary"):
        engine.add_request(req)
    assert not engine.has_unfinished()


# ----------------------------------------------------------------------------- server

POISON = "POISON-ROW"


class PoisonOnText(Engine):
    """The real engine, except that prefill raises for any group holding the POISON prompt:
    a stand-in for an input that trips a bug deep inside the model code."""

    def __init__(self, *args, poison_ids, **kwargs):
        super().__init__(*args, **kwargs)
        self._poison = poison_ids

    def _prefill(self, group):
        n = len(self._poison)
        for s in group:
            ids = s.request.prompt_ids
            if any(ids[i:i + n] == self._poison for i in range(len(ids) - n + 1)):
                raise IndexError("index 99999 is out of bounds (simulated fault caused by this row)")
        return super()._prefill(group)


@pytest.fixture(scope="module")
def poison_server(tiny_model_dir):
    from jvlm.serve.app import ServerConfig
    from jvlm.media import MediaPolicy

    prefix = PrefixCache(64 * 2**20)

    def factory(model, processor, config, feature_cache):
        poison_ids = processor.tokenizer(POISON, add_special_tokens=False)["input_ids"]
        return PoisonOnText(model, processor, max_batch_size=config.max_batch, feature_cache=feature_cache,
                            prefix_cache=prefix, poison_ids=poison_ids)

    config = ServerConfig(model_dir=tiny_model_dir, api_key=API_KEY, media=MediaPolicy(max_images=2),
                          engine_factory=factory, max_batch=8)
    with serve(config) as (base, state):
        yield base, state, prefix


def _stream_text(base: str, messages, **fields) -> tuple[str, str | None]:
    """(streamed text, error message or None) of one streaming request; an error before the
    first token is an error status, after it an error event."""
    body = {"messages": messages, "stream": True, "max_tokens": 12, **fields}
    text, error = [], None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=120) as r:
        if r.status_code != 200:
            assert r.status_code == 500, r.read()
            return "", json.loads(r.read())["error"]["message"]
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if "error" in payload:
                error = payload["error"]["message"]
            elif payload["choices"]:
                text.append(payload["choices"][0]["delta"].get("content") or "")
    return "".join(text), error


def test_a_poisoned_request_among_concurrent_streams_fails_alone(poison_server):
    base, state, prefix = poison_server
    image = data_uri(png(50, 40, (30, 160, 90)))
    questions = [user("What colour is it?", image), user("Count to three."), user("Name a fruit."),
                 user("Say hello.")]
    normal = [_stream_text(base, q) for q in questions]  # each alone, first
    assert all(err is None for _, err in normal)
    hits_before = prefix.hits
    engine_before = state.worker.engine
    barrier = threading.Barrier(len(questions) + 2)

    def run(messages, **fields):
        barrier.wait()
        return _stream_text(base, messages, **fields)

    with ThreadPoolExecutor(len(questions) + 2) as pool:
        futures = [pool.submit(run, q) for q in questions]
        poisoned = pool.submit(run, user(f"{POISON} ignore all of this"))
        # the sampling extreme that used to fail the whole batch is a valid request now
        tiny_top_p = pool.submit(run, user("Count to three."), top_p=1e-46, temperature=1)
        answers = [f.result() for f in futures]
        poison_text, poison_error = poisoned.result()
        top_p_text, top_p_error = tiny_top_p.result()
    assert answers == normal
    assert poison_error is not None and "other requests were not affected" in poison_error
    assert top_p_error is None and top_p_text == normal[1][0]  # only the top token survives: greedy
    assert state.worker.engine is engine_before  # nothing was rebuilt
    assert prefix.hits > hits_before  # the image question reused its cached prefix in the batch
    metrics = httpx.get(f"{base}/metrics").text
    assert 'jvlm_engine_failures_total{scope="request"} 1.0' in metrics
    assert 'scope="batch"' not in metrics
    reply = client_for(base).chat.completions.create(model="jina-vlm", messages=questions[0], max_tokens=12)
    assert reply.choices[0].message.content == normal[0][0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_poisoned_raw_completion_fails_alone_with_an_error_object(poison_server, stream):
    """/v1/completions answers a request that fails alone as chat does: its own error object
    (an error status, since it failed before its first token), never a broken connection."""
    base, state, _ = poison_server
    engine_before = state.worker.engine
    body = {"prompt": f"{POISON} and more", "max_tokens": 6, "stream": stream}
    r = httpx.post(f"{base}/v1/completions", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error["code"] == "internal_error" and "other requests were not affected" in error["message"]
    assert state.worker.engine is engine_before
    ok = httpx.post(f"{base}/v1/completions", json={"prompt": "Count to three.", "max_tokens": 6, "stream": stream},
                    headers=AUTH, timeout=120)
    assert ok.status_code == 200 and (ok.text.rstrip().endswith("data: [DONE]") if stream else
                                      ok.json()["choices"][0]["finish_reason"] in ("stop", "length"))
