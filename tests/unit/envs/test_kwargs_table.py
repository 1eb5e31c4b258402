"""Every served family's listed kwargs: each env is made with each at a legal value, and one value past each bound
is a 422 naming it; unlisted names are refused."""

import importlib.util
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import pytest

from gymserve.envs.factory import EnvFactory
from gymserve.envs.kwargs_table import FAMILY_KWARGS, Arg
from gymserve.errors import InvalidValue, MissingDependency
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings

HAS_ALE = importlib.util.find_spec("ale_py") is not None

# ALE's 352 ids share one constructor whose arguments do not depend on the game (mode and difficulty 0 exist in
# every game): a few ids stand for all of them, which keeps this test at seconds instead of minutes.
ALE_SAMPLE = ("ALE/Pong-v5", "ALE/Breakout-v5", "ALE/Pong-ram-v5", "PongNoFrameskip-v4")


def served_ids(entry_point: str) -> list[str]:
    ids = sorted(i for i, s in gym.envs.registry.items() if s.entry_point == entry_point)
    return [i for i in ids if i in ALE_SAMPLE] if entry_point.startswith("ale_py") else ids


@pytest.fixture(scope="module")
def factory() -> EnvFactory:
    return EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": "ale_py"} if HAS_ALE else {}))


def legal_sets(table: dict[str, Arg], modes: list[str]) -> Iterator[dict[str, Any]]:
    """Every listed argument at a legal value, in as few makes as the env allows (camera_id excludes camera_name)."""
    together = {name: arg.legal() for name, arg in table.items() if name != "camera_name"}
    if modes:
        together["render_mode"] = modes[-1]
    yield together
    if "camera_name" in table:
        yield {"camera_name": table["camera_name"].legal()}


# Registered by Gymnasium but not makeable with the families' pinned dependencies (said, not skipped).
CANNOT_BE_MADE_HERE = {"Pusher-v4"}  # needs mujoco<3; the mujoco extra installs MuJoCo 3


def make(factory: EnvFactory, env_id: str, kwargs: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Gymnasium's v4 MuJoCo envs and old ALE ids say so
        factory.make(CreateRequest(env_id, kwargs=kwargs)).close()


def served_or_skip(entry_point: str) -> list[str]:
    ids = served_ids(entry_point)
    if not ids:
        pytest.skip(f"{entry_point} is not registered here (ale_py not installed?)")
    return list(ids)


@pytest.mark.parametrize("entry_point", sorted(FAMILY_KWARGS))
def test_every_env_takes_every_listed_argument_at_a_legal_value(factory: EnvFactory, entry_point: str) -> None:
    ids = served_or_skip(entry_point)
    for env_id in ids:
        try:
            make(factory, env_id, {})
        except MissingDependency:
            assert env_id in CANNOT_BE_MADE_HERE, env_id  # any other env of the families must be made
            continue
        modes = factory.kwargs_policy.render_modes(env_id)
        for kwargs in legal_sets(dict(FAMILY_KWARGS[entry_point]), modes):
            make(factory, env_id, kwargs)


@pytest.mark.parametrize("entry_point", sorted(FAMILY_KWARGS))
def test_one_value_past_each_bound_is_a_422_naming_the_argument(factory: EnvFactory, entry_point: str) -> None:
    ids = served_or_skip(entry_point)
    for env_id in ids:
        for name, arg in FAMILY_KWARGS[entry_point].items():
            with pytest.raises(InvalidValue) as err:
                factory.make(CreateRequest(env_id, kwargs={name: arg.past()}))
            assert err.value.status == 422 and err.value.details["field"] == f"kwargs.{name}", (env_id, name)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Ant-v5", {"frame_skip": 1_000_000}),
        ("HalfCheetah-v5", {"width": 20_000}),
        ("Humanoid-v5", {"height": 20_000}),
        ("Hopper-v5", {"camera_id": 1}),  # past the model's one camera: MuJoCo would abort the worker
        ("FrozenLake-v1", {"desc": ["S" + "F" * 125] + ["F" * 126] * 124 + ["F" * 125 + "G"]}),
        ("FrozenLake-v1", {"desc": ["SF", "FFF"]}),
        ("FrozenLake-v1", {"desc": ["SX", "FG"]}),
        ("LunarLander-v3", {"gravity": -20}),
        ("CartPole-v1", {"sutton_barto_reward": 1}),  # a bool, not a number
        ("ALE/Pong-v5", {"frameskip": 1_000_000}),
        ("ALE/Pong-v5", {"frameskip": [2, 1_000_000]}),
    ],
)
def test_the_costly_cases_are_refused_by_the_table(factory: EnvFactory, env_id: str, kwargs: dict[str, Any]) -> None:
    if env_id not in gym.envs.registry:
        pytest.skip(f"{env_id} is not registered here")
    (name,) = kwargs
    with pytest.raises(InvalidValue) as err:
        factory.kwargs_policy.check(env_id, kwargs)  # the map of 126 x 126 is also over the 16 KiB of a create
    assert err.value.details["field"] == f"kwargs.{name}"


@pytest.mark.parametrize(
    ("env_id", "name"),
    [
        ("CartPole-v1", "gravity"),
        ("HalfCheetah-v5", "xml_file"),
        ("Ant-v5", "main_body"),
        ("Hopper-v5", "default_camera_config"),
        ("CarRacing-v3", "verbose"),
        ("Acrobot-v1", "config"),
    ],
)
def test_an_argument_not_on_the_list_is_a_422_naming_it(factory: EnvFactory, env_id: str, name: str) -> None:
    with pytest.raises(InvalidValue) as err:
        factory.make(CreateRequest(env_id, kwargs={name: 1}))
    assert err.value.details["field"] == f"kwargs.{name}"
    assert "takes no argument" in err.value.message and "GYMSERVE_ENV_KWARGS_ALLOW" in err.value.message


@pytest.mark.skipif(not HAS_ALE, reason="ale_py not installed")
def test_the_registrations_own_values_pass_as_a_restore_sends_them(factory: EnvFactory) -> None:
    made = factory.make(CreateRequest("ALE/Pong-v5"))
    try:
        factory.kwargs_policy.check("ALE/Pong-v5", dict(made.spec.kwargs))  # game="pong" is not listed
    finally:
        made.close()
    with pytest.raises(InvalidValue, match=r"kwargs\.game"):
        factory.kwargs_policy.check("ALE/Pong-v5", {"game": "breakout"})


def test_legal_creates_of_the_docs_and_the_suite_keep_working(factory: EnvFactory) -> None:
    for env_id, kwargs in [
        ("FrozenLake-v1", {"is_slippery": False, "map_name": "8x8"}),
        ("FrozenLake-v1", {"desc": ["SF", "FG"], "render_mode": "ansi"}),
        ("CartPole-v1", {"render_mode": "rgb_array"}),
        ("MountainCar-v0", {"goal_velocity": 0.01}),
        ("Blackjack-v1", {"natural": True, "sab": False}),
        ("Taxi-v4", {"is_rainy": True}),
        ("Pendulum-v1", {"render_mode": None}),
    ]:
        factory.make(CreateRequest(env_id, kwargs=kwargs)).close()
