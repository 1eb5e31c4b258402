"""RemoteEnv against a real `gymserve serve`: a real gymnasium.Env, bit for bit the local env."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from gymserve.client import RemoteEnv, RemoteError

pytestmark = pytest.mark.integration


def _checker_warnings(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    return {str(w.message) for w in caught}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "Blackjack-v1", "MountainCarContinuous-v0"])
def test_check_env_passes_with_no_warning_the_local_env_does_not_give(server, env_id):
    with RemoteEnv(server.url, env_id) as remote:
        assert _checker_warnings(remote) <= _checker_warnings(gym.make(env_id).unwrapped)


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "Blackjack-v1", "MountainCarContinuous-v0"])
def test_seeded_trajectory_is_bit_identical_to_a_local_env(server, env_id):
    local = gym.make(env_id)
    with RemoteEnv(server.url, env_id) as remote:
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


def test_render_returns_the_rgb_frame_and_ansi_text(server):
    with RemoteEnv(server.url, "CartPole-v1", render_mode="rgb_array") as remote:
        local = gym.make("CartPole-v1", render_mode="rgb_array")
        remote.reset(seed=4)
        local.reset(seed=4)
        frame = remote.render()
        assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame, local.render())
    with RemoteEnv(server.url, "FrozenLake-v1", render_mode="ansi") as remote:
        remote.reset(seed=0)
        assert "SFFF" in remote.render().replace("\x1b[41m", "").replace("\x1b[0m", "")


def test_server_errors_raise_with_the_servers_message(server):
    with pytest.raises(RemoteError) as err:
        RemoteEnv(server.url, "NoSuchEnv-v0")
    assert err.value.status == 400 and "malformed environment ID" in err.value.message
    with RemoteEnv(server.url, "CartPole-v1") as remote, pytest.raises(RemoteError) as err:
        remote.step(0)
    assert err.value.code == "reset_needed"


def test_close_deletes_the_env_on_the_server_and_is_idempotent(server):
    import requests

    remote = RemoteEnv(server.url, "CartPole-v1")
    iid = remote.instance_id
    assert iid in requests.get(server.url + "/v1/envs/").json()["all_envs"]
    remote.close()
    remote.close()
    assert iid not in requests.get(server.url + "/v1/envs/").json()["all_envs"]
