"""Run one risky function (a PDF render, a slow decoder) in a child process with a wall-clock
deadline and a memory cap, so that a hostile file costs at most that and never blocks or
bloats the process that asked.

Children are forked from a small ``forkserver`` process (not from the caller, which may hold
threads, a model and gigabytes of memory; forking that is unsafe and slow). The child sets
``RLIMIT_AS`` on itself, runs the function, and sends back its result or its exception; the
caller waits on the pipe, kills the child at the deadline or when ``cancel`` is set (the
client went away), and raises :class:`ResourceLimitError`. Functions and arguments must be
picklable (module-level functions, bytes, dataclasses).
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from jvlm.errors import JVLMError

log = logging.getLogger(__name__)

#: modules the fork server imports once, so each child starts with them loaded
PRELOAD = ["jvlm.processing.bounded", "jvlm.processing.pdf", "PIL.Image", "PIL.PngImagePlugin"]
_POLL_S = 0.05
_context_lock = threading.Lock()
_context: Any = None
#: pids of the children running now (for tests and logs)
RUNNING: set[int] = set()


class ResourceLimitError(JVLMError):
    """The work took longer than its deadline or more memory than its cap, and was stopped."""

    code = "resource_limit_exceeded"


class Cancelled(JVLMError):
    """The caller no longer wanted the result (e.g. the client disconnected); the child was stopped."""

    code = "cancelled"


def _mp_context():
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def _child(conn, fn: Callable, args: tuple, kwargs: dict, max_memory_bytes: int | None) -> None:
    if max_memory_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    try:
        reply = ("ok", fn(*args, **kwargs))
    except MemoryError:
        reply = ("memory", None)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
        reply = ("error", exc)
    try:
        conn.send_bytes(pickle.dumps(reply))
    except Exception as exc:  # noqa: BLE001 - an exception that does not pickle, or no memory left
        conn.send_bytes(pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}"
                                                            if reply[0] == "error" else str(exc)))))
    finally:
        conn.close()


def run_bounded(fn: Callable, *args, timeout_s: float | None, max_memory_bytes: int | None,
                cancel: threading.Event | None = None, what: str = "the work", **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a child process: its result, or its exception re-raised here.

    Raises :class:`ResourceLimitError` past ``timeout_s`` seconds or ``max_memory_bytes`` of
    address space, and :class:`Cancelled` once ``cancel`` is set. Blocking: call it from a
    worker thread (``asyncio.to_thread``) in async code.
    """
    ctx = _mp_context()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args, kwargs, max_memory_bytes), daemon=True,
                       name="jvlm-bounded")
    t0 = time.monotonic()
    proc.start()
    RUNNING.add(proc.pid)
    sender.close()
    try:
        while not receiver.poll(_POLL_S):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{what} was cancelled")
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise ResourceLimitError(f"{what} took longer than the limit of {timeout_s:g} s and was stopped")
            if not proc.is_alive() and not receiver.poll(0):
                raise ResourceLimitError(f"{what} ended abnormally (exit code {proc.exitcode}); it may have "
                                         f"exceeded the memory limit of {_mib(max_memory_bytes)}")
        try:
            status, value = pickle.loads(receiver.recv_bytes())
        except EOFError:
            raise ResourceLimitError(f"{what} ended abnormally; it may have exceeded the memory limit of "
                                     f"{_mib(max_memory_bytes)}") from None
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        RUNNING.discard(proc.pid)
        log.debug("%s: child process finished in %.2f s", what, time.monotonic() - t0)
    if status == "ok":
        return value
    if status == "memory":
        raise ResourceLimitError(f"{what} needed more than the memory limit of {_mib(max_memory_bytes)} and was "
                                 "stopped")
    raise value


def _mib(n: int | None) -> str:
    return "(none)" if n is None else f"{n / 2**20:,.0f} MiB"
