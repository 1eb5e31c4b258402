"""The env allowlist and argument checks: nothing of the client's choosing reaches gymnasium.make unchecked."""

import pytest

from gymserve.envs.factory import EnvFactory
from gymserve.errors import EnvNotAllowed, InvalidValue, MalformedEnvId, MissingDependency
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings


@pytest.fixture
def factory():
    return EnvFactory(Settings.from_env({}))


def test_default_allowlist_is_gymnasiums_own_families(factory):
    assert {"CartPole-v1", "FrozenLake-v1", "Blackjack-v1", "Ant-v4"} <= factory.allowed
    assert "GymV26Environment-v0" not in factory.allowed  # needs shimmy: not a Gymnasium family


@pytest.mark.parametrize(
    "env_id",
    [
        "gymnasium.envs.classic_control:CartPoleEnv",
        "os:system",
        "NoSuchEnv-v0",
        "",
        42,
        None,
        "../../etc/passwd",
        "x" * 500,
    ],
)
def test_module_form_unknown_and_odd_ids_are_malformed(factory, env_id):
    with pytest.raises(MalformedEnvId, match="malformed environment ID"):
        factory.check_env_id(env_id)


def test_allowlist_patterns_restrict_creates():
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "CartPole-*"}))
    factory.check_env_id("CartPole-v1")
    with pytest.raises(EnvNotAllowed, match="GYMSERVE_ALLOWED_ENVS"):
        factory.check_env_id("FrozenLake-v1")


def test_missing_optional_dependency_names_it_and_how_to_install(factory):
    pytest.importorskip("gymnasium")
    try:
        import mujoco  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match=r"MuJoCo.*pip install"):
            factory.make(CreateRequest("Ant-v5"))
    else:
        factory.make(CreateRequest("Ant-v5")).close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"render_mode": "human"}, "kwargs.render_mode"),
        ({"render_mode": "pixels"}, "kwargs.render_mode"),
        ({"not_an_arg": 1}, "kwargs.not_an_arg"),
        ({"map_name": "no-such-map"}, "kwargs.map_name"),
    ],
)
def test_bad_kwargs_are_refused_before_or_by_make(factory, kwargs, field):
    with pytest.raises(InvalidValue) as err:
        factory.make(CreateRequest("FrozenLake-v1", kwargs=kwargs))
    assert err.value.details["field"] == field


def test_auto_reset_wraps_the_env_so_it_resets_itself(factory):
    env = factory.make(CreateRequest("CartPole-v1", auto_reset=True, max_episode_steps=2))
    env.reset(seed=0)
    env.step(0)
    *_, truncated, _ = env.step(0)
    assert truncated
    _, reward, terminated, truncated, _ = env.step(0)  # Autoreset: this step is the reset
    assert (reward, terminated, truncated) == (0.0, False, False)
    env.close()


def test_a_version_gymnasium_1_dropped_is_malformed_with_a_pointer_to_the_current_one(factory):
    with pytest.raises(MalformedEnvId, match=r"malformed environment ID 'Taxi-v3'; this server has Taxi-v4"):
        factory.check_env_id("Taxi-v3")


def test_env_modules_are_imported_one_thread_at_a_time_and_once(factory, monkeypatch):
    """Two first imports of an env's module at once can see it half-imported (importlib's KeyError, a 500 in CI)."""
    import threading
    import time

    import gymserve.envs.factory

    inside, overlaps, calls = [0], [0], []
    real = gymserve.envs.factory.load_env_creator

    def slow_load(entry_point):
        inside[0] += 1
        overlaps[0] = max(overlaps[0], inside[0])
        calls.append(entry_point)
        time.sleep(0.02)
        inside[0] -= 1
        return real(entry_point)

    monkeypatch.setattr(gymserve.envs.factory, "load_env_creator", slow_load)
    ids = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"] * 3
    threads = [threading.Thread(target=factory.make, args=(CreateRequest(i),)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1
    assert len(calls) == 4


def test_the_autoreset_modes_are_gymnasiums_and_every_declaration_takes_them_from_one_list():
    from typing import get_args

    import msgspec
    from gymnasium.vector import AutoresetMode

    from gymserve.envs.factory import AUTORESET_MODES
    from gymserve.pipeline import models
    from gymserve.pipeline.models import DEFAULT_AUTORESET, AutoresetModeName

    assert set(AUTORESET_MODES.values()) == set(AutoresetMode), "every Gymnasium mode has a /v2 name"
    assert tuple(AUTORESET_MODES) == get_args(AutoresetModeName) and DEFAULT_AUTORESET in AUTORESET_MODES
    schema = msgspec.json.schema(models.CreateRequest)["$defs"]["CreateRequest"]["properties"]["autoreset_mode"]
    assert sorted(schema["anyOf"][0]["enum"]) == sorted(AUTORESET_MODES)
