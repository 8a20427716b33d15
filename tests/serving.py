"""Run the real server app under uvicorn on an ephemeral loopback port, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from jvlm.serve.app import ServerConfig, ServingState, create_app
from jvlm.serve.guard import uvicorn_config


@contextmanager
def serve(config: ServerConfig, *, wait_ready: bool = True) -> Iterator[tuple[str, ServingState]]:
    """Yields (base URL, serving state); with ``wait_ready`` only once the model has loaded."""
    app = create_app(config)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, config.http, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    state: ServingState = app.state.serving
    if wait_ready:
        assert state.wait_until_loaded(60), state.error
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(10)
