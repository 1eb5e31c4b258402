"""Two tenants on a real farm: two replicas of two workers sharing a real Redis, fresh connections per request.

Fresh connections land on either worker, so a request for an env is often forwarded to its owner:
the tenant must travel with it, and the other tenant's env must stay untouched after every attempt.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from servers import Server, slot_of, start_server
from stores import redis_server
from tenant_files import auth, write

pytestmark = pytest.mark.integration

A, B = auth("team-a"), auth("team-b")


def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> requests.Response:
    return requests.request(method, url, json=body, headers=headers, timeout=30)  # a new connection each call


def create(srv: Server, headers: dict[str, str], **body: Any) -> requests.Response:
    return call("POST", srv.url + "/v2/envs", headers, {"env_id": "CartPole-v1", **body})


LIMITS: dict[str, dict[str, Any]] = {"team-a": {"max_envs": 12}, "team-b": {"max_envs": 12}}


@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("tenants") / "tenants.toml", **LIMITS)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, tenants_file: Path) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("farm")
    with redis_server(tmp) as url:
        settings = {
            "tenants_file": tenants_file,
            "store_url": url,
            "store_heartbeat_seconds": 0.5,
            "tenants_reload_seconds": 0.2,
        }
        replicas = (start_server(tmp, node_id="r0", **settings), start_server(tmp, node_id="r1", **settings))
        try:
            yield replicas
        finally:
            for srv in replicas:
                srv.stop()


def envs_on_both_workers(srv: Server, headers: dict[str, str]) -> list[str]:
    """Envs of one tenant created until both workers hold one (fresh connections pick workers at random)."""
    ids: dict[int, str] = {}
    with ThreadPoolExecutor(4) as pool:  # at once: one worker alone cannot take them all
        for _ in range(30):
            for answer in pool.map(lambda _: create(srv, headers), range(4)):
                iid = answer.json()["instance_id"]
                if slot_of(iid) in ids:  # keep one per worker: quotas are small here
                    call("DELETE", f"{srv.url}/v2/envs/{iid}", headers)
                else:
                    ids[slot_of(iid)] = iid
            if len(ids) == 2:
                return list(ids.values())
    raise AssertionError("120 creates on fresh connections all landed on one worker")


ATTEMPTS = [
    ("GET", "/v2/envs/{}", None),
    ("POST", "/v2/envs/{}/reset", {}),
    ("POST", "/v2/envs/{}/step", {"action": 0}),
    ("POST", "/v2/envs/{}/keepalive", None),
    ("DELETE", "/v2/envs/{}", None),
    ("GET", "/v1/envs/{}/", None),
    ("POST", "/v1/envs/{}/reset/", {}),
    ("POST", "/v1/envs/{}/step/", {"action": 0}),
    ("POST", "/v1/envs/{}/close/", None),
    ("POST", "/v2/envs/{}/step", {"nothing": 1}),  # a body refused first: alike for both, too
]


def test_another_tenants_envs_read_as_unknown_on_every_worker_and_stay_untouched(farm: tuple[Server, Server]) -> None:
    srv = farm[0]
    theirs = envs_on_both_workers(srv, A)
    for iid in theirs:
        assert call("POST", f"{srv.url}/v2/envs/{iid}/reset", A, {"seed": 3}).status_code == 200
    missing = re.sub(r"\.[0-9a-f]{32}$", "." + "0" * 32, theirs[0])  # this worker's shape, never minted
    for method, path, body in ATTEMPTS:
        for iid in theirs:
            for _ in range(3):  # fresh connections: by the owner and by its sibling (forwarded)
                got = call(method, srv.url + path.format(iid), B, body)
                unknown = call(method, srv.url + path.format(missing), B, body)
                assert got.status_code == unknown.status_code in (400, 404, 422), (method, path)
                assert got.text.replace(iid, "<id>") == unknown.text.replace(missing, "<id>")
        for iid in theirs:  # the owner's view: nothing happened
            info = call("GET", f"{srv.url}/v2/envs/{iid}", A).json()
            assert (info["steps"], info["episodes"], info["seq"]) == (0, 1, 1), (method, path)
    items = [{"id": iid, "action": 0} for iid in theirs]
    results = call("POST", srv.url + "/v2/batch/step", B, {"items": items}).json()["results"]
    assert [r["error"]["code"] for r in results] == ["unknown_instance"] * len(theirs)
    assert all(call("GET", f"{srv.url}/v2/envs/{iid}", A).json()["steps"] == 0 for iid in theirs)
    for iid in theirs:
        call("DELETE", f"{srv.url}/v2/envs/{iid}", A)


def test_lists_collected_from_both_workers_show_the_callers_envs_only(farm: tuple[Server, Server]) -> None:
    srv = farm[0]
    mine, theirs = envs_on_both_workers(srv, B), envs_on_both_workers(srv, A)
    for _ in range(3):
        listed = {e["instance_id"] for e in call("GET", srv.url + "/v2/envs", B).json()["envs"]}
        assert listed == set(mine)
        assert set(call("GET", srv.url + "/v1/envs/", B).json()["all_envs"]) == set(mine)
    for iid in mine:
        call("DELETE", f"{srv.url}/v2/envs/{iid}", B)
    for iid in theirs:
        call("DELETE", f"{srv.url}/v2/envs/{iid}", A)


def test_lifecycle_rules_are_per_tenant_keys_labels_bulk_deletes_and_forks(farm: tuple[Server, Server]) -> None:
    """An idempotency key, a label selector and a fork name only the caller's envs, whatever another tenant did."""
    srv = farm[0]
    keyed = {"Idempotency-Key": "same-key-for-both-teams"}
    env_a = call("POST", srv.url + "/v2/envs", {**A, **keyed}, {"env_id": "CartPole-v1", "labels": {"run": "r1"}})
    env_b = call("POST", srv.url + "/v2/envs", {**B, **keyed}, {"env_id": "CartPole-v1", "labels": {"run": "r1"}})
    assert env_a.status_code == env_b.status_code == 201
    a_id, b_id = env_a.json()["instance_id"], env_b.json()["instance_id"]
    assert a_id != b_id and "Idempotent-Replayed" not in env_b.headers  # B's key never replays A's env
    again = call("POST", srv.url + "/v2/envs", {**B, **keyed}, {"env_id": "CartPole-v1", "labels": {"run": "r1"}})
    assert again.json()["instance_id"] == b_id  # but B's own resend does
    assert call("POST", f"{srv.url}/v2/envs/{a_id}/fork", B, {}).status_code == 404
    for _ in range(3):  # fresh connections: from either worker, siblings' envs included
        listed = call("GET", srv.url + "/v2/envs?label=run=r1", B).json()["envs"]
        assert [e["instance_id"] for e in listed] == [b_id]
    assert call("DELETE", srv.url + "/v2/envs?label=run=r1", B).json() == {"deleted": 1}
    assert call("GET", f"{srv.url}/v2/envs/{a_id}", A).status_code == 200  # A's env with the same label lives on
    assert call("DELETE", srv.url + "/v2/envs?label=run=r1", A).json() == {"deleted": 1}


