"""The vLLM plugin against vLLM's real CPU build: one server for this module, the official client.

The server is ``python -m vllm.entrypoints.openai.api_server --model DIR`` from ``.venv-vllm``
(``scripts/install_vllm.sh``), on a tiny official-layout checkpoint. Every answer is compared
with jvlm's own engine (``jvlm.load`` + ``generate``) on the same folder and conversation:
the prompt token ids (image blocks, BOS and all), the greedy tokens and their log-probabilities.
A missing vLLM environment fails the module; it never skips.

The server runs with tensor parallelism 2 (one rank per core) wherever two CPUs are free, so
the sharded weight loading (fused q/k/v, swapped SwiGLU halves, the vocabulary-parallel
embedding) is what every comparison goes through; with a single CPU it runs unsharded.
"""

from __future__ import annotations

import base64
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from vllm_server import vllm_python, vllm_server

MAX_NEW = 12
TENSOR_PARALLEL = 2 if len(os.sched_getaffinity(0)) >= 2 else 1
pytestmark = pytest.mark.slow


def png(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = {"wide": png(480, 640, 1), "small": png(200, 300, 2), "tall": png(900, 300, 3), "other": png(480, 640, 4)}
CASES = {  # name -> (images, question)
    "text-only": ([], "Translate 'red' into Turkish."),
    "one multi-crop image": (["wide"], "What is in the image?"),
    "two images": (["small", "tall"], "Compare the two images."),
}


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def openai_messages(images: list[str], question: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(IMAGES[i])}} for i in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from jvlm.tools.vllm_checkpoint import write_vllm_test_checkpoint

    return write_vllm_test_checkpoint(tmp_path_factory.mktemp("jvlm-vllm-tiny"))


@pytest.fixture(scope="module")
def server(checkpoint):
    try:
        vllm_python()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    # --trust-request-mm-kwargs: per-request max_crops is tested below (vLLM refuses them by default).
    with vllm_server(checkpoint, "--trust-request-mm-kwargs", tensor_parallel=TENSOR_PARALLEL) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=300, max_retries=0)


@pytest.fixture(scope="module")
def reference(checkpoint):
    """jvlm's own answer per case: (prompt ids, greedy tokens, their log-probabilities)."""
    import torch

    import jvlm

    model, processor = jvlm.load(checkpoint, dtype="fp32")

    def run(images: list[str], question: str, max_crops: int | None = None):
        messages = [{"role": "user", "content": [{"type": "image", "image": IMAGES[i]} for i in images]
                     + [{"type": "text", "text": question}]}]
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, max_crops=max_crops)
        prompt = inputs["input_ids"][0].tolist()
        out = jvlm.generate(model, **inputs, max_new_tokens=MAX_NEW, do_sample=False)
        tokens = out[0, len(prompt):].tolist()
        with torch.no_grad():  # the log-probability of each chosen token, from one full pass
            full = {**inputs, "input_ids": out, "attention_mask": torch.ones_like(out)}
            logits = model(**full).logits[0, len(prompt) - 1:-1].float()
        logprobs = logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()
        return prompt, tokens, logprobs

    question = CASES["one multi-crop image"][1]
    return {name: run(*case) for name, case in CASES.items()} | {
        "other image": run(["other"], question), "one crop budget": run(["wide"], question, max_crops=1)}


def ask(client, images, question, **kw):
    return client.chat.completions.create(model="jvlm-tiny", messages=openai_messages(images, question),
                                          max_tokens=MAX_NEW, temperature=0, **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_tokens_and_prompt_ids_equal_jvlm(client, reference, case):
    images, question = CASES[case]
    prompt, tokens, logprobs = reference[case]
    r = ask(client, images, question, logprobs=True, extra_body={"return_token_ids": True})
    # The whole prompt, not just its length: BOS, chat turns and every image block in place.
    assert r.model_extra["prompt_token_ids"] == prompt
    assert r.usage.prompt_tokens == len(prompt)
    choice = r.choices[0]
    assert choice.model_extra["token_ids"] == tokens
    got = [t.logprob for t in choice.logprobs.content]
    assert all(math.isclose(a, b, abs_tol=2e-3) for a, b in zip(got, logprobs, strict=True)), (got, logprobs)


def test_max_crops_from_the_request_sets_the_tiling(client, reference):
    """``mm_processor_kwargs={"max_crops": 1}``: the 2x2 image becomes one tile, as jvlm's max_crops does."""
    prompt, tokens, _ = reference["one crop budget"]
    r = ask(client, *CASES["one multi-crop image"],
            extra_body={"return_token_ids": True, "mm_processor_kwargs": {"max_crops": 1}})
    assert r.model_extra["prompt_token_ids"] == prompt
    assert len(prompt) < len(reference["one multi-crop image"][0])
    assert r.choices[0].model_extra["token_ids"] == tokens


def test_cases_exercise_tiling_and_image_content(checkpoint, reference):
    """Guards the comparisons above: the one-image case really is tiled, and the answer depends on
    the pixels (with a connector whose features vanish, every image would get the same tokens)."""
    from jvlm.processing.processor import JinaVLMProcessor

    processor = JinaVLMProcessor.from_pretrained(checkpoint)
    assert processor.process_image(IMAGES["wide"]).layout.tiling == (2, 2)
    assert reference["one multi-crop image"][1] != reference["other image"][1]


def test_streaming_matches_non_streaming(client, reference):
    images, question = CASES["one multi-crop image"]
    whole = ask(client, images, question).choices[0].message.content
    chunks = list(ask(client, images, question, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole
    assert len(finishes) == 1 and finishes[0] in ("length", "stop")
    assert chunks[-1].usage.prompt_tokens == len(reference["one multi-crop image"][0])


def test_eight_concurrent_clients_get_their_own_answers(client, reference):
    """Mixed batches (text-only, one and two images) under load equal each request answered alone."""
    jobs = [list(CASES)[i % len(CASES)] for i in range(8)]

    def one(case):
        r = ask(client, *CASES[case], extra_body={"return_token_ids": True})
        return case, r.choices[0].model_extra["token_ids"], r.usage.prompt_tokens

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    assert len(results) == 8
    for case, tokens, n_prompt in results:
        assert tokens == reference[case][1], case
        assert n_prompt == len(reference[case][0])


def test_bad_image_is_a_client_error(client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError):
        client.chat.completions.create(
            model="jvlm-tiny", max_tokens=4,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(b"no image")}},
                {"type": "text", "text": "?"}]}])


def test_bad_crop_budget_is_a_client_error(client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="max_crops"):
        ask(client, *CASES["one multi-crop image"], extra_body={"mm_processor_kwargs": {"max_crops": 0}})
    with pytest.raises(BadRequestError, match="max_crop"):  # a misspelt option is refused, not ignored
        ask(client, *CASES["one multi-crop image"], extra_body={"mm_processor_kwargs": {"max_crop": 2}})
