"""Worker ports (GYMSERVE_WORKER_PORT_BASE): every worker also listens on a port of its own, /healthz lists them,
and a request that reaches an env's own worker there is answered with no hop; a worker that replaces a dead one
listens on its slot's port again, and answers the dead worker's ids as lost.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from servers import call, free_port_base, slot_of, start_server

pytestmark = pytest.mark.integration


def _port_base() -> int:
    """A base whose 10 ports (2 workers + 8 spare slots) are all free now."""
    return free_port_base(10)


def _create_on_both_workers(port: int) -> dict[int, str]:
    """slot -> an env that worker holds, reset (creates spread over the workers)."""
    held: dict[int, str] = {}
    for _ in range(40):
        got = call(port, "POST", "/v2/envs", {"env_id": "CartPole-v1"})
        assert got.status == 201, got.body
        env = got.body["instance_id"]
        assert call(port, "POST", f"/v2/envs/{env}/reset", {}).status == 200
        held.setdefault(slot_of(env), env)
        if len(held) == 2:
            return held
    raise AssertionError(f"40 creates all landed on slot(s) {sorted(held)}")


def test_each_worker_answers_its_own_envs_on_its_port_with_no_hop(tmp_path: Path) -> None:
    base = _port_base()
    srv = start_server(tmp_path, workers=2, worker_port_base=base)
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        health = call(port, "GET", "/healthz")
        assert health.body["worker_ports"] == {"0": base, "1": base + 1}
        held = _create_on_both_workers(port)
        for slot, env in held.items():
            own = call(base + slot, "POST", f"/v2/envs/{env}/step", {"action": 0})
            assert own.status == 200, own.body
            assert "x-gymserve-forwarded" not in own.headers, "the env's own worker port took a hop"
            other = call(base + 1 - slot, "POST", f"/v2/envs/{env}/step", {"action": 0})
            assert other.status == 200, other.body
            assert other.headers.get("x-gymserve-forwarded") == "1", "another worker's port answered without a hop"
    finally:
        srv.stop()


def test_a_worker_that_replaces_a_dead_one_listens_on_its_slot_port_again(tmp_path: Path) -> None:
    base = _port_base()
    srv = start_server(tmp_path, workers=2, worker_port_base=base)
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        held = _create_on_both_workers(port)
        os.kill(srv.worker_pids()[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        # The replacement logs its slot (master), then its port (itself).
        while srv.log().count(f"also listens on 127.0.0.1:{base}\n") < 2:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
        lost = call(base, "POST", f"/v2/envs/{held[0]}/step", {"action": 0})
        assert lost.status == 410 and lost.body["error"]["code"] == "instance_lost", lost.body
        kept = call(base + 1, "POST", f"/v2/envs/{held[1]}/step", {"action": 0})
        assert kept.status == 200, kept.body
    finally:
        srv.stop()


def test_a_taken_worker_port_leaves_that_worker_on_the_shared_port(tmp_path: Path) -> None:
    base = _port_base()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", base + 1))
    squatter.listen(1)
    try:
        srv = start_server(tmp_path, workers=2, worker_port_base=base)
        try:
            port = int(srv.url.rsplit(":", 1)[1])
            assert "cannot listen on worker port 127.0.0.1:" + str(base + 1) in srv.log()
            held = _create_on_both_workers(port)
            got = call(port, "POST", f"/v2/envs/{held[1]}/step", {"action": 0})
            assert got.status == 200, got.body
        finally:
            srv.stop()
    finally:
        squatter.close()
