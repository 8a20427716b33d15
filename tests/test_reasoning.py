"""Reasoning blocks are shown apart from the answer, whole or streamed in any cut."""

from __future__ import annotations

import random

import pytest

from jvlm.inference.reasoning import ReasoningSplitter, split_reasoning

REPLIES = [
    ("<think>\nmilk: 20\neggs: 8\n</think>\n20", "milk: 20\neggs: 8", "20"),
    ("<think>\nJan: 40\n</think>\nFeb", "Jan: 40", "Feb"),
    ("blue", None, "blue"),
    ("a < b, and <thin ice", None, "a < b, and <thin ice"),
    ("<think>\nrice, Tue: 77\nrice, W", "rice, Tue: 77\nrice, W", ""),  # budget ran out inside the block
]


@pytest.mark.parametrize("reply, reasoning, answer", REPLIES)
def test_split_reasoning(reply, reasoning, answer):
    assert split_reasoning(reply) == (reasoning, answer)


@pytest.mark.parametrize("reply, reasoning, answer", REPLIES)
def test_streamed_pieces_split_like_the_whole_reply(reply, reasoning, answer):
    """Tags cut across pieces (``</th`` + ``ink>``) must neither leak into the answer nor
    be lost; every cut of the reply gives what the whole reply gives."""
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(reply)), k=min(len(reply) - 1, rng.randint(1, 8))))
        pieces = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)])]
        splitter, got_reasoning, got_answer = ReasoningSplitter(), "", ""
        for piece in pieces:
            r, a = splitter.feed(piece)
            got_reasoning, got_answer = got_reasoning + r, got_answer + a
        r, a = splitter.finish()
        got_reasoning, got_answer = got_reasoning + r, got_answer + a
        assert (got_reasoning if reasoning is not None else None, got_answer.strip()) == (reasoning, answer.strip()), pieces


@pytest.mark.parametrize("stream", [False, True])
def test_cli_prints_the_answer_alone_on_stdout(capsys, stream):
    """`jvlm infer ... > answer.txt` must hold only the answer; the reading goes to stderr,
    or nowhere with --hide-reasoning."""
    import argparse

    from jvlm.cli.infer import _show

    reply = "<think>\nmilk: 20\neggs: 8\n</think>\n20"
    for hide in (False, True):
        args = argparse.Namespace(json=False, stream=stream, hide_reasoning=hide)
        if stream:
            splitter, shown = ReasoningSplitter(), {}
            for piece in (reply[:9], reply[9:30], reply[30:]):
                _show(*splitter.feed(piece), args, shown)
            _show(*splitter.finish(), args, shown)
        else:
            _show(*split_reasoning(reply), args, {})
        out, err = capsys.readouterr()
        assert out == "20"
        assert err.strip() == ("" if hide else "milk: 20\neggs: 8")
