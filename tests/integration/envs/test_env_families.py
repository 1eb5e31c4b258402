"""Operators' envs and the big families through a real `gymserve serve`: bit-identical to a local gymnasium.make."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import requests

from gymserve.client import RemoteEnv
from servers import start_server

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[3] / "examples" / "guess-env"
HAS_ALE = importlib.util.find_spec("ale_py") is not None


def _register_locally(package: str | None) -> None:
    """Import what registers the env in this process too, as GYMSERVE_ENV_MODULES does on the server."""
    if package is None:
        if importlib.util.find_spec("guess_env") is None:  # scripts/test.sh installs it; a bare checkout still runs
            sys.path.insert(0, str(EXAMPLE))
        importlib.import_module("guess_env")
    elif package == "ale_py":
        importlib.import_module("ale_py")


# (env id, steps per episode, the package that must be installed): frames over /v1 are slow, so Pong is short.
CASES = [
    pytest.param("Guess-v0", 60, None, id="guess-example"),
    pytest.param("HalfCheetah-v5", 40, "mujoco", id="mujoco"),
    pytest.param("LunarLander-v3", 80, "Box2D", id="box2d"),
    pytest.param("ALE/Pong-v5", 12, "ale_py", id="atari"),
]


@pytest.fixture(scope="module")
def family_server(tmp_path_factory):
    modules = "guess_env,ale_py" if HAS_ALE else "guess_env"
    tmp = tmp_path_factory.mktemp("families")
    with pytest.MonkeyPatch.context() as mp:  # the server finds the example even where it is not installed
        mp.chdir(tmp)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory on a model warning
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")])))
        srv = start_server(tmp, workers=1, env_modules=modules, ready_timeout=60)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the local MuJoCo env's MUJOCO_LOG.TXT lands here, not in the checkout


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(b, np.integer | np.floating):  # a local Discrete part is a numpy scalar, or a Python int
        return type(a) in (type(b), int, float) and a == b
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", ["v1", "v2"])
@pytest.mark.parametrize(("env_id", "steps", "package"), CASES)
def test_seeded_trajectory_is_bit_identical_to_a_local_env(family_server, env_id, steps, package, protocol):
    if package:
        pytest.importorskip(package, reason=f"{package} is not installed (scripts/test.sh installs .[families])")
    _register_locally(package)
    local = gym.make(env_id)
    with RemoteEnv(family_server.url, env_id, protocol=protocol) as remote:
        assert remote.observation_space == local.observation_space
        assert remote.action_space == local.action_space
        for episode in range(2):
            seed = 7 + episode
            obs_r, _ = remote.reset(seed=seed)
            obs_l, _ = local.reset(seed=seed)
            assert _same(obs_r, obs_l)
            local.action_space.seed(seed)
            for _ in range(steps):
                action = local.action_space.sample()
                got, want = remote.step(action), local.step(action)
                assert _same(got[0], want[0]), (got[0], want[0])
                assert (float(got[1]), got[2], got[3]) == (float(want[1]), want[2], want[3])
                if got[2] or got[3]:
                    break
    local.close()


def test_the_example_env_takes_its_kwargs_and_the_policy_still_applies(family_server):
    ok = requests.post(family_server.url + "/v2/envs", json={"env_id": "Guess-v0", "kwargs": {"dims": 3}})
    assert ok.status_code == 201, ok.text
    assert ok.json()["action_space"]["shape"] == [3]
    for kwargs in ({"dims": {"n": 3}}, {"dims": 9}, {"seed_file": "/etc/passwd"}):  # its GYMSERVE_KWARGS says 1..8
        bad = requests.post(family_server.url + "/v2/envs", json={"env_id": "Guess-v0", "kwargs": kwargs})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == f"kwargs.{next(iter(kwargs))}"


def test_a_client_still_cannot_name_a_module(family_server):
    resp = requests.post(family_server.url + "/v1/envs/", json={"env_id": "guess_env.env:GuessEnv"})
    assert resp.status_code == 400 and "malformed environment ID" in resp.json()["message"]


def test_a_case_typo_is_answered_with_the_right_id_on_both_apis(family_server):
    v1 = requests.post(family_server.url + "/v1/envs/", json={"env_id": "guess-v0"})
    assert v1.status_code == 400 and "malformed environment ID" in v1.json()["message"]
    assert "did you mean Guess-v0?" in v1.json()["message"]
    v2 = requests.post(family_server.url + "/v2/envs", json={"env_id": "Cartpole-v1"})
    assert v2.status_code == 422 and "did you mean CartPole-v1?" in v2.json()["error"]["message"]


def _serve(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GYMSERVE_PORT": "1", **variables}  # never binds: the start stops before gunicorn
    return subprocess.run(
        [sys.executable, "-m", "gymserve.cli", "serve"], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_module_that_cannot_be_imported_stops_the_start_naming_it():
    out = _serve(GYMSERVE_ENV_MODULES="guess_env_typo")
    assert out.returncode == 2 and "guess_env_typo" in out.stderr and "GYMSERVE_ENV_MODULES" in out.stderr
    assert "Booting worker" not in out.stderr


def test_an_allowlist_that_matches_no_env_stops_the_start():
    out = _serve(GYMSERVE_ALLOWED_ENVS="Guess-v0")  # the module that registers it is not listed
    assert out.returncode == 2 and "no env could ever be created" in out.stderr and "Guess-v0" in out.stderr


def test_a_pattern_that_matches_nothing_is_a_warning_and_the_server_starts(make_server):
    srv = make_server(workers=1, allowed_envs="CartPole-*,Guess-v0")
    assert "warning: GYMSERVE_ALLOWED_ENVS: 'Guess-v0' matches no registered env" in srv.log()
