"""The engine worker alone, driven by a scripted engine: admission, cancellation, failures.

No model and no HTTP: the scripted engine emits one token per running request per step,
so these tests check the worker's bookkeeping exactly and run in well under a second.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from jvlm.inference.request import Request, Result, SamplingParams, TokenEvent
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
