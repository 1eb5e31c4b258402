"""Importing gymserve changes no environment variable: what renders need is set where a server process starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from gymserve.headless import SDL_HEADLESS, headless_sdl

CHECK = """
    import importlib, json, os, sys
    if sys.argv[1] == "after-gymnasium":
        import gymnasium  # sets PYGAME_HIDE_SUPPORT_PROMPT itself when imported: its change, not gymserve's
    before = dict(os.environ)
    for name in sys.argv[2:]:
        importlib.import_module(name)
    changed = {k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k)}
    print(json.dumps(sorted(changed)))
"""


def changed_by(*modules: str, baseline: str = "nothing") -> str:
    """The variables that importing `modules` changes, in a fresh interpreter (after importing `baseline`)."""
    env = {k: v for k, v in os.environ.items() if k not in SDL_HEADLESS}  # as a learner's shell would have it
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK), baseline, *modules],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_gymserve_changes_no_environment_variable() -> None:
    assert changed_by("gymserve") == "[]"


@pytest.mark.parametrize("modules", [("gymserve.client",), ("gymserve", "gymserve.client", "gymserve.app")])
def test_importing_the_client_or_the_app_changes_none_beyond_what_gymnasium_does(modules: tuple[str, ...]) -> None:
    assert changed_by(*modules, baseline="after-gymnasium") == "[]"


def test_a_server_process_is_made_headless_without_overriding_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDL_HEADLESS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SDL_VIDEODRIVER", "offscreen")
    headless_sdl()
    assert os.environ["SDL_VIDEODRIVER"] == "offscreen"
    assert {k: os.environ[k] for k in SDL_HEADLESS if k != "SDL_VIDEODRIVER"} == {
        "SDL_NO_SIGNAL_HANDLERS": "1",
        "SDL_AUDIODRIVER": "dummy",
        "PYGAME_HIDE_SUPPORT_PROMPT": "1",
    }
