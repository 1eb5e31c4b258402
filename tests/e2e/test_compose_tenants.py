"""A compose farm with tenants (deploy/compose/tenants.yml): two replicas, the router and a real store.

Every request goes through the compose router on a fresh connection. Keys and limits come from
tests/e2e/tenants.toml (test keys, in tests/tenant_files.py); the store image is STORE_IMAGE
(scripts/e2e-compose.sh builds a stand-in when valkey/valkey:8 cannot be pulled).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers import Answer, call, free_port
from tenant_files import auth

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FILES = ["--file", str(ROOT / "docker-compose.yml"), "--file", str(ROOT / "deploy" / "compose" / "tenants.yml")]
A, B = auth("team-a"), auth("team-b")


@dataclass
class TenantFarm:
    """One compose project of the base file and the tenants override; requests go through its router."""

    project: str
    env: dict[str, str]
    router_port: int

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["docker", "compose", "--project-name", self.project, *FILES, *args]
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

    def send(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> Answer:
        """One request on a fresh connection (each is routed on its own)."""
        return call(self.router_port, method, path, body, headers=headers)


RELOAD_SECONDS = 1


@pytest.fixture(scope="module")
def tenants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tests/e2e/tenants.toml in a directory of its own, which the replicas mount (and a test edits)."""
    directory = tmp_path_factory.mktemp("tenants")
    directory.chmod(0o755)  # the replicas read it as the image's user
    (directory / "tenants.toml").write_text((ROOT / "tests" / "e2e" / "tenants.toml").read_text())
    return directory


@pytest.fixture(scope="module")
def farm(request: pytest.FixtureRequest, tenants_dir: Path) -> Iterator[TenantFarm]:
    if os.environ.get("GYMSERVE_E2E") != "1":
        pytest.skip("compose end-to-end tests run with GYMSERVE_E2E=1 (scripts/e2e-compose.sh sets it)")
    router_port = int(free_port())
    project = f"gymserve-e2e-tenants-{os.getpid()}-{secrets.token_hex(3)}"
    image = os.environ.get("GYMSERVE_E2E_IMAGE") or f"gymserve-e2e:{project}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYMSERVE_") or k.startswith("GYMSERVE_E2E")}
    env.update(
        GYMSERVE_IMAGE=image,
        GYMSERVE_REPLICAS="2",
        GYMSERVE_DRAIN_SECONDS="2",
        GYMSERVE_ROUTER_PORT=str(router_port),
        PROMETHEUS_PORT=str(free_port({router_port})),
        GYMSERVE_TENANTS_DIR=str(tenants_dir),
        GYMSERVE_TENANTS_RELOAD_SECONDS=str(RELOAD_SECONDS),
    )
    farm = TenantFarm(project, env, router_port)
    farm.compose("build", "gymserve", timeout=1200)
    try:
        farm.compose("up", "--detach", "--wait", "--wait-timeout", "180", "gymserve", "router", "store", timeout=300)
        yield farm
    finally:
        farm.down(bool(request.session.testsfailed))
        if not os.environ.get("GYMSERVE_E2E_IMAGE"):
            subprocess.run(["docker", "image", "rm", image], capture_output=True, timeout=60, check=False)


def node_of(instance_id: str) -> str:
    return instance_id.split(".", 1)[0]


def test_without_a_key_the_router_passes_on_a_401_and_probes_stay_open(farm: TenantFarm) -> None:
    for path, api in (("/v2/envs", "v2"), ("/v1/envs/", "v1")):
        answer = farm.send("GET", path, {})
        assert answer.status == 401, answer
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert (answer.body["error"]["code"] if api == "v2" else answer.body["code"]) == "unauthorized"
    assert farm.send("GET", "/readyz", {}).status == 200


