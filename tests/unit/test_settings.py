"""Settings: defaults, parsing from GYMSERVE_* variables, and errors that name the variable."""

import pytest

from gymserve.settings import Settings, SettingsError, describe


def test_defaults_work_with_no_configuration():
    s = Settings.from_env({})
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.env_ttl_seconds > 0 and s.max_envs_per_worker > 0
    assert s.node_id  # derived from the host name


def test_values_are_read_and_typed_from_variables():
    s = Settings.from_env(
        {
            "GYMSERVE_PORT": "9001",
            "GYMSERVE_ENV_TTL_SECONDS": "1.5",
            "GYMSERVE_ALLOWED_ENVS": "CartPole-*, FrozenLake-v1",
        }
    )
    assert s.port == 9001 and s.env_ttl_seconds == 1.5
    assert s.allowed_env_patterns == ("CartPole-*", "FrozenLake-v1")


def test_worker_ports_follow_the_slots():
    s = Settings.from_env({"GYMSERVE_WORKER_PORT_BASE": "8100", "GYMSERVE_WORKERS": "3"})
    assert [s.worker_port(slot) for slot in (0, 2)] == [8100, 8102] and s.worker_slots == 11
    assert Settings.from_env({}).worker_port(0) is None  # off by default


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("GYMSERVE_PORT", "eighty", "expected an integer"),
        ("GYMSERVE_WORKERS", "0", "at least 1"),
        ("GYMSERVE_LOG_LEVEL", "loud", "one of"),
        ("GYMSERVE_NODE_ID", "Bad_Node", "lowercase"),
        ("GYMSERVE_ENV_TTL_SECONDS", "99999999", "exceeds"),
        ("GYMSERVE_WORKER_PORT_BASE", "7995", "leave out GYMSERVE_PORT=8000"),  # 7995..8004 holds 8000
        ("GYMSERVE_WORKER_PORT_BASE", "65530", "must end by 65535"),
    ],
)
def test_bad_value_fails_with_the_variable_name(var, value, words):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: value})
    assert var in str(err.value) and words in str(err.value)


def test_every_setting_is_documented():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    missing = [row["variable"] for row in describe() if f"`{row['variable']}`" not in readme]
    assert not missing, f"settings missing from docs/settings.md's table: {missing}"
