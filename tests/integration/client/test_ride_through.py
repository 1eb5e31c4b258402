"""Clients ride through the farm's own operations (issue 22, section 3), on a real two-worker gymserve.

A step runs and its answer is lost with the connection, connections are refused for a second (a restart), then
the env answers `503 unavailable` "moving" twice (Retry-After: 1): the client goes on with no exception, the same
instance_id, and the trajectory of a local env with the same seed and actions, each step run once. With a
retry_window of 0 the same outage raises, as before issue 22. The outage plays HTTP answers, so these clients step
over HTTP (stream=False); test_stream_client.py rides a real restart over the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests
from outage import Outage

from gymserve.client import RemoteEnv, RemoteVectorEnv, ServerUnreachable

pytestmark = pytest.mark.integration

STEPS = 12
AT = 5


@pytest.fixture
def outage(server: Any) -> Iterator[Outage]:
    played = Outage(server.url, at=AT)
    yield played
    played.close()


def server_side(server: Any, instance_id: str) -> dict[str, Any]:
    return requests.get(f"{server.url}/v2/envs/{instance_id}", timeout=30).json()


def test_a_remote_env_steps_through_a_restart_and_a_move(server: Any, outage: Outage) -> None:
    local = gym.make("CartPole-v1")
    started = time.monotonic()
    with RemoteEnv(outage.url, "CartPole-v1", retries=1, retry_window=30, stream=False) as remote:
        instance_id = remote.instance_id
        assert np.array_equal(remote.reset(seed=21)[0], local.reset(seed=21)[0])
        for n in range(STEPS):
            got, want = remote.step(n % 2), local.step(n % 2)
            assert got[0].tobytes() == want[0].tobytes() and got[1:4] == want[1:4], f"step {n}"
            assert remote.instance_id == instance_id
        assert outage.moving_answers == 2
        state = server_side(server, instance_id)
        assert (state["steps"], state["seq"]) == (STEPS, STEPS + 1), "a step ran twice, or not at all"
    assert time.monotonic() - started < 15


def test_a_remote_vector_env_steps_through_a_restart_and_a_move(server: Any, outage: Outage) -> None:
    local = gym.make_vec("CartPole-v1", 4, vectorization_mode="sync")
    with RemoteVectorEnv(outage.url, "CartPole-v1", 4, retries=1, retry_window=30, stream=False) as remote:
        instance_id = remote.instance_id
        assert np.array_equal(remote.reset(seed=4)[0], local.reset(seed=4)[0])
        for n in range(STEPS):
            actions = np.array([n % 2, 1, 0, (n // 2) % 2])
            got, want = remote.step(actions), local.step(actions)
            for a, b in zip(got[:4], want[:4], strict=True):
                assert np.array_equal(a, b), f"step {n}"
        assert remote.instance_id == instance_id and outage.moving_answers == 2
        assert server_side(server, instance_id)["seq"] == STEPS + 1


def test_a_window_of_zero_raises_as_before(server: Any, outage: Outage) -> None:
    with RemoteEnv(outage.url, "CartPole-v1", retries=1, retry_window=0, stream=False) as remote:
        remote.reset(seed=0)
        with pytest.raises(ServerUnreachable):
            for _ in range(AT):
                remote.step(0)
        time.sleep(outage.refused)  # the door opens again, so that close() can delete the env
