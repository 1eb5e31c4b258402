"""The clients over the step stream (stream="auto" | True | False) against a real gymserve: the same trajectory as a
local env, HTTP for what the stream cannot answer, and a restart ridden (the stream closes 1012, HTTP goes on)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve.client import RemoteEnv, RemoteError, RemoteVectorEnv
from servers import start_server

pytestmark = pytest.mark.integration


def test_remote_env_steps_over_the_stream_exactly_as_a_local_env(server: Any) -> None:
    local = gym.make("CartPole-v1")
    with RemoteEnv(server.url, "CartPole-v1", stream=True) as remote:
        assert remote._remote.stream is not None  # type: ignore[attr-defined]  # the upgrade answered 101
        assert np.array_equal(remote.reset(seed=7)[0], local.reset(seed=7)[0])
        for n in range(30):
            got, want = remote.step(n % 2), local.step(n % 2)
            assert got[0].tobytes() == want[0].tobytes() and got[1:4] == want[1:4], n
            if got[2] or got[3]:
                break
        assert remote._remote.stream is not None  # type: ignore[attr-defined]  # never fell back
        remote.reset()
        with pytest.raises(RemoteError) as refused:  # the HTTP route's error, with its status
            remote.step(7)
        assert refused.value.status == 422 and refused.value.code == "invalid_value"
    with RemoteEnv(server.url, "CartPole-v1", stream=False) as plain:
        assert plain._remote.stream is None  # type: ignore[attr-defined]


def test_remote_vector_env_steps_over_the_stream(server: Any) -> None:
    local = gym.make_vec("CartPole-v1", 4, vectorization_mode="sync")
    with RemoteVectorEnv(server.url, "CartPole-v1", 4) as remote:  # "auto"
        assert remote._remote.stream is not None  # type: ignore[attr-defined]
        assert np.array_equal(remote.reset(seed=3)[0], local.reset(seed=3)[0])
        for n in range(20):
            actions = np.array([n % 2] * 4)
            got, want = remote.step(actions), local.step(actions)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), n


def test_a_restart_closes_the_stream_and_the_client_goes_on_over_http_with_the_same_trajectory(tmp_path: Path) -> None:
    srv = start_server(tmp_path, workers=1, drain_seconds=2)
    port = int(srv.url.rsplit(":", 1)[1])
    local = gym.make("CartPole-v1")
    try:
        with RemoteEnv(srv.url, "CartPole-v1", stream=True, retry_window=30, keepalive=False) as remote:
            remote.reset(seed=11), local.reset(seed=11)
            remote.step(0), local.step(0)
            srv.signal(signal.SIGTERM)  # parks the env, closes the stream with 1012
            assert srv.proc.wait(timeout=30) == 0
            srv = start_server(tmp_path, workers=1, port=port)  # the same port and state directory
            got, want = remote.step(1), local.step(1)  # the stream is gone: HTTP, which adopts the env
            assert got[0].tobytes() == want[0].tobytes()
            assert remote._remote.stream is None  # type: ignore[attr-defined]
    finally:
        srv.stop()


@pytest.mark.parametrize("stream", [True, False])
def test_step_async_sends_the_step_and_step_wait_gives_the_same_trajectory_as_a_local_env(
    server: Any, stream: bool
) -> None:
    from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

    local = gym.make_vec("CartPole-v1", 4, vectorization_mode="sync")
    with RemoteVectorEnv(server.url, "CartPole-v1", 4, stream=stream) as remote:
        assert (remote._remote.stream is not None) is stream  # type: ignore[attr-defined]
        assert np.array_equal(remote.reset(seed=5)[0], local.reset(seed=5)[0])
        with pytest.raises(NoAsyncCallError):
            remote.step_wait()
        for n in range(20):
            actions = np.array([(n + i) % 2 for i in range(4)])
            remote.step_async(actions)
            with pytest.raises(AlreadyPendingCallError):  # nothing else goes out before its answer is taken
                remote.step(actions)
            got, want = remote.step_wait(), local.step(actions)
            assert all(np.array_equal(g, w) for g, w in zip(got[:4], want[:4], strict=True)), n
        assert remote.info()["seq"] == 21  # each step ran once: the reset and 20 steps
        remote.step_async(np.zeros(4, np.int64))  # closing with a step pending takes its answer first
    assert remote._remote.instance_id is None  # type: ignore[attr-defined]
