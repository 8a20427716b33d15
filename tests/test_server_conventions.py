"""`jvlm serve` follows the conventions vLLM users bring: the model's id is the --model string
as given (plus --served-model-name aliases), a positional model, --quantize, the dtype
spellings of Transformers/vLLM, /v1/completions with images, /tokenize, /detokenize,
/version and /docs; and a demo model says what it is in /v1/models.

The shipped jvlm-demo runs for real under uvicorn and is asked through the official
``openai`` client.
"""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from serving import serve
from shipped import EXAMPLES
from shipped import example as example_of

from jvlm.cli import build_parser
from jvlm.cli.serve import build_config


def _config(*argv: str):
    return build_config(build_parser(only="serve").parse_args(["serve", *argv]))


def test_served_id_is_the_model_as_given_plus_aliases(tiny_model_dir):
    cfg = _config(str(tiny_model_dir))  # positional, as `vllm serve MODEL`
    assert cfg.model_dir == tiny_model_dir and cfg.served_model_name == str(tiny_model_dir)
    cfg = _config("--model", str(tiny_model_dir), "--served-model-name", "jinaai/jina-vlm", "mine")
    assert cfg.served_model_name == "jinaai/jina-vlm"
    assert cfg.serves("mine") and cfg.serves(str(tiny_model_dir)) and not cfg.serves("other")
    assert _config().served_model_name == "jvlm-demo"


@pytest.mark.parametrize("spelling, canonical", [("bfloat16", "bf16"), ("float16", "fp16"), ("half", "fp16"),
                                                 ("float32", "fp32"), ("torch.bfloat16", "bf16"), ("auto", None)])
def test_dtype_spellings_and_quantize(tiny_model_dir, spelling, canonical):
    cfg = _config(str(tiny_model_dir), "--dtype", spelling, "--quantize", "int8")
    assert cfg.dtype == canonical and cfg.quantize == "int8"


def test_two_different_models_and_a_bad_dtype_are_refused(tiny_model_dir, tmp_path, capsys):
    from jvlm.cli import main

    with pytest.raises(SystemExit):
        _config(str(tiny_model_dir), "--model", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--dtype", "bfloat61"])
    assert exit_info.value.code == 2 and "did you mean 'bfloat16'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server():
    cfg = _config("--served-model-name", "jvlm-demo", "jinaai/jina-vlm", "--kernels", "torch")
    with serve(cfg) as (base, state):
        yield base, state


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)


def test_models_list_every_name_with_the_demo_notice(server):
    base, _ = server
    models = _client(base).models.list().data
    assert [m.id for m in models] == ["jvlm-demo", "jinaai/jina-vlm"]
    notice = models[0].model_extra["notice"]
    assert "jvlm-demo" in notice and "--model jinaai/jina-vlm" in notice
    assert models[0].model_extra["max_model_len"] > 0
    # an alias is a real name: a chat request with it is answered, under the primary id
    reply = _client(base).chat.completions.create(model="jinaai/jina-vlm", max_tokens=4, temperature=0,
                                                  messages=[{"role": "user", "content": "What is 6 × 7?"}])
    assert reply.choices[0].message.content == "42" and reply.model == "jvlm-demo"


