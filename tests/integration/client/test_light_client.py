"""The light client: `pip install gymserve` is the client alone, and it runs with none of the server's packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SERVER_ONLY = ("flask", "werkzeug", "gunicorn", "prometheus_client", "pygame")

# A Python that cannot import the server's packages: a meta path finder refuses them before any other finder.
_CLIENT_RUN = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is the server's, not the client's")
            return None

    sys.meta_path.insert(0, Refuse())

    import numpy as np
    from gymserve.client import RemoteEnv, RemoteError, RemoteVectorEnv

    with RemoteEnv({url!r}, "CartPole-v1", labels={{"run": "light"}}) as env:
        obs, _ = env.reset(seed=0)
        step = env.step(1)
        with env.fork() as fork:
            assert fork.step(0)[0].tobytes() == env.step(0)[0].tobytes()
    with RemoteVectorEnv({url!r}, "CartPole-v1", 2) as vec:
        vec.reset(seed=0)
        vec.step(np.array([0, 1]))
    try:
        RemoteEnv({url!r}, "NoSuchEnv-v0")
    except RemoteError as err:
        assert err.fault == "client" and not err.retryable
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("light client ok", obs.dtype, step[1])
    """
)


def test_the_client_runs_without_the_servers_packages(server: Any) -> None:
    code = _CLIENT_RUN.format(blocked=SERVER_ONLY, url=server.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "light client ok float32 1.0" in done.stdout


def test_the_base_install_is_the_client_and_the_server_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not any(name.replace("_", "-") in base for name in SERVER_ONLY), base
    assert "classic-control" not in base, "pygame comes with the env families, which are the server's"
    server = " ".join(project["optional-dependencies"]["server"]).lower()
    assert all(name in server for name in ("flask", "gunicorn", "prometheus-client", "classic-control"))
    assert "gymserve[server" in " ".join(project["optional-dependencies"]["dev"])


def test_serve_without_the_server_extra_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "gunicorn" else real(name, *a)
        from gymserve.cli import main
        sys.exit(main(["serve"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "pip install 'gymserve[server]'" in done.stderr
