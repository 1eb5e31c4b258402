"""The kwargs policy around the table: exemptions (still plain, bounded values), operator modules' declarations,
and the 422 naming the kwarg."""

import pytest

from gymserve.envs.factory import EnvFactory
from gymserve.envs.policy import KwargsPolicy, check_value
from gymserve.errors import InvalidValue
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -3, 9.81, "8x8", ["SFFF", "FHFH", "FFFH", "HFFG"], [2, 5], (0.1, None), "x" * 256],
)
def test_plain_bounded_values_pass(value):
    assert check_value(value) is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": 1}, "expected a number"),
        ([[1, 2]], "not lists"),
        ([0] * 257, "at most 256 items"),
        ("x" * 257, "at most 256 characters"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (10**7, "within"),
        (b"bytes", "expected a number"),
    ],
)
def test_other_values_are_refused_with_a_reason(value, why):
    assert why in (check_value(value) or "")


@pytest.mark.parametrize("name", ["xml_file", "model_path", "module", "asset_dir", "config", "level", "cmd"])
def test_names_off_the_list_are_refused_naming_the_exemption(name):
    with pytest.raises(InvalidValue) as err:
        KwargsPolicy(Settings.from_env({})).check("HalfCheetah-v5", {name: "/etc/passwd"})
    assert err.value.status == 422 and err.value.details["field"] == f"kwargs.{name}"
    assert "GYMSERVE_ENV_KWARGS_ALLOW" in err.value.message


def test_an_operator_exemption_allows_one_kwarg_of_matching_envs_only():
    allow = "HalfCheetah-*:xml_file, FrozenLake-v1:desc, *:camera_cfg"
    policy = KwargsPolicy(Settings.from_env({"GYMSERVE_ENV_KWARGS_ALLOW": allow}))
    policy.check("HalfCheetah-v5", {"xml_file": "/models/cheetah.xml", "camera_cfg": 4})  # via MujocoEnv's **kwargs
    policy.check("FrozenLake-v1", {"desc": ["SF"] + ["FF"] * 98 + ["FG"]})  # past the table's 64 rows
    with pytest.raises(InvalidValue, match=r"kwargs\.xml_file"):
        policy.check("Hopper-v5", {"xml_file": "/models/hopper.xml"})
    with pytest.raises(InvalidValue, match=r"kwargs\.width"):
        policy.check("HalfCheetah-v5", {"width": 10**9})
    with pytest.raises(InvalidValue, match=r"kwargs\.camera_cfg.*takes no argument"):  # the constructor must take it
        policy.check("CartPole-v1", {"camera_cfg": 4})


@pytest.mark.parametrize("value", [{"distance": 4}, [[1, 2]], "x" * 257, 10**7, ["F" * 2] * 257])
def test_an_exempt_kwarg_is_still_a_plain_bounded_value(value):
    policy = KwargsPolicy(Settings.from_env({"GYMSERVE_ENV_KWARGS_ALLOW": "FrozenLake-v1:desc"}))
    with pytest.raises(InvalidValue, match=r"kwargs\.desc.*plain value"):
        policy.check("FrozenLake-v1", {"desc": value})


@pytest.mark.parametrize("value", ["HalfCheetah-v5", "a:b:c d", ":x", "Env-v0:"])
def test_exemptions_must_be_env_colon_kwarg(value):
    with pytest.raises(SettingsError, match="GYMSERVE_ENV_KWARGS_ALLOW"):
        Settings.from_env({"GYMSERVE_ENV_KWARGS_ALLOW": value})


def test_the_factory_applies_the_policy_to_every_create():
    factory = EnvFactory(Settings.from_env({}))
    with pytest.raises(InvalidValue) as err:
        factory.make(CreateRequest("FrozenLake-v1", kwargs={"desc": [["S", "F"], ["F", "G"]]}))  # rows are strings
    assert err.value.details["field"] == "kwargs.desc"
    factory.make(CreateRequest("FrozenLake-v1", kwargs={"desc": ["SF", "FG"], "is_slippery": False})).close()
