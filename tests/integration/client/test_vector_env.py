"""Server-side vector envs and RemoteVectorEnv on a real two-worker gymserve.

Seeded batched trajectories, autoresets included, must equal `gymnasium.make_vec(...,
vectorization_mode="sync")` run locally bit for bit; the sub-envs count against capacity and in the
metrics; TTL and drain treat a vector env like any env; a lost answer is resent without stepping twice.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests
from gymnasium.vector import AutoresetMode

from gymserve.client import RemoteError, RemoteVectorEnv
from servers import free_port
from tcp_proxy import FORWARD, LOSE, TcpProxy

pytestmark = pytest.mark.integration

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


def identical(a: Any, b: Any, where: str = "") -> None:
    """Equal values of equal types, arrays by dtype, shape and bytes (object arrays element by element)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            identical(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a} != {b}"


def run_side_by_side(remote: Any, local: Any, seed: int, steps: int, disabled: bool) -> int:
    """Step both with the same seeded actions; returns how many sub-episodes ended."""
    identical(remote.reset(seed=seed), local.reset(seed=seed), "reset")
    local.action_space.seed(seed)
    ended = 0
    for t in range(steps):
        actions = local.action_space.sample()
        got, want = remote.step(actions), local.step(actions)
        identical(got, want, f"step {t}")
        done = want[2] | want[3]
        ended += int(done.sum())
        if disabled and done.any():  # the caller resets the finished sub-envs itself
            identical(remote.reset(options={"reset_mask": done}), local.reset(options={"reset_mask": done}), "mask")
    return ended


@pytest.mark.parametrize("mode", MODES, ids=[m.name.lower() for m in MODES])
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("CartPole-v1", {"max_episode_steps": 15}), ("Taxi-v4", {"max_episode_steps": 10}), ("Pendulum-v1", {})],
)
def test_seeded_trajectories_with_autoresets_equal_a_local_sync_vector_env(
    server: Any, mode: AutoresetMode, env_id: str, kwargs: dict[str, Any]
) -> None:
    local = gym.make_vec(env_id, 4, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs)
    with RemoteVectorEnv(server.url, env_id, 4, autoreset_mode=mode, **kwargs) as remote:
        assert remote.metadata["autoreset_mode"] == mode and remote.num_envs == 4
        assert remote.action_space == local.action_space and remote.observation_space == local.observation_space
        assert remote.single_action_space == local.single_action_space
        assert remote.single_observation_space == local.single_observation_space
        ended = run_side_by_side(remote, local, 7, 40, mode == AutoresetMode.DISABLED)
        if env_id != "Pendulum-v1":  # its episodes last 200 steps
            assert ended >= 4, "the run crossed autoresets"
        assert remote.info()["steps"] == 160


def test_json_encoding_and_seed_lists_give_the_same_trajectory(server: Any) -> None:
    local = gym.make_vec("CartPole-v1", 3, vectorization_mode="sync")
    with RemoteVectorEnv(server.url, "CartPole-v1", 3, encoding="json") as remote:
        identical(remote.reset(seed=[5, None, 9])[0][[0, 2]], local.reset(seed=[5, None, 9])[0][[0, 2]])
        run_side_by_side(remote, local, 11, 10, False)


def test_a_training_loop_of_thousands_of_env_steps(server: Any) -> None:
    started = time.monotonic()
    with RemoteVectorEnv(server.url, "CartPole-v1", 16, autoreset_mode="same_step") as remote:
        obs, _ = remote.reset(seed=0)
        episodes = 0
        for _ in range(250):
            actions = (obs[:, 2] > 0).astype(np.int64)  # a fixed policy: push towards the pole's lean
            obs, rewards, terminations, truncations, info = remote.step(actions)
            assert obs.shape == (16, 4) and rewards.dtype == np.float64
            episodes += int((terminations | truncations).sum())
            if "final_obs" in info:
                assert all(o.shape == (4,) for o in info["final_obs"][info["_final_obs"]])
        state = remote.info()
        assert (state["steps"], state["seq"]) == (4000, 251) and episodes > 0
    assert time.monotonic() - started < 60  # a few seconds on an idle machine


def test_a_lost_vector_step_answer_is_resent_and_steps_once(server: Any) -> None:
    steps = iter(range(1, 100))

    def lose_third_step(request: bytes) -> str:
        return LOSE if b"/step" in request.split(b"\r\n", 1)[0] and next(steps) == 3 else FORWARD

    proxy = TcpProxy(server.url, lose_third_step)
    local = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    try:
        with RemoteVectorEnv(proxy.url, "CartPole-v1", 2) as remote:
            run_side_by_side(remote, local, 3, 6, False)
            assert (remote.info()["steps"], remote.info()["seq"]) == (12, 7)
    finally:
        proxy.close()


