"""The one thread that owns the model, and the bounded door that requests come through.

HTTP handlers run on the asyncio event loop; the model runs here, on a single thread, so
no two forward passes ever race for the weights or the KV cache and the event loop never
blocks on compute. The thread drives the engine's step loop: every step advances all
running requests by one token together (continuous batching, up to ``max_batch`` at once)
and admits waiting ones as rows free up.

Admission is bounded: at most ``max_batch`` requests generate and at most ``max_queue`` more
wait (counting those still fetching or preprocessing their images). Past that, ``reserve``
raises :class:`ServerOverloaded` at once; the server answers 503 with ``Retry-After``
rather than letting latency and memory grow without limit.

Events cross back to the event loop with ``call_soon_threadsafe`` into one
``asyncio.Queue`` per request. A handler whose client went away calls ``cancel``; the engine
drops the row at its next step and the slot is free for the next request.

The worker talks to the engine through four calls only (:class:`StepEngine`), so tests can
drive it with a scripted engine and the engine can change inside without touching this file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from jvlm.errors import JVLMError
from jvlm.inference.request import Request, TokenEvent
from jvlm.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)

#: how long the idle thread sleeps between checks for a stop signal it might have missed
_IDLE_WAIT_S = 1.0


class StepEngine(Protocol):
    """What the worker needs from an engine (``jvlm.inference.engine.Engine`` has it)."""

    def add_request(self, request: Request) -> str: ...
    def abort(self, request_id: str) -> None: ...
    def step(self) -> list[TokenEvent]: ...
    def has_unfinished(self) -> bool: ...


class ServerOverloaded(JVLMError):
    """Every batch slot is busy and the wait queue is full; the client should retry later."""

    code = "server_overloaded"


class EngineFailure(JVLMError):
    """The engine raised while generating. When the fault could be pinned on one request
    only that one fails; otherwise every request in flight at that moment does.

    ``retryable`` is true for out-of-memory, which passes when the load drops.
    """

    code = "engine_error"

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class WorkerStopped(JVLMError):
    """The server is shutting down; requests still waiting are refused."""

    code = "server_shutting_down"


class Ticket:
    """A place in the server held from admission until the response is finished.

    Release is idempotent, so every exit path of a handler can simply call it.
    """

    def __init__(self, worker: EngineWorker):
        self._worker = worker
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._worker._release()


@dataclass
class Generation:
    """A submitted request as the handler sees it: await its events, or cancel it."""

    request_id: str
    arrived_s: float  # perf_counter at HTTP arrival: time to first token counts queueing too
    _events: asyncio.Queue = field(repr=False)
    _worker: EngineWorker = field(repr=False)
    first_token_s: float | None = None
    done: bool = False

    async def next_event(self) -> TokenEvent:
        """The next token event; raises the error that ended the request, if any."""
        return self._take(await self._events.get())

    def next_event_nowait(self) -> TokenEvent | None:
        """The next event if one is already waiting, else None (errors raise as above)."""
        try:
            return self._take(self._events.get_nowait())
        except asyncio.QueueEmpty:
            return None

    def _take(self, item: TokenEvent | BaseException) -> TokenEvent:
        if isinstance(item, BaseException):
            self.done = True
            raise item
        if item.finished:
            self.done = True
        return item

    def cancel(self) -> None:
        """Stop generating for a client that went away (no effect once finished)."""
        if not self.done:
            self.done = True
            self._worker.cancel(self.request_id)


class EngineWorker:
    """Owns the engine on one daemon thread. Start with :meth:`start`, stop with :meth:`stop`.

    ``engine_factory`` builds the engine; it is called again to replace an engine whose step
    raised, because its batch state can no longer be trusted (the caches it was given, e.g.
    the image-feature cache, survive if the factory reuses them).
    """

    def __init__(self, engine_factory: Callable[[], StepEngine], *, max_batch: int, max_queue: int,
                 metrics: ServerMetrics | None = None):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self._engine_factory = engine_factory
        self.engine: StepEngine = engine_factory()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics or ServerMetrics()
        self._cond = threading.Condition()
        self._jobs: dict[str, tuple[Generation, asyncio.AbstractEventLoop]] = {}
        self._admitted = 0  # tickets held: preprocessing + waiting + running
        self._running: set[str] = set()  # requests that produced at least one event
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.cancelled = 0  # total generations stopped by cancel(), for tests and logs

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jvlm-engine-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; requests still in flight get :class:`WorkerStopped`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
        for gen, loop in jobs:
            _deliver(loop, [(gen, WorkerStopped("the server is shutting down; retry on another replica"))])

    # ----------------------------------------------------------------- admission
    @property
    def capacity(self) -> int:
        return self.max_batch + self.max_queue

    def reserve(self) -> Ticket:
        """Claim a place or raise :class:`ServerOverloaded` (nothing is queued then)."""
        with self._cond:
            if self._stopping:
                raise WorkerStopped("the server is shutting down; retry on another replica")
            if self._admitted >= self.capacity:
                raise ServerOverloaded(
                    f"the server is at capacity: {self.max_batch} requests generating and {self.max_queue} "
                    "waiting; retry after the delay in the Retry-After header")
            self._admitted += 1
            self._update_gauges()
        return Ticket(self)

    def _release(self) -> None:
        with self._cond:
            self._admitted -= 1
            self._update_gauges()

    def _update_gauges(self) -> None:  # caller holds the lock
        running = len(self._running)
        self.metrics.running.set(running)
        self.metrics.queue_depth.set(max(self._admitted - running, 0))

    def stats(self) -> dict[str, int]:
        """Admitted, running and waiting counts, and cancellations so far."""
        with self._cond:
            running = len(self._running)
            return {"admitted": self._admitted, "running": running, "waiting": max(self._admitted - running, 0),
                    "in_engine": len(self._jobs), "cancelled": self.cancelled}

    # ----------------------------------------------------------------- requests
    def submit(self, request: Request, *, arrived_s: float | None = None) -> Generation:
        """Hand a built request to the engine; call from the event loop that will read it.

        Raises what the engine's ``add_request`` raises (e.g. ``ContextLengthError``).
        """
        loop = asyncio.get_running_loop()
        gen = Generation(request.request_id, arrived_s if arrived_s is not None else time.perf_counter(),
                         asyncio.Queue(), self)
        with self._cond:
            if self._stopping:
                raise WorkerStopped("the server is shutting down; retry on another replica")
            self._jobs[request.request_id] = (gen, loop)
            try:
                self.engine.add_request(request)
            except BaseException:
                del self._jobs[request.request_id]
                raise
            self._cond.notify_all()
        return gen

    def cancel(self, request_id: str) -> None:
        with self._cond:
            if request_id not in self._jobs:
                return
            self.engine.abort(request_id)
            self._cond.notify_all()

    # ----------------------------------------------------------------- the thread
    def _loop(self) -> None:
        log.debug("engine worker started")
        while True:
            with self._cond:
                while not self._stopping and not self.engine.has_unfinished():
                    self.metrics.observe_idle()
                    self._cond.wait(_IDLE_WAIT_S)
                if self._stopping:
                    break
                engine = self.engine
            try:
                self._dispatch(engine.step())  # the compute runs outside the lock
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                self._fail_all(exc)
        log.debug("engine worker stopped")

    def _dispatch(self, events: list[TokenEvent]) -> None:
        advanced = {ev.request_id for ev in events if ev.token_id is not None}
        self.metrics.observe_step(len(advanced), sum(ev.token_id is not None for ev in events))
        now = time.perf_counter()
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[Generation, TokenEvent]]] = {}
        with self._cond:
            for ev in events:
                job = self._jobs.get(ev.request_id)
                if job is None:
                    continue  # not ours (or already failed): nobody is listening
                gen, loop = job
                if ev.request_id not in self._running:
                    self._running.add(ev.request_id)
                    if ev.token_id is not None:
                        gen.first_token_s = now
                        self.metrics.ttft.observe(now - gen.arrived_s)
                if ev.finished:
                    del self._jobs[ev.request_id]
                    self._running.discard(ev.request_id)
                    self._record_finish(ev, gen, now)
                outbox.setdefault(loop, []).append((gen, _request_failure(ev) if ev.finish_reason == "error" else ev))
            self._update_gauges()
        for loop, items in outbox.items():
            _deliver(loop, items)

    def _record_finish(self, ev: TokenEvent, gen: Generation, now: float) -> None:
        m = self.metrics
        m.completions.labels(finish_reason=ev.finish_reason).inc()
        if ev.finish_reason == "error":
            m.engine_failures.labels(scope="request").inc()
            return
        if ev.finish_reason == "abort":
            self.cancelled += 1
            m.cancelled.inc()
            log.info("request %s cancelled: the client went away", ev.request_id)
            return
        m.latency.observe(now - gen.arrived_s)
        if ev.result is not None:
            m.prompt_tokens.inc(ev.result.prompt_tokens)
            m.image_tokens.inc(ev.result.image_tokens)

    def _fail_all(self, exc: Exception) -> None:
        """Fail every request in flight and start over with a fresh engine."""
        oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
        log.exception("engine step failed; failing %d request(s) and rebuilding the engine", len(self._jobs))
        self.metrics.engine_failures.labels(scope="batch").inc()
        failure = EngineFailure(
            ("the server ran out of memory while generating; retry later or send a shorter request"
             if oom else f"generation failed inside the server ({type(exc).__name__}); the request was not completed"),
            retryable=oom)
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
            self._running.clear()
            try:
                self.engine = self._engine_factory()
            except Exception:  # keep the old engine object: better than none
                log.exception("could not rebuild the engine after a failure")
            self._update_gauges()
        for gen, loop in jobs:
            _deliver(loop, [(gen, failure)])


def _request_failure(ev: TokenEvent) -> BaseException:
    """What the handler of a request that failed alone receives: a user's error as it is (the
    server answers 400), anything else as an ``EngineFailure`` naming only this request."""
    if isinstance(ev.error, JVLMError):
        return ev.error
    kind = type(ev.error).__name__ if ev.error is not None else "unknown error"
    return EngineFailure(f"generation of this request failed inside the server ({kind}); other requests "
                         "were not affected, and the error was logged")


def _deliver(loop: asyncio.AbstractEventLoop, items: list[tuple[Generation, TokenEvent | BaseException]]) -> None:
    """Hand a step's events to the event loop in one wake-up (each wake-up is a syscall that
    also gives the GIL away, so one per request per token would slow the whole step)."""
    try:
        loop.call_soon_threadsafe(_put_all, items)
    except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
        pass


def _put_all(items: list[tuple[Generation, TokenEvent | BaseException]]) -> None:
    for gen, item in items:
        gen._events.put_nowait(item)
