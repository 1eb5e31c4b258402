"""Many workers, one farm: real `gymserve serve --workers N`, clients with a fresh connection per request.

Fresh connections land on random workers, so every request for an env that another worker owns
must be forwarded to its owner; a worker that dies loses only its own envs.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import pytest
import requests

from servers import call, free_port_base, slot_of, start_server

pytestmark = pytest.mark.integration


def post(url: str, body: dict | None = None) -> requests.Response:
    return requests.post(url, json=body or {}, timeout=30)  # module-level requests: a new connection each call


def create(srv, env_id: str = "CartPole-v1", **extra) -> str:
    resp = post(srv.url + "/v1/envs/", {"env_id": env_id, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()["instance_id"]


def obs_of(payload: dict) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), dtype=payload["type"])


def batch_codes(srv, ids: list[str], action: int) -> list[str | None]:
    """Each item's error code (None: stepped) of one /v2 batch, sent on a fresh connection."""
    got = requests.post(
        f"{srv.url}/v2/batch/step", json={"items": [{"id": i, "action": action} for i in ids]}, timeout=30
    )
    assert got.status_code == 200, got.text
    return [r.get("error", {}).get("code") for r in got.json()["results"]]


def run_trajectory(srv, instance_id: str, seed: int, steps: int) -> list[str]:
    """Step an env through fresh connections and compare with a local env; returns the errors seen."""
    errors = []
    local = gym.make("CartPole-v1")
    want, _ = local.reset(seed=seed)
    got = post(f"{srv.url}/v1/envs/{instance_id}/reset/", {"seed": seed})
    if got.status_code != 200 or not np.array_equal(obs_of(got.json()["observation"]), want):
        errors.append(f"reset {instance_id}: {got.status_code} {got.text[:200]}")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = int(rng.integers(2))
        want, *_, terminated, truncated, _ = local.step(action)
        got = post(f"{srv.url}/v1/envs/{instance_id}/step/", {"action": action})
        if got.status_code != 200:
            errors.append(f"step {instance_id}: {got.status_code} {got.text[:200]}")
            break
        if not np.array_equal(obs_of(got.json()["observation"]), want):
            errors.append(f"step {instance_id}: trajectory diverged")
            break
        if terminated or truncated:
            break
    local.close()
    return errors


def test_hundreds_of_envs_on_four_workers_with_fresh_connections_never_lose_their_way(make_server):
    srv = make_server(workers=4)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: create(srv), range(200)))
        assert len({slot_of(i) for i in ids}) >= 2, "creates should spread over the workers"
        errors = [e for errs in pool.map(lambda n: run_trajectory(srv, ids[n], n, 15), range(200)) for e in errs]
    assert errors == []
    listed = requests.get(srv.url + "/v1/envs/").json()["all_envs"]
    assert set(ids) <= set(listed), "GET /v1/envs/ lists the envs of every worker"


def test_concurrent_steps_on_one_env_serialize(make_server):
    srv = make_server(workers=2)
    iid = create(srv)
    post(f"{srv.url}/v1/envs/{iid}/reset/", {"seed": 1})
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 0}).status_code, range(8)))
    assert all(c in (200, 400) for c in codes)  # 400 only once the pole fell and the env needs a reset
    # Every step ran exactly once, in some order: the env is still consistent with 8 left-pushes.
    local = gym.make("CartPole-v1")
    local.reset(seed=1)
    for _ in range(8):
        want, *_ = local.step(0)
    got = post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 0}).json()
    want, *_ = local.step(0)
    assert np.array_equal(obs_of(got["observation"]), want)


def test_idle_envs_are_reaped_and_used_envs_are_not(make_server):
    srv = make_server(workers=2, env_ttl_seconds=1, reaper_interval_seconds=0.2)
    idle, busy, long_lived = create(srv), create(srv), create(srv, ttl=30)
    for iid in (idle, busy, long_lived):
        post(f"{srv.url}/v1/envs/{iid}/reset/", {"seed": 0})
    for _ in range(6):
        time.sleep(0.4)
        assert post(f"{srv.url}/v1/envs/{busy}/reset/").status_code == 200
    gone = post(f"{srv.url}/v1/envs/{idle}/reset/")
    assert gone.status_code == 400 and f"Instance_id {idle} unknown" in gone.json()["message"]
    assert post(f"{srv.url}/v1/envs/{long_lived}/reset/").status_code == 200
    assert re.search(rf"reaped env {re.escape(idle)} \(CartPole-v1\) after [\d.]+s idle", srv.log())


