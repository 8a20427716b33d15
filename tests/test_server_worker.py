"""The engine worker alone, driven by a scripted engine: admission, cancellation, failures.

No model and no HTTP: the scripted engine emits one token per running request per step,
so these tests check the worker's bookkeeping exactly and run in well under a second.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from jvlm.inference.request import Request, Result, SamplingParams, TokenEvent
from jvlm.serve.chat import ChunkWriter, stream_chunks
from jvlm.serve.worker import EngineFailure, EngineWorker, ServerOverloaded


class ScriptedEngine:
    """One token ("t") per running request per step; abort ends a request at the next step."""

    def __init__(self, fail_at_step: int | None = None):
        self.running: dict[str, Request] = {}
        self.produced: dict[str, int] = {}
        self.aborted: set[str] = set()
        self.steps = 0
        self.fail_at_step = fail_at_step
        self.lock = threading.Lock()

    def add_request(self, request: Request) -> str:
        with self.lock:
            self.running[request.request_id] = request
            self.produced[request.request_id] = 0
        return request.request_id

    def abort(self, request_id: str) -> None:
        with self.lock:
            self.aborted.add(request_id)

    def has_unfinished(self) -> bool:
        return bool(self.running)

    def step(self) -> list[TokenEvent]:
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("scripted failure")
        events = []
        with self.lock:
            for rid in list(self.running):
                if rid in self.aborted:
                    del self.running[rid]
                    events.append(TokenEvent(rid, None, "", "abort", _result(rid, 0, "abort")))
                    continue
                self.produced[rid] += 1
                n = self.produced[rid]
                done = n >= self.running[rid].params.max_new_tokens
                ev = TokenEvent(rid, n, "t", "length" if done else None)
                if done:
                    ev.result = _result(rid, n, "length")
                    del self.running[rid]
                events.append(ev)
        return events


def _result(rid: str, n: int, reason: str) -> Result:
    return Result(rid, list(range(n)), "t" * n, reason, prompt_tokens=3, image_tokens=0,
                  time_to_first_token_s=0.0, total_s=0.0)


def _request(max_new_tokens: int) -> Request:
    return Request(prompt_ids=[1, 2, 3], params=SamplingParams(max_new_tokens=max_new_tokens))


async def _drain(gen) -> list[TokenEvent]:
    events = []
    while not events or not events[-1].finished:
        events.append(await asyncio.wait_for(gen.next_event(), 5))
    return events


@pytest.fixture()
def make_worker():
    workers = []

    def make(engines, **kwargs):
        it = iter(engines)
        worker = EngineWorker(lambda: next(it), **{"max_batch": 2, "max_queue": 1, **kwargs})
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for w in workers:
        w.stop()


def test_admission_is_bounded_and_tickets_free_their_place(make_worker):
    worker = make_worker([ScriptedEngine()])
    tickets = [worker.reserve() for _ in range(worker.capacity)]  # 2 generating + 1 waiting
    with pytest.raises(ServerOverloaded, match="retry"):
        worker.reserve()
    tickets[0].release()
    tickets[0].release()  # idempotent: a second release must not open a second place
    tickets.append(worker.reserve())
    with pytest.raises(ServerOverloaded):
        worker.reserve()


def test_each_request_gets_exactly_its_own_events(make_worker):
    worker = make_worker([ScriptedEngine()])

    async def main():
        gens = [worker.submit(_request(n)) for n in (3, 5)]
        return await asyncio.gather(*(_drain(g) for g in gens))

    short, long = asyncio.run(main())
    assert [e.text for e in short] == ["t"] * 3 and short[-1].result.text == "ttt"
    assert len(long) == 5 and {e.request_id for e in long} == {long[0].request_id}
    assert worker.stats() == {"admitted": 0, "running": 0, "waiting": 0, "in_engine": 0, "cancelled": 0}


def test_cancel_stops_a_running_generation(make_worker):
    engine = ScriptedEngine()
    worker = make_worker([engine])

    async def main():
        gen = worker.submit(_request(10**9))
        await gen.next_event()
        gen.cancel()
        for _ in range(500):
            if worker.stats()["in_engine"] == 0:
                break
            await asyncio.sleep(0.01)
        return gen

    gen = asyncio.run(main())
    assert worker.stats()["cancelled"] == 1 and worker.stats()["in_engine"] == 0
    assert gen.request_id in engine.aborted and not engine.running


def test_a_failing_step_fails_requests_in_flight_and_the_worker_carries_on(make_worker):
    first, second = ScriptedEngine(fail_at_step=2), ScriptedEngine()
    worker = make_worker([first, second])

    async def main():
        doomed = worker.submit(_request(10))
        await doomed.next_event()
        with pytest.raises(EngineFailure, match="RuntimeError"):
            await _drain(doomed)
        return await _drain(worker.submit(_request(2)))  # served by the rebuilt engine

    events = asyncio.run(main())
    assert events[-1].finish_reason == "length" and second.steps >= 2


# ----------------------------------------------------------------------------- SSE packing

def _stream(worker, max_new_tokens: int, *, read_delay_s: float, include_usage: bool = True) -> list[str]:
    """The pieces ``stream_chunks`` yields for one request, read by a client that pauses
    ``read_delay_s`` before each read (a slow client lets events pile up)."""

    async def main():
        gen = worker.submit(_request(max_new_tokens))
        first = await gen.next_event()
        writer = ChunkWriter(gen.request_id, "m", 0)
        pieces = []
        async for piece in stream_chunks(gen, first, writer, include_usage=include_usage,
                                         error_event=lambda exc: f"data: {json.dumps({'error': str(exc)})}\n\n"):
            pieces.append(piece)
            await asyncio.sleep(read_delay_s)
        return pieces

    return asyncio.run(main())


def _events(pieces: list[str]) -> list:
    text = "".join(pieces)
    assert text.endswith("\n\n")
    return [e.removeprefix("data: ") for e in text[:-2].split("\n\n")]


@pytest.mark.parametrize("read_delay_s", [0.0, 0.02])
def test_packed_stream_is_the_same_event_sequence(make_worker, read_delay_s):
    # however events are packed into writes, a client must parse the OpenAI sequence:
    # role first, the text in order, finish_reason once at the end, usage, then [DONE]
    worker = make_worker([ScriptedEngine()])
    pieces = _stream(worker, 12, read_delay_s=read_delay_s)
    assert all(p.startswith("data: ") and p.endswith("\n\n") for p in pieces)  # whole events only
    *chunks, done = _events(pieces)
    assert done == "[DONE]"
    chunks = [json.loads(c) for c in chunks]
    *content, usage = chunks
    assert content[0]["choices"][0]["delta"].get("role") == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == "t" * 12
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * (len(content) - 1) + ["length"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    assert usage["usage"]["prompt_tokens"] == 3
    if read_delay_s:  # a slow reader gets fewer writes than there are events
        assert len(pieces) < len(chunks)


def test_packed_stream_ends_role_and_finish_in_few_writes(make_worker):
    # a one-token answer needs one write: role, content with finish_reason, usage, [DONE]
    worker = make_worker([ScriptedEngine()])
    pieces = _stream(worker, 1, read_delay_s=0.0)
    assert len(pieces) == 1 and pieces[0].endswith("data: [DONE]\n\n")
    assert '"role":"assistant"' in pieces[0] and '"finish_reason":"length"' in pieces[0]


def test_an_aborted_generation_ends_the_stream_with_an_error_event(make_worker):
    # the engine ends a request with "abort" (e.g. dropped for a step failure): the client
    # must get an error event, not a stream that looks complete
    engine = ScriptedEngine()
    worker = make_worker([engine])

    async def main():
        gen = worker.submit(_request(10**9))
        first = await gen.next_event()
        engine.abort(gen.request_id)
        writer = ChunkWriter(gen.request_id, "m", 0)
        return [p async for p in stream_chunks(gen, first, writer, include_usage=True,
                                               error_event=lambda exc: f"data: {{\"error\": \"{exc}\"}}\n\n")]

    events = _events(asyncio.run(main()))
    assert json.loads(events[0])["choices"][0]["delta"].get("role") == "assistant"
    assert "unexpectedly (abort)" in json.loads(events[-1])["error"]
    assert "[DONE]" not in events