def test_isolation_and_a_farm_wide_quota_through_the_router(farm: TenantFarm) -> None:
    mine: list[str] = []
    deadline = time.monotonic() + 60
    while len({node_of(i) for i in mine}) < 2 or len(mine) < 6:  # team-a's quota: 6, spread over both replicas
        assert time.monotonic() < deadline, f"creates did not reach both replicas: {mine}"
        answer = farm.send("POST", "/v2/envs", A, {"env_id": "CartPole-v1"})
        if answer.status == 429:  # the quota is full before both replicas were used: start again
            for iid in mine:
                farm.send("DELETE", f"/v2/envs/{iid}", A)
            mine = []
            continue
        assert answer.status == 201, answer
        mine.append(answer.body["instance_id"])
    refused = farm.send("POST", "/v2/envs", A, {"env_id": "CartPole-v1"})
    assert refused.status == 429 and refused.body["error"]["code"] == "quota_exceeded", refused
    assert refused.body["error"]["details"]["usage"] == 6 and refused.body["error"]["details"]["limit"] == 6
    assert farm.send("POST", "/v1/envs/", B, {"env_id": "CartPole-v1"}).status == 200  # team-b has its own share

    missing = re.sub(r"\.[0-9a-f]{32}$", "." + "0" * 32, mine[0])
    claims = {"X-Gymserve-Tenant": "team-a", "X-Gymserve-Forwarded": "0"}
    for iid in mine:
        farm.send("POST", f"/v2/envs/{iid}/reset", A, {"seed": 1})
        for method, path, body in (
            ("POST", "/v2/envs/{}/step", {"action": 0}),
            ("GET", "/v2/envs/{}", None),
            ("DELETE", "/v2/envs/{}", None),
            ("POST", "/v1/envs/{}/step/", {"action": 0}),
        ):
            theirs = farm.send(method, path.format(iid), {**B, **claims}, body)
            unknown = farm.send(method, path.format(missing), B, body)
            assert (theirs.status, theirs.body) == (
                unknown.status,
                json.loads(json.dumps(unknown.body).replace(missing, iid)),
            ), (method, path)
        info = farm.send("GET", f"/v2/envs/{iid}", A)
        assert info.status == 200 and info.body["steps"] == 0 and info.body["seq"] == 1
    # A list is the farm's (GYMSERVE_PEERS_DNS: every replica asked with the caller's key): all of the caller's envs,
    # on both replicas, and nobody else's.
    for _ in range(4):
        listed = {e["instance_id"] for e in farm.send("GET", "/v2/envs", A).body["envs"]}
        assert listed == set(mine) and len({node_of(i) for i in listed}) == 2
        assert not set(farm.send("GET", "/v1/envs/", B).body["all_envs"]) & set(mine)
    for iid in mine:
        assert farm.send("DELETE", f"/v2/envs/{iid}", A).status == 204
    assert farm.send("POST", "/v2/envs", A, {"env_id": "CartPole-v1"}).status == 201


def test_a_key_revoked_by_sed_i_is_refused_within_the_reload_interval(farm: TenantFarm, tenants_dir: Path) -> None:
    """`sed -i` replaces the file (a new inode): the replicas mount its directory, so they see it and reload it.
    This runs last in the module: team-b has no key afterwards."""
    assert farm.send("GET", "/v2/envs", B).status == 200
    digest = hashlib.sha256(B["Authorization"].split(" ", 1)[1].encode()).hexdigest()
    path = tenants_dir / "tenants.toml"
    before = path.stat().st_ino
    subprocess.run(["sed", "-i", f"s/{digest}/{'0' * 64}/", str(path)], check=True, timeout=30)  # no one's key now
    assert path.stat().st_ino != before and digest not in path.read_text()
    time.sleep(RELOAD_SECONDS + 1)
    assert [farm.send("GET", "/v2/envs", B).status for _ in range(8)] == [401] * 8, "the revoked key still works"
    assert farm.send("GET", "/v2/envs", A).status == 200  # the others' keys still work