def test_capacity_answers_503_with_retry_after_and_recovers(make_server):
    srv = make_server(workers=2, max_envs_per_worker=3, max_envs=4)
    ids = [create(srv) for _ in range(4)]
    full = post(srv.url + "/v1/envs/", {"env_id": "CartPole-v1"})
    assert full.status_code == 503 and full.headers["Retry-After"].isdigit()
    assert full.json()["code"] == "capacity_exceeded" and "maximum" in full.json()["message"]
    assert requests.get(srv.url + "/readyz").status_code == 503
    for iid in ids:  # existing envs stay reachable
        assert post(f"{srv.url}/v1/envs/{iid}/reset/").status_code == 200
    assert requests.delete(f"{srv.url}/v1/envs/{ids[0]}/").status_code == 200
    create(srv)
    assert requests.get(srv.url + "/readyz").json()["replica_envs"] == 4


def test_sigterm_parks_every_env_while_clients_step_and_none_is_lost(make_server):
    srv = make_server(workers=2, drain_seconds=3)
    iids = [create(srv) for _ in range(4)]
    rendered = create(srv, kwargs={"render_mode": "rgb_array"})
    post(f"{srv.url}/v1/envs/{rendered}/reset/")
    assert requests.get(f"{srv.url}/v1/envs/{rendered}/render/").status_code == 200  # SDL is loaded now
    for iid in iids:
        post(f"{srv.url}/v1/envs/{iid}/reset/")
    answers_after_term: list[int] = []
    odd: list[str] = []
    stop = threading.Event()
    term_at = [0.0]

    def keep_stepping(iid: str) -> None:
        while not stop.is_set():
            try:
                resp = post(f"{srv.url}/v1/envs/{iid}/reset/")
            except requests.ConnectionError:
                return
            if term_at[0]:
                answers_after_term.append(resp.status_code)
                if resp.status_code not in (200, 503):
                    odd.append(resp.text)
                if resp.status_code == 503:
                    assert resp.headers["Retry-After"] == "1"  # moving: retry in a second, never lost

    threads = [threading.Thread(target=keep_stepping, args=(i,)) for i in iids]
    for t in threads:
        t.start()
    time.sleep(0.3)
    term_at[0] = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0  # parked at once: nothing to wait for
    stop.set()
    for t in threads:
        t.join(10)
    assert set(answers_after_term) <= {200, 503}, odd  # never lost, never unknown
    parked = [tuple(map(int, m)) for m in re.findall(r"parked (\d+) envs \((\d+) lost\)", srv.log())]
    assert sum(p for p, _ in parked) == 5 and sum(lost for _, lost in parked) == 0, parked
    assert "was sent SIGKILL" not in srv.log()


def test_sigkill_of_one_worker_loses_only_its_envs(make_server):
    srv = make_server(workers=2)
    ids = [create(srv) for _ in range(30)]
    by_slot: dict[int, list[str]] = {}
    for iid in ids:
        by_slot.setdefault(slot_of(iid), []).append(iid)
    assert len(by_slot) == 2
    victim_slot, survivor_slot = sorted(by_slot, key=lambda s: -len(by_slot[s]))
    for iid in ids:
        post(f"{srv.url}/v1/envs/{iid}/reset/")
    # Batches from fresh connections land on both workers: each keeps a connection to the other's socket.
    mixed = [by_slot[victim_slot][0], by_slot[survivor_slot][-1]]
    for n in range(6):
        assert batch_codes(srv, mixed, n % 2) == [None, None]
    victim_pid = srv.worker_pids()[victim_slot]
    os.kill(victim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while srv.worker_pids().get(victim_slot) == victim_pid and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.worker_pids()[victim_slot] != victim_pid, "gunicorn replaced the worker in the same slot"
    for iid in by_slot[victim_slot]:
        lost = post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 0})
        assert lost.status_code == 400 and "lost with its worker" in lost.json()["message"]
        assert lost.json()["code"] == "instance_lost"
    for iid in by_slot[survivor_slot]:
        assert post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 0}).status_code == 200
    # In a batch, the dead worker's item is lost (the survivor's kept connection to it fails, or the replacement
    # refuses the old generation) and the survivor's item is stepped.
    for n in range(6):
        assert batch_codes(srv, mixed, n % 2) == ["instance_lost", None]
    # The replacement serves new envs: create until one lands on the victim's slot.
    # (Fresh connections land on either worker; on a loaded machine a run of them can miss one.)
    reborn = None
    for _ in range(200):
        iid = create(srv)
        if slot_of(iid) == victim_slot:
            reborn = iid
            break
        requests.delete(f"{srv.url}/v1/envs/{iid}/", timeout=30)
    assert reborn is not None, "no create reached the replacement worker"
    assert reborn.split(".")[1] != by_slot[victim_slot][0].split(".")[1], "a new generation"
    assert post(f"{srv.url}/v1/envs/{reborn}/reset/").status_code == 200