def test_headers_that_claim_a_tenant_or_a_hop_are_ignored(farm: tuple[Server, Server]) -> None:
    srv = farm[0]
    theirs = envs_on_both_workers(srv, A)
    claims = {"X-Gymserve-Tenant": "team-a", "X-Gymserve-Forwarded": "0", "X-Gymserve-Peer-Tenant": "team-a"}
    assert create(srv, claims).status_code == 401
    for iid in theirs:
        got = call("POST", f"{srv.url}/v2/envs/{iid}/step", {**B, **claims}, {"action": 0})
        assert got.status_code == 404 and got.json()["error"]["code"] == "unknown_instance"
        assert call("GET", f"{srv.url}/v2/envs/{iid}", A).json()["steps"] == 0
        call("DELETE", f"{srv.url}/v2/envs/{iid}", A)


def test_max_envs_holds_across_replicas_and_a_full_tenant_is_not_a_full_farm(farm: tuple[Server, Server]) -> None:
    r0, r1 = farm
    ids = [create(r0, A, num_envs=4).json()["instance_id"], create(r1, A, num_envs=4).json()["instance_id"]]
    ids.append(create(r0, A, num_envs=3).json()["instance_id"])
    refused = create(r1, A, num_envs=2)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.json()["error"]["details"] == {"tenant": "team-a", "limit": 12, "usage": 11, "requested": 2}
    assert create(r1, A).status_code == 201  # the twelfth fits, on the other replica
    assert create(r0, A).status_code == 429
    other = create(r1, B, num_envs=4)
    assert other.status_code == 201  # the farm has room: only team-a used its share
    assert call("DELETE", f"{r1.url}/v2/envs/{ids[1]}", A).status_code == 204
    assert create(r0, A, num_envs=4).status_code == 201
    for srv in farm:
        for tenant in (A, B):
            for env in call("GET", srv.url + "/v2/envs", tenant).json()["envs"]:
                call("DELETE", f"{srv.url}/v2/envs/{env['instance_id']}", tenant)


def test_the_envs_of_a_killed_worker_stop_counting(farm: tuple[Server, Server]) -> None:
    srv = farm[1]
    iid = create(srv, B, num_envs=10).json()["instance_id"]
    assert create(srv, B, num_envs=4).status_code == 429
    os.kill(srv.worker_pids()[slot_of(iid)], signal.SIGKILL)  # its envs die with it, and nobody tells the store
    deadline = time.monotonic() + 15
    while (got := create(srv, B, num_envs=4)).status_code != 201:
        assert got.status_code in (429, 503) and time.monotonic() < deadline, got.text
        time.sleep(0.3)
    call("DELETE", f"{srv.url}/v2/envs/{got.json()['instance_id']}", B)


