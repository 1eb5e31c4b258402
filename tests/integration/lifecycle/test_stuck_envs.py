"""Deadlines on a real two-worker gymserve, with real stuck envs: a package this test writes, served with
GYMSERVE_ENV_MODULES. Its step busy-loops in Python (the watchdog stops it) or sleeps (nothing can stop it)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests

from servers import Server, start_server, tree_cpu_seconds

pytestmark = pytest.mark.integration

STUCK = "GymserveStuck-v0"
BUSY_LOOP, SLEEP = 1, 2
DEADLINE = 2.0
MODULE = '''
"""A test's env whose step gets stuck on demand (written by tests/integration/lifecycle/test_stuck_envs.py)."""
import threading
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MEETING = threading.Barrier(2, timeout=10)  # two envs' steps that only end together


class Stuck(gym.Env):
    """Action 0 steps; 1 busy-loops in Python for good; 2 sleeps for an hour; 3 waits for another env's 3."""

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        if action == 1:
            while True:
                pass
        if action == 2:
            time.sleep(3600)
        if action == 3:
            MEETING.wait()
        return np.zeros(1, np.float32), 0.0, False, False, {}


gym.register("GymserveStuck-v0", entry_point=Stuck)
'''


@pytest.fixture
def make_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    (tmp_path / "stuck_envs.py").write_text(MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    started: list[Server] = []

    def make(**settings: Any) -> Server:
        settings = {"env_modules": "stuck_envs", "step_timeout_seconds": DEADLINE, "threads": 4, **settings}
        started.append(start_server(tmp_path, **settings))
        return started[-1]

    yield make
    for srv in started:
        srv.stop()


def call(srv: Server, method: str, path: str, body: Any = None, timeout: float = 30) -> requests.Response:
    return requests.request(method, srv.url + path, json=body, timeout=timeout)


def create(srv: Server, env_id: str) -> str:
    resp = call(srv, "POST", "/v2/envs", {"env_id": env_id})
    assert resp.status_code == 201, resp.text
    iid = resp.json()["instance_id"]
    assert call(srv, "POST", f"/v2/envs/{iid}/reset", {"seed": 1, "seq": 1}).status_code == 200
    return iid


def slot_of(iid: str) -> int:
    return int(iid.split(".")[1].split("-")[0])


def timed_step(srv: Server, iid: str, action: int, seq: int | None = None) -> tuple[float, requests.Response]:
    started = time.monotonic()
    resp = call(srv, "POST", f"/v2/envs/{iid}/step", {"action": action, **({"seq": seq} if seq else {})})
    return time.monotonic() - started, resp


def in_background(target: Any, *args: Any) -> list[Any]:
    out: list[Any] = []
    threading.Thread(target=lambda: out.append(target(*args)), daemon=True).start()
    return out


def expect_step_timeout(seconds: float, resp: requests.Response, iid: str) -> None:
    assert resp.status_code == 504, resp.text
    error = resp.json()["error"]
    assert error["code"] == "step_timeout" and error["fault"] == "env" and error["retryable"] is False
    assert error["details"] == {"instance_id": iid, "deadline_seconds": DEADLINE}
    assert DEADLINE - 0.1 <= seconds < DEADLINE + 1.0  # the watchdog answers within a tick of the deadline


def test_a_busy_loop_is_stopped_answered_504_its_env_quarantined_and_no_cpu_stays_burnt(make_server: Any) -> None:
    srv = make_server()
    iid = create(srv, STUCK)
    expect_step_timeout(*timed_step(srv, iid, BUSY_LOOP), iid)
    again = call(srv, "POST", f"/v2/envs/{iid}/step", {"action": 0})
    assert again.status_code == 409 and again.json()["error"]["code"] == "env_quarantined"
    assert call(srv, "POST", f"/v1/envs/{iid}/step/", {"action": 0}).status_code == 400  # /v1's shape of a 409
    before = tree_cpu_seconds(srv.proc.pid)
    time.sleep(2.0)
    assert tree_cpu_seconds(srv.proc.pid) - before < 0.5  # the loop was stopped: no core burnt
    assert call(srv, "DELETE", f"/v2/envs/{iid}").status_code == 204  # a quarantined env can be deleted
    assert call(srv, "GET", f"/v2/envs/{iid}").status_code == 404
    metrics = call(srv, "GET", "/metrics").text
    assert f'gymserve_env_call_timeouts_total{{env_id="{STUCK}",tenant="anonymous"}} 1.0' in metrics
    assert f'gymserve_envs_quarantined_total{{env_id="{STUCK}",tenant="anonymous"}} 1.0' in metrics


def test_while_sleeps_are_stuck_other_envs_and_the_probes_stay_fast(make_server: Any) -> None:
    srv = make_server(max_stuck_threads=8)
    stuck = [create(srv, STUCK) for _ in range(8)]  # twice each worker's 4 threads
    others = [create(srv, STUCK) for _ in range(4)]  # stepped with action 0: never stuck, never done
    stuck_answers = [in_background(timed_step, srv, iid, SLEEP) for iid in stuck]
    time.sleep(0.3)
    slowest_step = slowest_probe = 0.0
    until = time.monotonic() + DEADLINE + 1.5
    while time.monotonic() < until:
        for iid in others:
            seconds, resp = timed_step(srv, iid, 0)
            assert resp.status_code == 200, resp.text
            slowest_step = max(slowest_step, seconds)
        started = time.monotonic()
        assert call(srv, "GET", "/healthz", timeout=5).status_code == 200
        slowest_probe = max(slowest_probe, time.monotonic() - started)
    assert slowest_step < 0.5 and slowest_probe < 1.0, (slowest_step, slowest_probe)
    for iid, answer in zip(stuck, stuck_answers, strict=True):
        assert answer, "a stuck client got no answer within its deadline"
        expect_step_timeout(*answer[0], iid)


def test_threads_waiting_on_a_siblings_stuck_calls_get_spare_threads_too(make_server: Any) -> None:
    from servers import free_port_base

    base = free_port_base()
    srv = make_server(max_stuck_threads=8, worker_port_base=base)
    made: dict[int, list[str]] = {0: [], 1: []}
    while len(made[1]) < 8 or len(made[0]) < 2:  # placement alternates workers
        iid = create(srv, STUCK)
        made[slot_of(iid)].append(iid)
    first = Server(f"http://127.0.0.1:{base}", srv.proc, srv.log_path)  # worker 0's own port
    # Worker 1's envs, stepped on worker 0's port: each stuck call holds one of worker 0's 4 threads, waiting on
    # its forward (twice as many calls as threads), while worker 0's own envs must still step at once.
    stuck_answers = [in_background(timed_step, first, iid, SLEEP) for iid in made[1][:8]]
    time.sleep(0.5)
    slowest_step = 0.0
    until = time.monotonic() + DEADLINE - 0.7
    while time.monotonic() < until:
        for iid in made[0][:2]:
            seconds, resp = timed_step(first, iid, 0)
            assert resp.status_code == 200, resp.text
            slowest_step = max(slowest_step, seconds)
    assert slowest_step < 0.5, slowest_step
    time.sleep(1.5)
    for iid, answer in zip(made[1][:8], stuck_answers, strict=True):
        assert answer, "a stuck client got no answer within its deadline"
        expect_step_timeout(*answer[0], iid)


def test_a_resend_of_a_running_call_is_answered_at_once_and_holds_no_thread(make_server: Any) -> None:
    srv = make_server()
    iid = create(srv, STUCK)
    first = in_background(timed_step, srv, iid, SLEEP, 2)
    time.sleep(0.3)
    seconds, resend = timed_step(srv, iid, SLEEP, 2)
    assert seconds < 0.5 and resend.status_code == 409, resend.text
    assert resend.json()["error"]["code"] == "call_in_flight" and resend.headers["Retry-After"] == "1"
    time.sleep(DEADLINE + 0.5)
    expect_step_timeout(*first[0], iid)


def test_more_stuck_calls_than_allowed_replace_the_worker_and_its_other_envs_move_on_exactly(
    make_server: Any,
) -> None:
    srv = make_server(max_stuck_threads=1)
    made: dict[int, dict[str, list[str]]] = {0: {STUCK: [], "CartPole-v1": []}, 1: {STUCK: [], "CartPole-v1": []}}
    for _ in range(40):  # placement alternates workers: a few creates put two stuck envs and a CartPole on one
        for env_id in (STUCK, STUCK, "CartPole-v1"):
            iid = create(srv, env_id)
            made[slot_of(iid)][env_id].append(iid)
        if len(made[0][STUCK]) >= 2 and made[0]["CartPole-v1"]:
            break
    stuck, healthy = made[0][STUCK][:2], made[0]["CartPole-v1"][0]
    local = gym.make("CartPole-v1")
    local.reset(seed=1)
    for seq, action in enumerate([0, 1, 1], start=2):
        resp = call(srv, "POST", f"/v2/envs/{healthy}/step", {"action": action, "seq": seq})
        assert resp.status_code == 200
        local.step(action)
    answers = [in_background(timed_step, srv, iid, SLEEP) for iid in stuck]
    time.sleep(DEADLINE + 0.5)
    for iid, answer in zip(stuck, answers, strict=True):
        expect_step_timeout(*answer[0], iid)
    deadline = time.monotonic() + 15
    while "before the replacement" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    healthy_there = len(made[0][STUCK]) - 2 + len(made[0]["CartPole-v1"])  # every env of that worker but the 2
    assert f"parked {healthy_there} envs (2 lost) before the replacement" in srv.log(), srv.log()[-3000:]
    deadline = time.monotonic() + 15
    while True:  # the successor adopts the parked env under its id; moving (503) meanwhile, never lost
        resp = call(srv, "POST", f"/v2/envs/{healthy}/step", {"action": 0, "seq": 5})
        if resp.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 200, resp.text
    expected = local.step(0)[0]
    assert np.allclose(np.asarray(resp.json()["observation"]["$nd"]["data"], np.float32), expected)
    lost = call(srv, "POST", f"/v2/envs/{stuck[0]}/step", {"action": 0})
    assert lost.status_code == 410 and lost.json()["error"]["details"]["reason"] == "quarantined", lost.text
    assert 'gymserve_workers_replaced_total{reason="stuck_calls"} 1.0' in call(srv, "GET", "/metrics").text


def test_a_stuck_call_on_the_step_stream_is_answered_at_its_deadline_and_the_stream_ends(make_server: Any) -> None:
    import msgpack
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    srv = make_server(workers=1)  # the stream's own thread is the stuck one (a sibling's would answer it as a hop)
    iid = create(srv, STUCK)
    with connect(srv.url.replace("http://", "ws://") + f"/v2/envs/{iid}/stream") as ws:
        started = time.monotonic()
        ws.send(msgpack.packb({"op": "step", "action": SLEEP}))
        error = msgpack.unpackb(ws.recv(timeout=DEADLINE + 5))["error"]
        assert error["code"] == "step_timeout" and DEADLINE - 0.1 <= time.monotonic() - started < DEADLINE + 1.0
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011  # its thread is stuck: no more


def test_a_stuck_call_on_one_stream_never_holds_up_another_streams_steps(make_server: Any) -> None:
    """One worker answers every stream's steps on its stream loop's thread: a call stuck there is found slow, and a
    new loop takes the other streams (stream_loop.py)."""
    import msgpack
    from websockets.sync.client import connect

    srv = make_server(workers=1)
    stuck, quick = create(srv, STUCK), create(srv, STUCK)
    base = srv.url.replace("http://", "ws://")
    with connect(f"{base}/v2/envs/{stuck}/stream") as held, connect(f"{base}/v2/envs/{quick}/stream") as other:
        for ws in (held, other):
            ws.send(msgpack.packb({"op": "reset", "seed": 1}))
            assert "observation" in msgpack.unpackb(ws.recv(timeout=10))
        held.send(msgpack.packb({"op": "step", "action": SLEEP}))
        started, slowest = time.monotonic(), 0.0
        while time.monotonic() - started < DEADLINE - 0.5:  # all through the stuck call
            sent = time.monotonic()
            other.send(msgpack.packb({"op": "step", "action": 0}))
            assert "reward" in msgpack.unpackb(other.recv(timeout=DEADLINE + 5))
            slowest = max(slowest, time.monotonic() - sent)
        assert slowest < 1.0, slowest  # at most the watchdog's look, not the deadline
        error = msgpack.unpackb(held.recv(timeout=DEADLINE + 5))["error"]
        assert error["code"] == "step_timeout"
        other.send(msgpack.packb({"op": "step", "action": 0}))
        assert "reward" in msgpack.unpackb(other.recv(timeout=10))


def test_two_streams_calls_run_at_the_same_time(make_server: Any) -> None:
    """Each env's step waits for the other's: they end only if neither waits behind the other on one thread."""
    import msgpack
    from websockets.sync.client import connect

    srv = make_server(workers=1)
    base = srv.url.replace("http://", "ws://")
    iids = [create(srv, STUCK), create(srv, STUCK)]
    with connect(f"{base}/v2/envs/{iids[0]}/stream") as one, connect(f"{base}/v2/envs/{iids[1]}/stream") as two:
        for ws in (one, two):
            ws.send(msgpack.packb({"op": "reset", "seed": 1}))
            msgpack.unpackb(ws.recv(timeout=10))
        for _ in range(3):
            for ws in (one, two):
                ws.send(msgpack.packb({"op": "step", "action": 3}))
            answers = [msgpack.unpackb(ws.recv(timeout=15)) for ws in (one, two)]
            assert all("reward" in a for a in answers), answers
