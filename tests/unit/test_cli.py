"""`gymserve settings`: the values in effect and where each came from; a bad value is an error naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gymserve.cli import main
from gymserve.settings import describe


def settings_rows(capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """`gymserve settings` run in this process, as {variable: [value, source, default, meaning]}."""
    assert main(["settings"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| variable | value | source | default | meaning |"
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    return {cells[0].strip("`"): cells[1:] for cells in rows}


@pytest.fixture(autouse=True)
def no_gymserve_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for row in describe():
        monkeypatch.delenv(row["variable"], raising=False)


def test_settings_shows_the_value_in_effect_and_its_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GYMSERVE_PORT", "9000")
    monkeypatch.setenv("GYMSERVE_ENV_TTL_SECONDS", " 30 ")
    monkeypatch.setenv("GYMSERVE_ALLOWED_ENVS", "CartPole-*")
    rows = settings_rows(capsys)
    assert rows["GYMSERVE_PORT"][:3] == ["`9000`", "environment", "`8000`"]
    assert rows["GYMSERVE_ENV_TTL_SECONDS"][:3] == ["`30.0`", "environment", "`900.0`"]
    assert rows["GYMSERVE_ALLOWED_ENVS"][:3] == ["`CartPole-*`", "environment", "(derived)"]
    assert rows["GYMSERVE_WORKERS"][:3] == ["`2`", "default", "`2`"]


def test_settings_lists_every_setting_and_shows_derived_values(capsys: pytest.CaptureFixture[str]) -> None:
    rows = settings_rows(capsys)
    assert list(rows) == [row["variable"] for row in describe()]
    assert all(cells[1] == "default" for cells in rows.values())
    node_id = rows["GYMSERVE_NODE_ID"][0]
    assert node_id.startswith("`") and len(node_id) > 2  # the host name's label, not an empty default
    assert rows["GYMSERVE_RUNTIME_DIR"][0] == "(unset)"


@pytest.mark.parametrize(
    ("variables", "named", "words"),
    [
        ({"GYMSERVE_PORT": "eighty"}, "GYMSERVE_PORT", "expected an integer"),
        ({"GYMSERVE_THREADS": "0"}, "GYMSERVE_THREADS", "at least 1"),
        (
            {"GYMSERVE_ENV_TTL_SECONDS": "100", "GYMSERVE_ENV_TTL_MAX_SECONDS": "10"},
            "GYMSERVE_ENV_TTL_SECONDS",
            "exceeds",
        ),
    ],
)
def test_a_bad_value_is_an_error_that_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    named: str,
    words: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["settings"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gymserve: bad setting: ") and named in err and words in err


def test_the_command_in_a_fresh_process_reads_its_environment() -> None:
    env = {"GYMSERVE_PORT": "9000", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "gymserve.cli", "settings"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "| `GYMSERVE_PORT` | `9000` | environment | `8000` |" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gymserve.cli", "settings"],
        env={**env, "GYMSERVE_PORT": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "GYMSERVE_PORT" in bad.stderr