def test_steps_and_refusals_are_counted_by_tenant(farm: tuple[Server, Server]) -> None:
    srv = farm[0]
    iid = create(srv, A).json()["instance_id"]
    call("POST", f"{srv.url}/v2/envs/{iid}/reset", A, {})
    call("POST", f"{srv.url}/v2/envs/{iid}/step", A, {"action": 0})
    create(srv, {})
    text = requests.get(srv.url + "/metrics", timeout=10).text
    assert re.search(r'gymserve_tenant_steps_total\{tenant="team-a"\} [1-9]', text)
    assert re.search(r'gymserve_tenant_envs\{tenant="team-a"\} [1-9]', text)
    assert re.search(r'gymserve_tenant_max_envs\{tenant="team-a"\} 12', text)
    assert re.search(r'gymserve_tenant_refusals_total\{code="unauthorized",tenant="unauthenticated"\} [1-9]', text)
    call("DELETE", f"{srv.url}/v2/envs/{iid}", A)


def test_without_a_key_the_farm_answers_401_and_probes_stay_open(farm: tuple[Server, Server], tmp_path: Path) -> None:
    srv = farm[0]
    assert call("GET", srv.url + "/v2/envs", {}).status_code == 401
    assert call("GET", srv.url + "/v1/envs/", {"Authorization": "Bearer nope"}).status_code == 401
    for path in ("/healthz", "/readyz", "/metrics", "/v2/openapi.json"):
        assert call("GET", srv.url + path, {}).status_code == 200


def test_rate_and_ttl_limits_hold_on_the_farm_and_a_changed_file_is_read_without_restart(
    farm: tuple[Server, Server], tenants_file: Path
) -> None:
    r0, r1 = farm
    changed = {**LIMITS, "team-b": {"max_envs": 12, "creates_per_minute": 3, "max_ttl_seconds": 60}}
    write(tenants_file, **changed)
    os.utime(tenants_file, (time.time() + 1, time.time() + 1))
    try:
        time.sleep(0.5)  # each worker looks again after 0.2 s
        ttl = create(r0, B, ttl=61)
        assert ttl.status_code == 422 and ttl.json()["error"]["details"] == {"field": "ttl", "limit": 60.0}
        made = [create(srv, B).json()["instance_id"] for srv in (r0, r1, r0)]  # 3 creates across both replicas
        refused = create(r1, B)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert create(r1, A).status_code == 201  # team-a has no rate limit
        for iid in made:
            assert (
                call("GET", f"{r0.url}/v2/envs/{iid}" if iid.startswith("r0") else f"{r1.url}/v2/envs/{iid}", B).json()[
                    "ttl"
                ]
                == 60
            )  # the server's default TTL (900 s) capped by the tenant's
    finally:
        write(tenants_file, **LIMITS)
        os.utime(tenants_file, (time.time() + 2, time.time() + 2))
        time.sleep(0.5)
    for srv in farm:
        for tenant in (A, B):
            for env in call("GET", srv.url + "/v2/envs", tenant).json()["envs"]:
                call("DELETE", f"{srv.url}/v2/envs/{env['instance_id']}", tenant)


# --- the clients take a key ---


def test_remote_envs_take_api_key_or_read_it_from_the_environment(
    farm: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gymserve.client import RemoteEnv, RemoteVectorEnv
    from gymserve.client.errors import RemoteError
    from tenant_files import KEYS

    srv = farm[0]
    monkeypatch.delenv("GYMSERVE_API_KEY", raising=False)
    with pytest.raises(RemoteError) as err:
        RemoteEnv(srv.url, "CartPole-v1")
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    env = RemoteEnv(srv.url, "CartPole-v1", api_key=KEYS["team-a"])
    env.reset(seed=1)
    env.step(0)
    listed = {e["instance_id"] for e in call("GET", srv.url + "/v2/envs", A).json()["envs"]}
    assert env.instance_id in listed
    env.close()
    monkeypatch.setenv("GYMSERVE_API_KEY", KEYS["team-b"])
    vector = RemoteVectorEnv(srv.url, "CartPole-v1", 3)
    vector.reset(seed=1)
    assert {e["instance_id"] for e in call("GET", srv.url + "/v2/envs", B).json()["envs"]} == {vector.instance_id}
    vector.close()
    v1 = RemoteEnv(srv.url, "CartPole-v1", protocol="v1")  # the key from the environment, on /v1 too
    v1.reset(seed=1)
    v1.close()


def test_bench_takes_api_key_and_never_reports_it(farm: tuple[Server, Server]) -> None:
    import json
    import subprocess
    import sys

    from tenant_files import KEYS

    srv = farm[1]
    args = ["--url", srv.url, "--clients", "1", "--seconds", "1", "--processes", "1", "--json"]
    cmd = [sys.executable, "-m", "gymserve.cli", "bench", *args]
    done = subprocess.run([*cmd, "--api-key", KEYS["team-a"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] > 0 and KEYS["team-a"] not in done.stdout
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode != 0
