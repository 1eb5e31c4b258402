"""The compose stack under test: built and started once per session under a unique project name, torn down at the end.

Runs only with GYMSERVE_E2E=1 (scripts/e2e-compose.sh sets it) and a Docker engine with compose v2.
Stand-in images for a machine without a registry come from PYTHON_IMAGE, HAPROXY_IMAGE, PROMETHEUS_IMAGE and
STORE_IMAGE (the park store), as for `docker compose` itself. Knobs: GYMSERVE_E2E_ROUTER_PORT and
GYMSERVE_E2E_PROMETHEUS_PORT (default: free ports below 30000), GYMSERVE_E2E_IMAGE (default: a tag
of the run's own, removed at the end).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gymserve import __version__
from servers import Answer, call, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DRAIN_SECONDS = 2  # replicas that hold envs take this long (+ up to 5 s) to stop; keep the stage short
REPLICAS = 2

# Numbers measured by the session, printed at its end (image size, build and start times).
MEASURED: dict[str, str] = {}


def _revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@dataclass
class Stack:
    """One compose project: its CLI environment, the published URLs and the Docker SDK client."""

    project: str
    env: dict[str, str]
    router_port: int
    prometheus_port: int
    docker: Any
    image: str
    drain_seconds: int = DRAIN_SECONDS
    measured: dict[str, str] = field(default_factory=lambda: MEASURED)
    replica_ids: dict[str, str] = field(default_factory=dict)  # short container id (= node) -> name

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["docker", "compose", "--project-name", self.project, "--file", str(COMPOSE_FILE), *args]
        proc = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def down(self, show_logs: bool) -> None:
        """The project taken down with its volumes; its last log lines shown first when a test failed."""
        if show_logs:
            logs = self.compose("logs", "--no-color", "--tail", "80", check=False, timeout=60)
            sys.stderr.write(f"\n--- compose logs of {self.project} ---\n{logs.stdout[-20000:]}\n")
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=180)

    def containers(self, service: str | None = None, *, all: bool = False) -> list[Any]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return list(self.docker.containers.list(all=all, filters={"label": labels}))

    def replicas(self) -> dict[str, Any]:
        """The gymserve replicas by node id: the host name Docker gave each one (its short container id)."""
        return {c.attrs["Config"]["Hostname"]: c for c in self.containers("gymserve", all=True)}

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Answer:
        """One request through the router on a fresh connection (no keep-alive: each is routed on its own)."""
        return call(self.router_port, method, path, body, timeout)

    def wait_healthy(self, container: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            container.reload()
            status = container.attrs["State"].get("Health", {}).get("Status", "none")
            if status == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"{container.name} not healthy after {timeout:.0f}s (last status: {status})")


def _docker_client() -> Any:
    import docker

    client = docker.from_env(timeout=60)
    client.ping()
    return client


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if os.environ.get("GYMSERVE_E2E") != "1":
        pytest.skip("compose end-to-end tests run with GYMSERVE_E2E=1 (scripts/e2e-compose.sh sets it)")
    client = _docker_client()
    router_port = int(os.environ.get("GYMSERVE_E2E_ROUTER_PORT") or free_port())
    prometheus_port = int(os.environ.get("GYMSERVE_E2E_PROMETHEUS_PORT") or free_port({router_port}))
    project = f"gymserve-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    # A tag of this run's own (removed at the end; the build cache stays), unless one is given.
    own_image = not os.environ.get("GYMSERVE_E2E_IMAGE")
    image = os.environ.get("GYMSERVE_E2E_IMAGE") or f"gymserve-e2e:{project}"
    # The stack must not pick up app settings from the caller's shell: only what this test sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYMSERVE_") or k.startswith("GYMSERVE_E2E")}
    env.update(
        GYMSERVE_IMAGE=image,
        GYMSERVE_REPLICAS=str(REPLICAS),
        GYMSERVE_DRAIN_SECONDS=str(DRAIN_SECONDS),
        GYMSERVE_ROUTER_PORT=str(router_port),
        PROMETHEUS_PORT=str(prometheus_port),
        GYMSERVE_VERSION=__version__,
        GYMSERVE_REVISION=_revision(),
    )
    st = Stack(project, env, router_port, prometheus_port, client, image)

    started = time.monotonic()
    st.compose("build", "gymserve", timeout=1200)
    MEASURED["image build (compose build)"] = f"{time.monotonic() - started:.1f} s"
    MEASURED["image size"] = f"{client.images.get(image).attrs['Size'] / 1e6:.0f} MB"
    failed_to_start = True
    try:
        started = time.monotonic()
        st.compose("up", "--detach", "--wait", "--wait-timeout", "180", timeout=300)
        MEASURED["stack start (up --wait, image built)"] = f"{time.monotonic() - started:.1f} s"
        failed_to_start = False
        st.replica_ids = {node: c.name for node, c in st.replicas().items()}
        yield st
    finally:
        st.down(failed_to_start or bool(request.session.testsfailed))
        if own_image:
            with contextlib.suppress(Exception):
                client.images.remove(image)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("gymserve compose stack: measured")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")
