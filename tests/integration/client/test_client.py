"""RemoteEnv against a real `gymserve serve`, over /v1 and /v2 (msgpack and JSON): a real gymnasium.Env, bit for bit."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import requests
from gymnasium.utils.env_checker import check_env

from gymserve.client import EnvClosed, RemoteEnv, RemoteError, RemoteVectorEnv

pytestmark = pytest.mark.integration

ENV_IDS = ["CartPole-v1", "FrozenLake-v1", "Blackjack-v1", "MountainCarContinuous-v0"]


@pytest.fixture(
    params=[
        pytest.param({"protocol": "v1"}, id="v1"),
        pytest.param({"protocol": "v2"}, id="v2-msgpack"),
        pytest.param({"protocol": "v2", "encoding": "json"}, id="v2-json"),
    ]
)
def protocol(request):
    """RemoteEnv's keyword arguments for one protocol and encoding."""
    return request.param


def _checker_warnings(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    return {str(w.message) for w in caught}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes_with_no_warning_the_local_env_does_not_give(server, env_id, protocol):
    with RemoteEnv(server.url, env_id, **protocol) as remote:
        assert _checker_warnings(remote) <= _checker_warnings(gym.make(env_id).unwrapped)


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_trajectory_is_bit_identical_to_a_local_env(server, env_id, protocol):
    local = gym.make(env_id)
    with RemoteEnv(server.url, env_id, **protocol) as remote:
        assert remote.observation_space == local.observation_space
        assert remote.action_space == local.action_space
        for episode in range(3):
            seed = 100 + episode
            obs_r, _ = remote.reset(seed=seed)
            obs_l, _ = local.reset(seed=seed)
            assert _same(obs_r, obs_l)
            local.action_space.seed(seed)
            for _ in range(300):
                action = local.action_space.sample()
                got, want = remote.step(action), local.step(action)
                assert _same(got[0], want[0]), (got[0], want[0])
                assert got[1:4] == tuple(float(x) if i == 0 else x for i, x in enumerate(want[1:4]))
                if got[2] or got[3]:
                    break
    local.close()


def test_render_returns_the_rgb_frame_and_ansi_text(server, protocol):
    with RemoteEnv(server.url, "CartPole-v1", render_mode="rgb_array", **protocol) as remote:
        local = gym.make("CartPole-v1", render_mode="rgb_array")
        remote.reset(seed=4)
        local.reset(seed=4)
        frame = remote.render()
        assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame, local.render())
    with RemoteEnv(server.url, "FrozenLake-v1", render_mode="ansi", **protocol) as remote:
        remote.reset(seed=0)
        assert "SFFF" in remote.render().replace("\x1b[41m", "").replace("\x1b[0m", "")


def test_server_errors_raise_with_the_servers_message(server, protocol):
    with pytest.raises(RemoteError) as err:
        RemoteEnv(server.url, "NoSuchEnv-v0", **protocol)
    assert err.value.status == (400 if protocol["protocol"] == "v1" else 422)
    assert "malformed environment ID" in err.value.message and err.value.details["field"] == "env_id"
    with RemoteEnv(server.url, "CartPole-v1", **protocol) as remote, pytest.raises(RemoteError) as err:
        remote.step(0)
    assert err.value.code == "reset_needed"


def test_close_deletes_the_env_on_the_server_and_is_idempotent(server, protocol):
    remote = RemoteEnv(server.url, "CartPole-v1", **protocol)
    iid = remote.instance_id
    assert iid in requests.get(server.url + "/v1/envs/").json()["all_envs"]
    remote.close()
    remote.close()
    assert remote.instance_id is None
    assert iid not in requests.get(server.url + "/v1/envs/").json()["all_envs"]


def test_an_env_used_after_close_raises_env_closed_and_sends_nothing(server, protocol):
    remote = RemoteEnv(server.url, "CartPole-v1", render_mode="rgb_array", **protocol)
    remote.reset(seed=0)
    remote.close()
    for call in (lambda: remote.step(0), lambda: remote.reset(seed=1), remote.render):
        with pytest.raises(EnvClosed) as err:  # not urllib3's ClosedPoolError
            call()
        assert isinstance(err.value, gym.error.ClosedEnvironmentError) and "closed" in str(err.value)


def test_a_vector_env_used_after_close_raises_env_closed(server):
    remote = RemoteVectorEnv(server.url, "CartPole-v1", 2)
    remote.reset(seed=0)
    remote.close()
    for call in (lambda: remote.step(np.zeros(2, dtype=np.int64)), remote.reset, remote.info):
        with pytest.raises(EnvClosed):
            call()
