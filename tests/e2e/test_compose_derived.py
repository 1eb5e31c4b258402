"""A derived image (examples/guess-env on the stack's image) that compose runs as it is, stepped through the router.

Runs after tests/e2e/test_compose.py in the same session (scripts/e2e-compose.sh), reusing its image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest

from gymserve.client import RemoteEnv
from servers import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "guess-env"


def _compose(st: Any, *args: str, check: bool = True) -> None:
    """docker compose with docker-compose.image.yml on top: the given image is run, never built."""
    files = ["--file", str(ROOT / "docker-compose.yml"), "--file", str(ROOT / "docker-compose.image.yml")]
    cmd = ["docker", "compose", "--project-name", st.project, *files, *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=st.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert not check or proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def derived(stack: Any) -> Iterator[Any]:
    """A one-replica stack (router + gymserve) of its own that runs the derived image."""
    image = f"gymserve-e2e-guess:{stack.project}"
    started = time.monotonic()
    build = subprocess.run(
        ["docker", "build", "-q", "-t", image, "--build-arg", f"GYMSERVE_IMAGE={stack.image}", str(EXAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    stack.measured["derived image build (FROM gymserve + pip install guess-env)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    router_port = free_port({stack.router_port, stack.prometheus_port})
    prometheus_port = free_port({stack.router_port, stack.prometheus_port, router_port})
    env = dict(
        stack.env,
        GYMSERVE_IMAGE=image,
        GYMSERVE_REPLICAS="1",
        GYMSERVE_ROUTER_PORT=str(router_port),
        PROMETHEUS_PORT=str(prometheus_port),
    )
    st = dataclasses.replace(
        stack,
        project=f"{stack.project}-guess",
        env=env,
        router_port=router_port,
        prometheus_port=prometheus_port,
        image=image,
        replica_ids={},
    )
    try:
        _compose(st, "up", "--detach", "--wait", "--wait-timeout", "180", "router")
        yield st
    finally:
        _compose(st, "down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        with contextlib.suppress(Exception):
            stack.docker.images.remove(image)


def test_compose_runs_the_given_image_without_rebuilding_it(derived: Any) -> None:
    (replica,) = derived.containers("gymserve")
    assert replica.image.id == derived.docker.images.get(derived.image).id


def test_the_example_env_steps_through_the_router_like_a_local_one(derived: Any) -> None:
    if importlib.util.find_spec("guess_env") is None:
        sys.path.insert(0, str(EXAMPLE))
    import guess_env  # noqa: F401  (registers Guess-v0 locally)

    local = gymnasium.make("Guess-v0")
    with RemoteEnv(derived.router_url, "Guess-v0") as env:
        assert env.observation_space == local.observation_space and env.action_space == local.action_space
        obs, _ = env.reset(seed=11)
        expected, _ = local.reset(seed=11)
        local.action_space.seed(11)
        for _ in range(20):
            assert all(np.array_equal(obs[k], expected[k]) for k in expected)
            action = local.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            expected, local_reward, *_ = local.step(action)
            assert reward == local_reward
            if terminated or truncated:
                break
