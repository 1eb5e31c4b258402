"""GYMSERVE_ENV_MODULES: operator modules imported before the allowlist, start-up checks, and the id hint."""

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

from gymserve.envs.factory import EnvFactory
from gymserve.envs.modules import EnvModuleError, import_env_modules
from gymserve.errors import EnvNotAllowed, InvalidValue, MalformedEnvId, MissingDependency
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings, SettingsError

_MODULE = """
import gymnasium
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

class MyCartPole(CartPoleEnv):
    pass

gymnasium.register(id="{env_id}", entry_point="{module}:MyCartPole", max_episode_steps=10)
{declaration}
"""


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Writes fresh modules on sys.path that register a fresh env id when imported: (module, env_id) each."""
    written: list[tuple[str, str]] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(declaration: str = "") -> tuple[str, str]:
        tag = uuid.uuid4().hex[:8]
        module, env_id = f"unit_envs_{tag}", f"UnitCart{tag}-v0"
        text = _MODULE.format(env_id=env_id, module=module, declaration=declaration.replace("ENV_ID", env_id))
        (tmp_path / f"{module}.py").write_text(text)
        written.append((module, env_id))
        return module, env_id

    yield write
    for module, env_id in written:
        gym.envs.registry.pop(env_id, None)
        sys.modules.pop(module, None)


@pytest.fixture
def env_module(write_module: Any) -> tuple[str, str]:
    """A fresh module on sys.path that registers a fresh env id when imported: (module, env_id)."""
    return write_module()  # type: ignore[no-any-return]


def test_an_env_module_makes_its_envs_creatable_by_default(env_module):
    module, env_id = env_module
    assert env_id not in EnvFactory(Settings.from_env({})).allowed  # nothing imported it yet
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": f" {module} "}))
    assert env_id in factory.allowed and "CartPole-v1" in factory.allowed
    factory.make(CreateRequest(env_id)).close()


def test_envs_of_a_module_imported_earlier_still_count_as_its_own(env_module):
    module, env_id = env_module
    __import__(module)  # e.g. a test or a sitecustomize imported it first: the registry diff is empty
    assert env_id in import_env_modules([module])


def test_the_allowlist_still_narrows_module_envs(env_module):
    module, env_id = env_module
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": module, "GYMSERVE_ALLOWED_ENVS": "CartPole-*"}))
    with pytest.raises(EnvNotAllowed):
        factory.check_env_id(env_id)


def test_a_module_that_cannot_be_imported_is_named():
    with pytest.raises(EnvModuleError, match=r"GYMSERVE_ENV_MODULES.*'no_such_env_module_x'.*ModuleNotFoundError"):
        EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": "no_such_env_module_x"}))


def test_a_module_that_raises_on_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_env_module_y.py").write_text("raise RuntimeError('missing licence key')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EnvModuleError, match=r"'broken_env_module_y'.*RuntimeError: missing licence key"):
        import_env_modules(["broken_env_module_y"])


@pytest.mark.parametrize("value", ["os:system", "a b", "1abc", "pkg..mod", "../x"])
def test_env_modules_must_be_module_names(value):
    with pytest.raises(SettingsError, match="GYMSERVE_ENV_MODULES"):
        Settings.from_env({"GYMSERVE_ENV_MODULES": value})


def test_patterns_that_match_nothing_are_reported():
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "CartPole-*,NowhereToBeFound-v0"}))
    assert factory.unmatched_patterns() == ["NowhereToBeFound-v0"]
    assert EnvFactory(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "NowhereToBeFound-*"})).allowed == frozenset()


@pytest.mark.parametrize(
    ("env_id", "hint"),
    [
        ("Cartpole-v1", "did you mean CartPole-v1?"),
        ("CARTPOLE-V1", "did you mean CartPole-v1?"),
        ("CartPol-v1", "did you mean CartPole-v1"),
        ("Taxi-v3", "; this server has Taxi-v4"),
        ("Zzzzzz-v0", ": no env of that id is registered on this server"),
    ],
)
def test_an_unknown_but_well_formed_id_keeps_the_seed_words_and_hints(env_id, hint):
    with pytest.raises(MalformedEnvId) as err:
        EnvFactory(Settings.from_env({})).check_env_id(env_id)
    assert err.value.message.startswith(f"Attempted to look up malformed environment ID '{env_id}'")
    assert hint in err.value.message


def test_a_hint_only_names_envs_this_server_allows():
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "Acrobot-*"}))
    with pytest.raises(MalformedEnvId) as err:
        factory.check_env_id("Cartpole-v1")
    assert "CartPole" not in err.value.message.split("'Cartpole-v1'", 1)[1]


def test_an_env_whose_package_is_missing_is_a_missing_dependency_not_a_bad_id():
    """Kept true where the families are installed (MuJoCo's own missing-dependency test then skips)."""
    gym.register(id="UnitMissingDep-v0", entry_point="no_such_env_package_z.env:Env")
    try:
        factory = EnvFactory(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "UnitMissingDep-*"}))
        with pytest.raises(MissingDependency, match="the module 'no_such_env_package_z' is not installed"):
            factory.make(CreateRequest("UnitMissingDep-v0"))
    finally:
        gym.envs.registry.pop("UnitMissingDep-v0")