def test_bad_vector_input_is_a_4xx_naming_the_field(server: Any) -> None:
    with pytest.raises(ValueError, match="autoreset_mode"):
        RemoteVectorEnv(server.url, "CartPole-v1", 2, autoreset_mode="sometimes")
    with RemoteVectorEnv(server.url, "CartPole-v1", 3, autoreset_mode="disabled", max_episode_steps=2) as remote:
        remote.reset(seed=0)
        for bad in ([0, 1], [0, 1, 1, 0], [[0, 1], [1, 0]], [0, 1, 2]):
            with pytest.raises(RemoteError) as err:
                remote.step(np.array(bad))
            assert err.value.status == 422 and err.value.details["field"] == "action"
        with pytest.raises(RemoteError) as err:
            remote.reset(options={"reset_mask": np.array([True, False])})
        assert err.value.status == 422 and err.value.details["field"] == "options.reset_mask"
        remote.step(np.zeros(3, dtype=np.int64))
        remote.step(np.zeros(3, dtype=np.int64))  # truncated: disabled mode wants a reset first
        with pytest.raises(RemoteError) as err:
            remote.step(np.zeros(3, dtype=np.int64))
        assert err.value.status == 409 and err.value.code == "reset_needed"
        assert err.value.details["sub_envs"] == [0, 1, 2]
        v1 = requests.post(f"{server.url}/v1/envs/{remote.instance_id}/step/", json={"action": 0}, timeout=30)
        assert v1.status_code == 400 and v1.json()["code"] == "not_supported"


def metric(url: str, name: str, env_id: str = "CartPole-v1", extra: str = "") -> float:
    text = requests.get(url + "/metrics", timeout=30).text
    pattern = rf'^{name}{{env_id="{env_id}"{extra}}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_sub_envs_count_against_capacity_in_metrics_and_in_readiness(make_server: Any) -> None:
    srv = make_server(max_envs_per_worker=5, max_envs=7, max_num_envs=6)
    url = srv.url
    big = RemoteVectorEnv(url, "CartPole-v1", 5, retries=0)
    with pytest.raises(RemoteError) as err:  # 5 + 3 > 7 in the replica
        RemoteVectorEnv(url, "CartPole-v1", 3, retries=0)
    assert err.value.status == 503 and err.value.code == "capacity_exceeded"
    with pytest.raises(RemoteError) as err:
        RemoteVectorEnv(url, "CartPole-v1", 7, retries=0)
    assert err.value.status == 422 and err.value.details["field"] == "num_envs"
    small = RemoteVectorEnv(url, "CartPole-v1", 2, retries=0)  # fits in either worker: 5 + 2 = 7
    ready = requests.get(url + "/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["replica_envs"] == 7 and "full" in ready.json()["reasons"]
    assert metric(url, "gymserve_envs") == 7 and metric(url, "gymserve_envs_created_total") == 7
    big.reset(seed=0)
    for _ in range(3):
        big.step(np.ones(5, dtype=np.int64))
    assert metric(url, "gymserve_steps_total") == 15 and metric(url, "gymserve_resets_total") == 5
    big.close()
    assert metric(url, "gymserve_envs") == 2
    assert metric(url, "gymserve_envs_closed_total", extra=',reason="client"') == 5
    assert requests.get(url + "/readyz", timeout=30).json()["replica_envs"] == 2
    small.close()


def test_an_idle_vector_env_is_reaped_by_its_ttl(make_server: Any) -> None:
    srv = make_server(reaper_interval_seconds=0.1)
    remote = RemoteVectorEnv(srv.url, "CartPole-v1", 3, ttl=0.5, keepalive=False)  # idle: no lease
    remote.reset(seed=0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and metric(srv.url, "gymserve_envs_reaped_total") < 3:
        time.sleep(0.1)
    assert metric(srv.url, "gymserve_envs_reaped_total") == 3 and metric(srv.url, "gymserve_envs") == 0
    with pytest.raises(RemoteError) as err:
        remote.step(np.zeros(3, dtype=np.int64))
    assert err.value.status == 404
    remote.close()


def test_a_stopped_replica_parks_its_vector_envs_and_its_successor_steps_them_under_the_same_id(
    make_server: Any, tmp_path: Any
) -> None:
    port = free_port()
    srv = make_server(drain_seconds=20, port=port, state_dir=str(tmp_path / "state"))
    remote = RemoteVectorEnv(srv.url, "CartPole-v1", 4)
    remote.reset(seed=1)
    local = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    local.reset(seed=1)
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0  # parked at once: nothing to wait for
    make_server(port=port, state_dir=str(tmp_path / "state"))
    actions = np.array([0, 1, 1, 0], dtype=np.int64)
    assert np.array_equal(remote.step(actions)[0], local.step(actions)[0])  # same object, same id, same state
    remote.close()
