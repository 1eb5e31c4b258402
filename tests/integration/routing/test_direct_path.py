"""The direct path: a replica with GYMSERVE_PUBLIC_URL advertises it at create, and RemoteEnv(direct=True) steps
there, falling back to the URL it created through (the router) when the direct one does not answer.

One app served on two ports in this process: "router" and "direct" reach the same envs, and each counts its requests.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import gymnasium as gym
import numpy as np
import pytest

from gymserve.app import create_app
from gymserve.client import RemoteEnv, RemoteVectorEnv
from gymserve.settings import Settings

pytestmark = pytest.mark.integration


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _counting(app: Any, name: str, counts: Counter[str]) -> Callable[..., Any]:
    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if "/step" in environ["PATH_INFO"] or "/reset" in environ["PATH_INFO"]:
            counts[name] += 1
        return app(environ, start_response)

    return wsgi


@pytest.fixture
def farm() -> Iterator[dict[str, Any]]:
    counts: Counter[str] = Counter()
    servers = {name: make_server("127.0.0.1", 0, lambda e, s: [], _Server, _Quiet) for name in ("router", "direct")}
    urls = {name: f"http://127.0.0.1:{srv.server_address[1]}" for name, srv in servers.items()}
    app = create_app(Settings.from_env({"GYMSERVE_PUBLIC_URL": urls["direct"]}, node_id="pod-0"))
    for name, srv in servers.items():
        srv.set_app(_counting(app, name, counts))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {"urls": urls, "counts": counts, "servers": servers}
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


def test_create_advertises_the_direct_url_and_steps_go_there(farm: dict[str, Any]) -> None:
    local = gym.make("CartPole-v1")
    with RemoteEnv(farm["urls"]["router"], "CartPole-v1", direct=True) as env:
        assert env._remote.created["direct_url"] == farm["urls"]["direct"]  # type: ignore[attr-defined]
        obs, _ = env.reset(seed=3)
        assert np.array_equal(obs, local.reset(seed=3)[0])
        for _ in range(10):
            obs, *_ = env.step(1)
            assert np.array_equal(obs, local.step(1)[0])
    assert farm["counts"] == {"direct": 11}
    # Without direct=True nothing changes: everything through the router.
    with RemoteEnv(farm["urls"]["router"], "CartPole-v1") as env:
        env.reset(seed=1)
        env.step(0)
    assert farm["counts"]["router"] == 2


def test_a_direct_url_that_does_not_answer_falls_back_to_the_router(farm: dict[str, Any]) -> None:
    local = gym.make("CartPole-v1")
    env = RemoteEnv(farm["urls"]["router"], "CartPole-v1", direct=True)
    try:
        env.reset(seed=5)
        local.reset(seed=5)
        farm["servers"]["direct"].shutdown()  # the pod's own address stops answering
        farm["servers"]["direct"].server_close()
        for _ in range(5):
            obs, *_ = env.step(0)
            assert np.array_equal(obs, local.step(0)[0])  # no step lost, none run twice
    finally:
        env.close()
    assert farm["counts"] == {"direct": 1, "router": 5}


def test_a_vector_env_takes_the_direct_path_too(farm: dict[str, Any]) -> None:
    with RemoteVectorEnv(farm["urls"]["router"], "CartPole-v1", 4, direct=True) as env:
        env.reset(seed=0)
        env.step(np.zeros(4, dtype=np.int64))
    assert farm["counts"] == {"direct": 2}


def test_the_public_url_is_checked() -> None:
    with pytest.raises(Exception, match="PUBLIC_URL"):
        Settings.from_env({"GYMSERVE_PUBLIC_URL": "pod-0:8000"}, node_id="x")