DECLARED = """
GYMSERVE_KWARGS = {"ENV_ID": {"sutton_barto_reward": {"type": "bool"}, "size": {"type": "int", "min": 1, "max": 8}}}

class MyCartPole(CartPoleEnv):
    def __init__(self, size=1, **kwargs):
        super().__init__(**kwargs)
"""


def test_a_module_that_declares_nothing_serves_its_envs_without_kwargs(env_module):
    module, env_id = env_module
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": module}))
    with pytest.raises(InvalidValue) as err:  # CartPoleEnv takes it, but the module did not say so
        factory.make(CreateRequest(env_id, kwargs={"sutton_barto_reward": True}))
    assert err.value.details["field"] == "kwargs.sutton_barto_reward" and "GYMSERVE_KWARGS" in err.value.message
    factory.make(CreateRequest(env_id, kwargs={"render_mode": "rgb_array"})).close()  # from its metadata


def test_a_module_declares_its_envs_arguments_in_gymserve_kwargs(write_module):
    module, env_id = write_module(DECLARED)
    factory = EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": module}))
    factory.make(CreateRequest(env_id, kwargs={"sutton_barto_reward": True, "size": 8})).close()
    for kwargs in ({"size": 9}, {"size": True}, {"sutton_barto_reward": 1}, {"gravity": 1.0}):
        with pytest.raises(InvalidValue) as err:
            factory.make(CreateRequest(env_id, kwargs=kwargs))
        assert err.value.details["field"] == f"kwargs.{next(iter(kwargs))}"


@pytest.mark.parametrize(
    ("declaration", "why"),
    [
        ('GYMSERVE_KWARGS = {"ENV_ID": {"size": {"type": "int", "min": 1}}}', r"\['size'\]: expected"),
        ('GYMSERVE_KWARGS = {"ENV_ID": {"size": {"type": "int", "min": 9, "max": 1}}}', "min <= max"),
        ('GYMSERVE_KWARGS = {"ENV_ID": {"render_mode": {"type": "bool"}}}', "metadata"),
        ('GYMSERVE_KWARGS = {"ENV_ID": ["size"]}', "must map argument names"),
        ('GYMSERVE_KWARGS = {"CartPole-v1": {"x": {"type": "bool"}}}', "CartPole-v1, which it does not register"),
    ],
)
def test_a_malformed_declaration_stops_the_start_naming_the_module(write_module, declaration, why):
    module, _ = write_module(declaration)
    with pytest.raises(EnvModuleError, match=why) as err:
        EnvFactory(Settings.from_env({"GYMSERVE_ENV_MODULES": module}))
    assert f"'{module}'" in str(err.value)
