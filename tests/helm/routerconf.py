"""The router's one HAProxy config, the environments that fill it in (compose's and the chart's), and a real
`haproxy` run from it for the tests (Debian: `apt-get install haproxy`; those tests are skipped without one).

HAProxy substitutes ${NAME} from its environment itself; `render` does the same here, so that the tests read the
config that each router really runs.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmchart import ROOT, Rendered, env_of

CONFIG = ROOT / "helm" / "files" / "router.cfg"
# Where both routers mount it: the official haproxy image's default config path.
MOUNTED_AT = "/usr/local/etc/haproxy/haproxy.cfg"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Set at start from GYMSERVE_MAX_BODY_BYTES by the router's command (docker-compose.yml, the chart).
BUFFER_HEADROOM = 65536

_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def config_variables(text: str | None = None) -> set[str]:
    """The ${NAME} variables of the config, and those its `.if defined(NAME)` asks about."""
    text = CONFIG.read_text() if text is None else text
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(_VARIABLE.findall(text)) | set(re.findall(r"defined\(([A-Z_][A-Z0-9_]*)\)", text))


def render(env: dict[str, str]) -> str:
    """The config with every ${NAME} that `env` sets filled in (HAProxy leaves no unset one: it refuses to start)."""
    return _VARIABLE.sub(lambda m: env.get(m[1], m[0]), CONFIG.read_text())


def compose_router() -> dict[str, Any]:
    """The router service of docker-compose.yml (its environment's ${NAME:-default} are left as written)."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["router"])


def with_buffer(env: dict[str, str]) -> dict[str, str]:
    return {**env, "GYMSERVE_ROUTER_BUFFER_BYTES": str(int(env["GYMSERVE_MAX_BODY_BYTES"]) + BUFFER_HEADROOM)}


def compose_env() -> dict[str, str]:
    env = compose_router()["environment"]
    assert isinstance(env, dict), "the router's environment is a map"
    # What compose makes of ${NAME:-default} when NAME is not set in the shell: the default.
    return with_buffer(
        {k: "" if v is None else re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    )


def chart_env(rendered: Rendered) -> dict[str, str]:
    """The chart's router container environment, with what its command adds at start."""
    container = rendered.router["spec"]["template"]["spec"]["containers"][0]
    return with_buffer({k: str(v) for k, v in env_of(container).items()})


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if not found:
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    return found


@contextmanager
def running_haproxy(tmp_path: Path, env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """haproxy with the config as `env` fills it in, listening on 127.0.0.1:`port` instead of the image's :8080;
    stopped by its PID at the end."""
    text = CONFIG.read_text()
    assert text.count("bind :8080\n") == 1
    (tmp_path / "haproxy.cfg").write_text(text.replace("bind :8080\n", f"bind 127.0.0.1:{port}\n"))
    log = tmp_path / "haproxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(tmp_path / "haproxy.cfg")],
            env={"PATH": "/usr/sbin:/usr/bin:/bin", **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited {proc.returncode}: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"haproxy did not listen within 10 s: {log.read_text()}"
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