def test_completions_with_an_image_through_the_openai_client(server):
    base, _ = server
    example = example_of("shapes")
    url = "data:image/png;base64," + base64.b64encode((EXAMPLES / example["image"]).read_bytes()).decode()
    # the raw prompt in the model's chat format, the image placed at <|image|>
    prompt = f"<|im_start|>user\n<|image|>{example['question']}<|im_end|>\n<|im_start|>assistant\n"
    reply = _client(base).completions.create(model="jvlm-demo", prompt=prompt, max_tokens=8, temperature=0,
                                             extra_body={"images": [url]})
    assert reply.object == "text_completion" and reply.choices[0].text.strip() == example["answer"]
    assert reply.usage.prompt_tokens > 100  # the image's tokens are counted
    # streamed: the same text in pieces
    pieces = [c.choices[0].text for c in _client(base).completions.create(
        model="jvlm-demo", prompt=prompt, max_tokens=8, temperature=0, stream=True, extra_body={"images": [url]})]
    assert "".join(pieces) == reply.choices[0].text
    chunks = list(_client(base).completions.create(model="jvlm-demo", prompt=prompt, max_tokens=8, temperature=0,
                                                   stream=True, stream_options={"include_usage": True},
                                                   extra_body={"images": [url]}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == reply.usage.total_tokens
    # a placeholder count that does not match the images is a 400, not a 500
    with pytest.raises(openai.BadRequestError):
        _client(base).completions.create(model="jvlm-demo", prompt="<|image|><|image|>hi", max_tokens=2,
                                         extra_body={"images": [url]})
    with pytest.raises(openai.NotFoundError):
        _client(base).completions.create(model="gpt-4", prompt="hi", max_tokens=2)


def test_tokenize_detokenize_version_docs(server):
    base, state = server
    toks = httpx.post(f"{base}/tokenize", json={"prompt": "What is 6 × 7?"}).json()
    assert toks["count"] == len(toks["tokens"]) > 0 and toks["max_model_len"] == state.context_length
    assert httpx.post(f"{base}/detokenize", json={"tokens": toks["tokens"]}).json() == {"prompt": "What is 6 × 7?"}
    chat = httpx.post(f"{base}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["count"] > 3  # the template's role markers are counted
    image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    refused = httpx.post(f"{base}/tokenize", json={"messages": [{"role": "user", "content": [image_part]}]})
    assert refused.status_code == 400 and "/v1/jvlm/layout" in refused.json()["error"]["message"]
    assert httpx.post(f"{base}/tokenize", json={"messages": [{"content": "hi"}]}).status_code == 400
    bad = httpx.post(f"{base}/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 400 and "outside the vocabulary" in bad.json()["error"]["message"]
    import jvlm

    assert httpx.get(f"{base}/version").json() == {"version": jvlm.__version__}
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()
    assert "could not reach" in docs.text  # offline, the page lists the routes instead of staying blank
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert {"/v1/completions", "/tokenize", "/detokenize", "/version", "/v1/chat/completions"} <= set(paths)


def test_a_reply_cut_inside_the_reasoning_tag_leaks_no_partial_tag(server):
    base, _ = server
    example = example_of("bar_chart")  # jvlm-demo opens a chart answer with <think>
    url = "data:image/png;base64," + base64.b64encode((EXAMPLES / example["image"]).read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": example["question"]}]}]
    for n in (1, 2, 3):
        reply = _client(base).chat.completions.create(model="jvlm-demo", messages=messages, max_tokens=n,
                                                      temperature=0)
        assert reply.choices[0].finish_reason == "length"
        assert "<" not in (reply.choices[0].message.content or ""), (n, reply.choices[0].message)
        streamed = "".join(c.choices[0].delta.content or "" for c in _client(base).chat.completions.create(
            model="jvlm-demo", messages=messages, max_tokens=n, temperature=0, stream=True) if c.choices)
        assert "<" not in streamed, (n, streamed)


def test_playground_shows_the_notice(server):
    base, _ = server
    script = httpx.get(f"{base}/playground/playground.js").text
    assert ".notice" in script  # the page reads the notice from /v1/models and shows it


def test_serve_quantize_int8_answers(tiny_model_dir):
    from jvlm.inference.quantize import Int8Linear

    cfg = _config(str(tiny_model_dir), "--quantize", "int8", "--kernels", "torch")
    with serve(cfg) as (base, state):
        reply = _client(base).chat.completions.create(model=str(tiny_model_dir), max_tokens=3,
                                                      messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens >= 1
        assert any(isinstance(m, Int8Linear) for m in state.worker.engine.model.modules())  # the decoder really is int8
        assert state.decode_setup.weights == "int8" and state.decode_setup.linear_kernel == "pytorch"


def test_the_new_routes_have_their_own_request_counters(server):
    """/metrics counts the completions and tokenizer routes by name, not as "other", so an
    operator can see their traffic and errors."""
    base, _ = server
    httpx.post(f"{base}/tokenize", json={"prompt": "hello"}, timeout=30).raise_for_status()
    httpx.get(f"{base}/version", timeout=30).raise_for_status()
    metrics = httpx.get(f"{base}/metrics", timeout=30).text
    assert 'jvlm_requests_total{route="/tokenize",status="200"}' in metrics
    assert 'jvlm_requests_total{route="/version",status="200"}' in metrics
