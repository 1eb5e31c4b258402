"""Fixtures shared by every test: a Flask test app, and real `gymserve serve` processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gymserve.app import create_app
from gymserve.settings import Settings
from servers import Server, start_server


@pytest.fixture(scope="session", autouse=True)
def _own_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers that tests start another way than start_server park under a directory of this session, never in
    the user's own ~/.local/state."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
        yield


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({}, node_id="test")


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real two-worker `gymserve serve` for the whole session (tests must not depend on its state)."""
    # Hundreds of tests create envs here; capacity is tested on servers of its own, never on this one.
    srv = start_server(tmp_path_factory.mktemp("server"), max_envs_per_worker=50_000, max_envs=100_000)
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers with given settings for one test; all are stopped (by PID) at its end."""
    started: list[Server] = []

    def _make(**kwargs: Any) -> Server:
        srv = start_server(tmp_path, **kwargs)
        started.append(srv)
        return srv

    yield _make
    for srv in started:
        srv.stop()