@pytest.mark.parametrize(
    "forged",
    [
        "itest.1-1.../../../../etc/passwd",
        "itest.1-1.%2e%2e%2f%2e%2e%2fetc",
        "itest.999-1." + "0" * 32,
        "itest.1-1." + "0" * 31 + "g",
        "other-node.1-1." + "0" * 32,
        "ITEST.1-1." + "0" * 32,
        "itest.1-1." + "0" * 32 + "x" * 3000,
        "itest.1-99999." + "0" * 32,
        "%00",
        "itest.1-1.\u00e9" + "0" * 31,
    ],
)
def test_forged_ids_get_a_clear_4xx_and_never_disturb_a_worker(make_server_once, forged):
    srv, keeper = make_server_once
    resp = post(f"{srv.url}/v1/envs/{forged}/step/", {"action": 0})
    assert 400 <= resp.status_code < 500 and "message" in resp.json()
    assert post(f"{srv.url}/v1/envs/{keeper}/reset/").status_code == 200
    assert srv.log().count("Booting worker") == 2, "no worker crashed or restarted"


@pytest.fixture(scope="module")
def make_server_once(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("forged"), workers=2)
    yield srv, create(srv)
    srv.stop()


def test_after_a_restart_of_the_whole_replica_old_ids_read_as_lost_not_as_ours(make_server):
    first = make_server(workers=2, node_id="same-node")
    old = [create(first) for _ in range(6)]
    first.stop()
    second = make_server(workers=2, node_id="same-node")  # same node id, fresh workers
    for iid in old:
        resp = post(f"{second.url}/v1/envs/{iid}/reset/")
        assert resp.status_code == 400 and resp.json()["code"] == "instance_lost", resp.text


def test_a_chunked_body_reaches_the_owner_whole(make_server_once):
    srv, _ = make_server_once
    ids = [create(srv) for _ in range(8)]  # fresh connections: both workers hold some
    for iid in ids:
        post(f"{srv.url}/v1/envs/{iid}/reset/")
        for _ in range(4):  # each a new connection, so about half reach the other worker and are forwarded
            chunked = requests.post(
                f"{srv.url}/v1/envs/{iid}/step/",
                data=iter([b'{"action":', b" 0}"]),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert chunked.status_code == 200, chunked.text


def test_snapshots_and_frames_keep_their_cache_control_through_a_forward(make_server):
    """Each worker has a port of its own: asking the other worker's port forwards the request over the private socket,
    and the owner's answer comes back with every end-to-end header (Cache-Control: no-store here), not a list."""
    base = free_port_base(10)
    make_server(workers=2, worker_port_base=base, snapshot_key="test-farm-key-" + "k" * 32)
    made = call(base, "POST", "/v2/envs", {"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})
    assert made.status == 201, made.body
    env = made.body["instance_id"]
    owner = base + slot_of(env)  # a create is served by the worker that received it
    other = base + 1 - slot_of(env)
    assert call(owner, "POST", f"/v2/envs/{env}/reset", {"seed": 1}).status == 200
    for path, media_type in (
        (f"/v2/envs/{env}/snapshot", "application/octet-stream"),
        (f"/v2/envs/{env}/frame", "image/png"),
    ):
        direct, forwarded = call(owner, "GET", path), call(other, "GET", path)
        assert "x-gymserve-forwarded" not in direct.headers, "the owner's own port took a hop"
        assert forwarded.headers.get("x-gymserve-forwarded") == "1", "the other worker's port answered without a hop"
        for answer in (direct, forwarded):
            assert answer.status == 200, (path, answer.body)
            assert answer.headers["cache-control"] == "no-store", (path, answer.headers)
            assert answer.headers["content-type"] == media_type
        assert forwarded.headers["content-length"] == direct.headers["content-length"]  # computed again, once
