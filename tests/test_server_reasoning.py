"""The server returns a reply's reasoning block apart from its answer, as reasoning chat servers do.

The shipped jvlm-demo model reads a chart out in a ``<think>`` block before answering a
question about it, so it is served here for real and asked about the chart in ``examples/``
through the official ``openai`` client: by default (``reasoning_format="split"``) the block's
text is ``message.reasoning_content`` (``delta.reasoning_content`` when streaming) and
``content`` holds only the answer; with ``"raw"`` the block stays in ``content``.
"""

from __future__ import annotations

import base64
from dataclasses import replace

import openai
import pytest
from serving import serve
from shipped import DEMO_DIR, EXAMPLES
from shipped import example as example_of

from jvlm_demo.synthetic import GOAL_MARK
from jvlm.serve.app import ServerConfig

KEY = "reasoning-test-key"


def _chart_question() -> list[dict]:
    example = example_of("bar_chart")
    url = "data:image/png;base64," + base64.b64encode((EXAMPLES / example["image"]).read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": example["question"]}]}]


@pytest.fixture(scope="module")
def config() -> ServerConfig:
    return ServerConfig(model_dir=DEMO_DIR, served_model_name="jvlm-demo", api_key=KEY, kernels="torch")


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_reasoning_block_is_returned_apart_from_the_answer(config):
    with serve(config) as (base, _):
        client = _client(base)
        reply = client.chat.completions.create(model="jvlm-demo", messages=_chart_question(),
                                               max_tokens=160, temperature=0)
        message = reply.choices[0].message
        reasoning = message.model_extra.get("reasoning_content")
        # the demo model states its goal ("? (tea)"), then reads the chart out as "label: value" lines
        goal, *lines = reasoning.splitlines()
        assert goal.startswith(GOAL_MARK) and lines and all(": " in line for line in lines), reasoning
        assert "<think>" not in message.content and "</think>" not in message.content
        assert message.content.strip() and "\n" not in message.content.strip()
        assert reply.choices[0].finish_reason == "stop"

        # streamed: the same reasoning and answer, reasoning deltas first
        stream = client.chat.completions.create(model="jvlm-demo", messages=_chart_question(),
                                                max_tokens=160, temperature=0, stream=True)
        kinds, streamed_reasoning, streamed_content = [], "", ""
        for chunk in stream:
            delta = chunk.choices[0].delta
            piece = (delta.model_extra or {}).get("reasoning_content")
            if piece:
                kinds.append("reasoning")
                streamed_reasoning += piece
            if delta.content:
                kinds.append("content")
                streamed_content += delta.content
        assert streamed_reasoning == reasoning
        assert streamed_content == message.content
        assert kinds == sorted(kinds, key=lambda k: k != "reasoning"), "reasoning must come before the answer"


def test_raw_format_leaves_the_block_in_the_content(config):
    with serve(replace(config, reasoning_format="raw")) as (base, _):
        client = _client(base)
        reply = client.chat.completions.create(model="jvlm-demo", messages=_chart_question(),
                                               max_tokens=160, temperature=0)
        message = reply.choices[0].message
        assert message.content.lstrip().startswith("<think>") and "</think>" in message.content
        assert message.model_extra.get("reasoning_content") is None


def test_replies_without_a_block_are_unchanged(config):
    """A question the model answers directly (text-only arithmetic) has no reasoning at all."""
    with serve(config) as (base, _):
        reply = _client(base).chat.completions.create(
            model="jvlm-demo", messages=[{"role": "user", "content": "What is 3 + 4?"}], max_tokens=16, temperature=0)
        message = reply.choices[0].message
        assert message.model_extra.get("reasoning_content") is None
        assert "<think>" not in message.content and message.content.strip()
