"""RemoteEnv over /v2 on a real two-worker gymserve: frame observations, and answers lost or refused on purpose.

A TCP proxy between client and server loses the answer of a chosen request (the server ran it,
the client never hears back) or answers 503/429 in the server's place. The client resends with
the same sequence number and the server answers again without running the request twice.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests
from gymnasium.wrappers import AddRenderObservation

from gymserve.client import RemoteEnv, RemoteError, ServerUnreachable
from servers import free_port
from tcp_proxy import FORWARD, LOSE, TcpProxy, busy_answer

pytestmark = pytest.mark.integration


def first_line(request: bytes) -> bytes:
    return request.split(b"\r\n", 1)[0]


def on_nth(route: bytes, n: int, action: str | bytes) -> Any:
    """A proxy rule: the n-th request whose request line holds `route` gets `action`; the others pass."""
    seen = itertools.count(1)
    return lambda request: action if route in first_line(request) and next(seen) == n else FORWARD


def server_side(server: Any, remote: RemoteEnv) -> dict[str, Any]:
    return requests.get(f"{server.url}/v2/envs/{remote.instance_id}", timeout=30).json()


def requests_to(proxy: TcpProxy, route: bytes) -> int:
    return sum(route in first_line(r) for r in proxy.requests)


def test_frame_observations_are_uint8_and_bit_identical_to_a_local_env(server: Any) -> None:
    local = AddRenderObservation(gym.make("CartPole-v1", render_mode="rgb_array"))
    with RemoteEnv(server.url, "CartPole-v1", render_mode="rgb_array", wrappers=["AddRenderObservation"]) as remote:
        assert remote.observation_space == local.observation_space
        obs, _ = remote.reset(seed=8)
        assert obs.dtype == np.uint8 and obs.shape == (400, 600, 3) and np.array_equal(obs, local.reset(seed=8)[0])
        for action in (0, 1, 1, 0, 1):
            got, want = remote.step(action), local.step(action)
            assert got[0].tobytes() == want[0].tobytes() and got[1:4] == want[1:4]
        assert np.array_equal(remote.render(), local.render())


@pytest.mark.parametrize("lost", [1, 4])
def test_a_lost_step_answer_is_resent_and_the_env_steps_only_once(server: Any, lost: int) -> None:
    proxy = TcpProxy(server.url, on_nth(b"/step", lost, LOSE))
    local = gym.make("CartPole-v1")
    try:
        with RemoteEnv(proxy.url, "CartPole-v1") as remote:
            assert np.array_equal(remote.reset(seed=11)[0], local.reset(seed=11)[0])
            for n in range(8):
                got, want = remote.step(n % 2), local.step(n % 2)
                assert got[0].tobytes() == want[0].tobytes() and got[1:4] == want[1:4]
            assert requests_to(proxy, b"/step") == 9, "one step was sent twice"
            state = server_side(server, remote)
            assert (state["steps"], state["seq"]) == (8, 9), "the env stepped once per step of the client"
    finally:
        proxy.close()


def test_a_lost_reset_answer_is_resent_and_the_env_resets_only_once(server: Any) -> None:
    proxy = TcpProxy(server.url, on_nth(b"/reset", 2, LOSE))
    local = gym.make("FrozenLake-v1")
    try:
        with RemoteEnv(proxy.url, "FrozenLake-v1") as remote:
            remote.reset(seed=1)
            local.reset(seed=1)
            local.step(1)
            remote.step(1)
            # Unseeded: were it run twice, the env's RNG would move on and the start state would differ.
            assert remote.reset() == local.reset()
            assert requests_to(proxy, b"/reset") == 3 and server_side(server, remote)["episodes"] == 2
            assert remote.step(2) == local.step(2)
    finally:
        proxy.close()


def test_busy_answers_are_retried_after_retry_after(server: Any) -> None:
    answers = iter([busy_answer(503), busy_answer(429)])
    steps = itertools.count(1)

    def decide(request: bytes) -> str | bytes:
        return next(answers, FORWARD) if b"/step" in first_line(request) and next(steps) <= 2 else FORWARD

    proxy = TcpProxy(server.url, decide)
    try:
        with RemoteEnv(proxy.url, "CartPole-v1") as remote:
            remote.reset(seed=0)
            remote.step(0)
            assert requests_to(proxy, b"/step") == 3 and server_side(server, remote)["steps"] == 1
    finally:
        proxy.close()


def test_a_server_that_stays_busy_raises_after_the_retries(server: Any) -> None:
    proxy = TcpProxy(server.url, lambda r: busy_answer(503) if b"/step" in first_line(r) else FORWARD)
    try:
        with RemoteEnv(proxy.url, "CartPole-v1", retries=2) as remote:
            remote.reset(seed=0)
            with pytest.raises(RemoteError) as err:
                remote.step(0)
            assert err.value.status == 503 and requests_to(proxy, b"/step") == 3
    finally:
        proxy.close()


def test_a_create_whose_answer_is_lost_is_resent_with_its_key_and_adopted_not_leaked(server: Any) -> None:
    proxy = TcpProxy(server.url, on_nth(b"POST /v2/envs ", 1, LOSE))
    run = "adopt-" + uuid.uuid4().hex[:8]
    try:
        with RemoteEnv(proxy.url, "CartPole-v1", labels={"run": run}) as remote:
            assert requests_to(proxy, b"POST /v2/envs ") == 2  # the answer was lost, the create resent
            listed = requests.get(f"{server.url}/v2/envs?label=run={run}", timeout=30).json()["envs"]
            assert [e["instance_id"] for e in listed] == [remote.instance_id]  # one env, the one adopted
            remote.reset(seed=0)
    finally:
        proxy.close()


def test_no_server_raises_after_the_retries() -> None:
    with pytest.raises(ServerUnreachable) as err:
        RemoteEnv(f"http://127.0.0.1:{free_port()}", "CartPole-v1", retries=2)
    assert err.value.attempts == 3


def test_a_step_by_someone_else_makes_the_next_step_a_409_that_says_which_seq_is_next(server: Any) -> None:
    with RemoteEnv(server.url, "CartPole-v1") as remote:
        remote.reset(seed=0)
        remote.step(0)
        requests.post(f"{server.url}/v2/envs/{remote.instance_id}/step", json={"action": 1}, timeout=30)
        with pytest.raises(RemoteError) as err:
            remote.step(0)
        assert err.value.status == 409 and err.value.code == "sequence_conflict"
        assert err.value.details == {"field": "seq", "expected": 4, "got": 3}
