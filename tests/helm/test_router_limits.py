"""The router's limits run by a real nginx in front of a real gymserve: the app's body limit, per-client rates, and
slow clients that nginx holds so that a normal client's create and steps stay fast.

Needs an nginx binary (skipped without one, like test_router_nginx.py) and starts `gymserve serve` on 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from routerconf import compose_env
from test_router_nginx import FakeDns, Router, assert_error, nginx_binary, start_router

from servers import Server, start_server

pytestmark = pytest.mark.helm

NODE = "aaaaaaaaaaaa"  # a compose replica's name (the router's node pattern there: 12 hex digits)


@pytest.fixture(scope="module")
def gymserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    nginx_binary()  # skip before starting anything
    srv = start_server(tmp_path_factory.mktemp("replica"), node_id=NODE)
    yield srv
    srv.stop()


def router_for(srv: Server, tmp_path: Path, **overrides: str) -> Iterator[Router]:
    env = {**compose_env(), "GYMSERVE_PORT": srv.url.rsplit(":", 1)[1], **overrides}
    dns = FakeDns({NODE: "127.0.0.1", env["GYMSERVE_ROUTER_BACKEND"]: "127.0.0.1"})
    try:
        yield from start_router(tmp_path, env, dns)
    finally:
        dns.close()


def normal_client(url: str, steps: int = 20) -> float:
    started = time.perf_counter()
    iid = requests.post(url + "/v2/envs", json={"env_id": "CartPole-v1"}, timeout=60).json()["instance_id"]
    requests.post(f"{url}/v2/envs/{iid}/reset", json={}, timeout=60).raise_for_status()
    for i in range(steps):  # left, right, ...: the pole stays up for all of them
        requests.post(f"{url}/v2/envs/{iid}/step", json={"action": i % 2}, timeout=60).raise_for_status()
    elapsed = time.perf_counter() - started
    requests.delete(f"{url}/v2/envs/{iid}", timeout=60)
    return elapsed


def test_slow_clients_through_the_router_leave_a_normal_client_fast(gymserve: Server, tmp_path: Path) -> None:
    for router in router_for(gymserve, tmp_path):
        url = f"http://127.0.0.1:{router.port}"
        calm = min(normal_client(url) for _ in range(3))
        slow: list[socket.socket] = []
        try:
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", router.port), timeout=5)
                s.sendall(b"POST /v2/envs HTTP/1.1\r\n")
                slow.append(s)
            time.sleep(0.5)
            stalled = normal_client(url)
        finally:
            for s in slow:
                s.close()
        assert stalled < max(1.0, 5 * calm), f"without slow clients {calm:.3f}s, with 20: {stalled:.3f}s"


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_body_over_the_apps_limit_is_refused_by_the_router(gymserve: Server, tmp_path: Path, api: str) -> None:
    limit = 1_048_576  # GYMSERVE_MAX_BODY_BYTES's default, which compose passes to the router
    for router in router_for(gymserve, tmp_path):
        answer = router.call("POST", f"/{api}/envs/", {"Content-Length": str(limit + 1)})
        assert_error(answer, api, 413, "payload_too_large", {}, None)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_client_over_its_request_rate_gets_429_in_the_apis_shape(gymserve: Server, tmp_path: Path, api: str) -> None:
    limits = {"GYMSERVE_ROUTER_REQUESTS_PER_SECOND": "1", "GYMSERVE_ROUTER_REQUEST_BURST": "1"}
    for router in router_for(gymserve, tmp_path, **limits):
        answers: list[Any] = [router.call("GET", f"/{api}/envs/" if api == "v1" else "/v2/envs") for _ in range(4)]
        assert answers[0].status == 200
        refused = answers[-1]
        assert_error(refused, api, 429, "rate_limited", {}, None)
        assert refused.headers.get("retry-after") == "1"
