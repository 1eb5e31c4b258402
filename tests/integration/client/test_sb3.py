"""gymserve.client.sb3.RemoteVecEnv against Stable-Baselines3's own DummyVecEnv of local envs with the same seeds:
identical observations, rewards, dones and infos (terminal_observation, TimeLimit.truncated) over episode ends.

Needs the `sb3` extra (Stable-Baselines3 and PyTorch). scripts/test.sh installs it in CI, or with GYMSERVE_SB3=1;
without it these tests are skipped, except where GYMSERVE_REQUIRE_SB3=1 (.ci/run) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests

if importlib.util.find_spec("stable_baselines3") is None:
    _reason = "Stable-Baselines3 is not installed: GYMSERVE_SB3=1 bash scripts/test.sh installs the sb3 extra (README)"
    if os.environ.get("GYMSERVE_REQUIRE_SB3") == "1":
        pytest.fail(f"GYMSERVE_REQUIRE_SB3=1, but {_reason}", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from outage import Outage
from stable_baselines3.common.vec_env import DummyVecEnv

from gymserve.client import RemoteError, ServerUnreachable
from gymserve.client.sb3 import RemoteVecEnv

pytestmark = pytest.mark.integration

NUM_ENVS = 4
STEPS = 300


def local_vec_env(env_id: str, **kwargs: Any) -> DummyVecEnv:
    return DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(NUM_ENVS)])


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CartPole-v1", {}),  # episodes end by termination
        ("CartPole-v1", {"max_episode_steps": 25}),  # ... and by truncation
        ("Pendulum-v1", {"max_episode_steps": 60}),  # Box actions, truncation only
    ],
    ids=["cartpole", "cartpole-truncated", "pendulum"],
)
def test_remote_vec_env_steps_like_dummy_vec_env(server, env_id: str, kwargs: dict[str, Any]) -> None:
    local = local_vec_env(env_id, **kwargs)
    local.seed(123)
    remote = RemoteVecEnv(server.url, env_id, NUM_ENVS, seed=123, **kwargs)
    try:
        assert remote.num_envs == NUM_ENVS
        assert remote.observation_space == local.observation_space
        assert remote.action_space == local.action_space
        np.testing.assert_array_equal(remote.reset(), local.reset())
        remote.action_space.seed(7)
        ends = 0
        for step in range(STEPS):
            actions = np.stack([remote.action_space.sample() for _ in range(NUM_ENVS)])
            got = remote.step(actions)
            want = local.step(actions)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"observations at step {step}")
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"rewards at step {step}")
            assert got[1].dtype == want[1].dtype == np.float32
            np.testing.assert_array_equal(got[2], want[2], err_msg=f"dones at step {step}")
            for i, (g, w) in enumerate(zip(got[3], want[3], strict=True)):
                assert g.keys() == w.keys(), (step, i, g, w)
                assert g["TimeLimit.truncated"] == w["TimeLimit.truncated"]
                if "terminal_observation" in w:
                    np.testing.assert_array_equal(g["terminal_observation"], w["terminal_observation"])
                    ends += 1
        assert ends >= NUM_ENVS, "the run should cross episode ends"
        # A second seeded reset starts over, like SB3's.
        remote.seed(5)
        local.seed(5)
        np.testing.assert_array_equal(remote.reset(), local.reset())
    finally:
        remote.close()
        local.close()


@pytest.mark.parametrize("retry_window", [30, 0])
def test_a_remote_vec_env_passes_retry_window_on_to_step_through_a_restart_and_a_move(
    server, retry_window: float
) -> None:
    """outage.Outage: the step runs and its answer is lost, connections are refused for a second, then the env
    answers 503 unavailable "moving" twice. The window rides it, as it was (no step twice); retries=1 alone raises."""
    outage = Outage(server.url, at=3)
    local = local_vec_env("CartPole-v1")
    local.seed(9)
    remote = RemoteVecEnv(outage.url, "CartPole-v1", NUM_ENVS, seed=9, retries=1, retry_window=retry_window)
    try:
        instance_id = remote.instance_id
        np.testing.assert_array_equal(remote.reset(), local.reset())
        for step in range(8):
            actions = np.array([step % 2, 1, 0, 1])
            if retry_window == 0 and step == 2:
                with pytest.raises(ServerUnreachable):
                    remote.step(actions)
                time.sleep(outage.refused)  # the door opens again, so that close() can delete the env
                return
            got, want = remote.step(actions), local.step(actions)
            for g, w in zip(got[:3], want[:3], strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"step {step}")
        assert remote.instance_id == instance_id and outage.moving_answers == 2
        assert requests.get(f"{server.url}/v2/envs/{instance_id}", timeout=30).json()["seq"] == 9  # 1 reset, 8 steps
    finally:
        remote.close()
        outage.close()


def test_what_a_remote_vec_env_can_and_cannot_do(server) -> None:
    with pytest.raises(ValueError, match="same step"):
        RemoteVecEnv(server.url, "CartPole-v1", 2, autoreset_mode="next_step")
    remote = RemoteVecEnv(server.url, "CartPole-v1", 2)
    try:
        assert remote.get_attr("render_mode") == [None, None]
        assert remote.get_attr("spec", indices=1)[0].id == "CartPole-v1"
        assert remote.env_is_wrapped(gym.Wrapper) == [False, False]
        with pytest.raises(NotImplementedError, match="server"):
            remote.env_method("reset")
        with pytest.raises(NotImplementedError, match="server"):
            remote.get_attr("np_random")
        with pytest.raises(NotImplementedError, match="server"):
            remote.set_attr("gravity", 1.0)
        obs = remote.reset()
        assert obs.shape == (2, 4) and remote.instance_id
    finally:
        remote.close()
    assert remote.instance_id is None


def test_a_lost_remote_vec_env_raises_instance_lost_and_is_never_recreated(make_server) -> None:
    """What docs/sb3.md says: the worker that held the envs dies, the next step raises RemoteError instance_lost
    (the infrastructure's fault, not retryable), and no env is made again behind the learner's back."""
    srv = make_server(workers=1)
    remote = RemoteVecEnv(srv.url, "CartPole-v1", 2, seed=0)
    remote.reset()
    victim = srv.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while srv.worker_pids().get(0) in (None, victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(RemoteError) as lost:
        remote.step(np.zeros(2, dtype=np.int64))
    assert lost.value.code == "instance_lost" and lost.value.fault == "infrastructure" and not lost.value.retryable
    assert requests.get(f"{srv.url}/v2/envs", timeout=10).json()["envs"] == []
