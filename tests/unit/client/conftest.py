"""Fixtures of the client's unit tests: a scriptable HTTP server and a fake clock (fake_server.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from fake_server import Clock, Stub

from gymserve.client import http as client_http


def serve(server: Stub) -> Callable[[], None]:
    """Serve `server` on a thread of its own; what stops it."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    stop = serve(server)
    yield server
    stop()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The session's clock: every wait between two attempts is recorded instead of slept, and moves the clock."""
    fake = Clock()
    monkeypatch.setattr(client_http, "sleep", fake.sleep)
    monkeypatch.setattr(client_http, "monotonic", fake.monotonic)
    return fake


@pytest.fixture
def waits(clock: Clock) -> list[float]:
    """Every wait between two attempts, recorded instead of slept."""
    return clock.waits
