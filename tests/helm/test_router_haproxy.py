"""The router config run by a real haproxy against fake replicas: every rule it keeps (ids to their worker, the hash
for every other id, creates, keyed creates, batches, limits, its own answers, an Upgrade passed through).

Needs a haproxy binary (Debian: `apt-get install haproxy`; skipped without one). Replicas are small HTTP servers on
127.0.0.1-3 that echo who they are; names resolve through a DNS server of the test's own; all ports are below 32768.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helmchart import ROOT
from routerconf import compose_env, haproxy_binary, running_haproxy

from gymserve.errors import error_body
from servers import free_port

pytestmark = pytest.mark.helm

REPLICAS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
FULL = "127.0.0.2"  # answers 503 to every create, as a full or draining replica does
NODES = {"aaaaaaaaaaaa": "127.0.0.1", "bbbbbbbbbbbb": "127.0.0.2", "cccccccccccc": "127.0.0.3"}
REFUSED_NODE = "dddddddddddd"  # resolves to an address where nothing listens
GONE_NODE = "eeeeeeeeeeee"  # no longer resolves
HEX = "0123456789abcdef" * 2
BODY_LIMIT = 1000


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module
    spec.loader.exec_module(module)
    return module


class FakeDns:
    """A UDP DNS server that answers A queries from a table of names to addresses (NXDOMAIN for other names)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(4096)
            except OSError:
                return
            self.sock.sendto(self.answer(query), client)

    def answer(self, query: bytes) -> bytes:
        labels, pos = [], 12
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
            pos += 1 + query[pos]
        end = pos + 5
        qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
        addresses = self.table.get(".".join(labels).lower())
        if addresses is None:
            return query[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + query[12:end]
        records = [] if qtype != 1 else addresses
        answer = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a) for a in records)
        return query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(records), 0, 0) + query[12:end] + answer

    def close(self) -> None:
        self.sock.close()


class Replica(BaseHTTPRequestHandler):
    """A replica (or one of its workers): says who answered and what it received."""

    protocol_version = "HTTP/1.1"
    dropped = 0  # requests to a path ending in /drop: read, then the connection closed with no answer

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self) -> None:
        body = self._body()
        address, port = self.server.server_address[:2]
        if self.path == "/readyz":
            return self._send(200, b"{}")
        if self.path.endswith("/drop"):
            Replica.dropped += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            key = self.headers.get("Sec-WebSocket-Key", "") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
            self.send_header("X-Answered-By", f"{address}:{port}")
            self.end_headers()
            time.sleep(0.5)  # the upgraded connection stays open a moment, as a stream's does
            self.close_connection = True
            return None
        if self.command == "POST" and self.path in ("/v2/envs", "/v1/envs", "/v1/envs/") and address == FULL:
            self.server.refused += 1  # type: ignore[attr-defined]
            return self._send(503, b'{"error": {"code": "capacity_exceeded"}}')
        echoed = {
            "address": address,
            "port": port,
            "path": self.path,
            "bytes": len(body),
            "forwarded": self.headers.get("X-Gymserve-Forwarded"),
        }
        return self._send(200, json.dumps(echoed).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _ports_free_everywhere(ports: list[int]) -> bool:
    for address in REPLICAS:
        for port in ports:
            with socket.socket() as s:
                try:
                    s.bind((address, port))
                except OSError:
                    return False
    return True


@pytest.fixture(scope="module")
def farm_ports() -> Iterator[tuple[int, int]]:
    """The replicas' API port and worker port base (slots 0 and 1 listen), free on every replica address."""
    haproxy_binary()  # skip before starting anything
    for _ in range(50):
        api, base = free_port(), free_port()
        if base + 2 < 32768 and _ports_free_everywhere([api, base, base + 1]):
            break
    servers = []
    for address in REPLICAS:
        for port in (api, base, base + 1):
            server = ThreadingHTTPServer((address, port), Replica)
            server.refused = 0  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
    yield api, base
    for server in servers:
        server.shutdown()
        server.server_close()


def router_env(api: int, base: int, dns: FakeDns, replicas: str, **overrides: str) -> dict[str, str]:
    env = compose_env()
    env |= {
        "GYMSERVE_ROUTER_RESOLVER": f"127.0.0.1:{dns.port}",
        "GYMSERVE_ROUTER_REPLICAS": replicas,
        "GYMSERVE_PORT": str(api),
        "GYMSERVE_WORKER_PORT_BASE": str(base),
        "GYMSERVE_MAX_BODY_BYTES": str(BODY_LIMIT),
        "GYMSERVE_ROUTER_BUFFER_BYTES": str(BODY_LIMIT + 65536),
    }
    return env | overrides


class Router:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else None
        finally:
            conn.close()

    def wait_ready(self, count: int) -> None:
        """Until the router's health checks found `count` replicas (creates land on each of them)."""
        deadline, seen = time.monotonic() + 20, set()
        while time.monotonic() < deadline:
            status, _, body = self.call("GET", f"/v2/envs?probe={time.monotonic_ns()}")
            if status == 200:
                seen.add(body["address"])
                if len(seen) >= count:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the router found {sorted(seen)} of {count} replicas in 20 s")


@pytest.fixture(scope="module")
def dns() -> Iterator[FakeDns]:
    table = {name: [address] for name, address in NODES.items()}
    table |= {REFUSED_NODE: ["127.0.0.5"], "replicas.farm": REPLICAS}
    server = FakeDns(table)
    yield server
    server.close()


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, farm_ports: tuple[int, int], dns: FakeDns) -> Iterator[Router]:
    api, base = farm_ports
    port = free_port()
    with running_haproxy(tmp_path_factory.mktemp("router"), router_env(api, base, dns, "replicas.farm"), port):
        r = Router(port)
        r.wait_ready(len(REPLICAS))
        yield r


def an_id(node: str, slot: int, token: int) -> str:
    return f"{node}.{slot}-1.{token:032x}"


# --- ids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", [0, 1])
def test_an_id_whose_node_runs_goes_to_its_workers_port(router: Router, farm_ports: tuple[int, int], slot: int) -> None:
    _, base = farm_ports
    for node, address in NODES.items():
        for path in (f"/v1/envs/{an_id(node, slot, 7)}/step/", f"/v2/envs/{an_id(node, slot, 7)}"):
            status, _, body = router.call("POST", path, {"action": 0})
            assert status == 200 and (body["address"], body["port"], body["path"]) == (address, base + slot, path)


@pytest.mark.parametrize(
    "iid",
    [
        an_id(GONE_NODE, 0, 1),  # the node is gone (its name no longer resolves)
        an_id(REFUSED_NODE, 0, 1),  # its address refuses
        an_id("aaaaaaaaaaaa", 5, 1),  # the node runs, but no worker of that slot does
        "bogus",  # not an id: the replica answers unknown in its own words
        f"gymserve.0-1.{HEX}",  # not this farm's node pattern: never resolved
        f"aaaaaaaaaaaa.0-1.{HEX[:-1]}",
    ],
)
def test_any_other_id_goes_to_the_replica_a_hash_of_it_picks(
    router: Router, farm_ports: tuple[int, int], iid: str
) -> None:
    api, _ = farm_ports
    answered = set()
    for _ in range(5):
        status, _, body = router.call("GET", f"/v2/envs/{iid}")
        assert status == 200 and body["port"] == api, body
        answered.add(body["address"])
    assert len(answered) == 1, f"{iid} reached {answered}"


def test_the_hash_spreads_ids_over_the_ready_replicas(router: Router) -> None:
    reached = {router.call("GET", f"/v2/envs/{an_id(GONE_NODE, 0, n)}")[2]["address"] for n in range(40)}
    assert reached == set(REPLICAS)


# --- creates and batches --------------------------------------------------------------------------------


def test_plain_creates_go_to_a_ready_replica_and_a_503_is_tried_elsewhere(router: Router) -> None:
    reached = []
    for path in ["/v2/envs"] * 12 + ["/v1/envs/"] * 6:
        status, _, body = router.call("POST", path, {"env_id": "CartPole-v1"})
        assert status == 200, body
        reached.append(body["address"])
    assert set(reached) == set(REPLICAS) - {FULL}


def test_keyed_creates_go_where_their_key_hashes(router: Router) -> None:
    reached: dict[str, set[str]] = {}
    for n in range(24):
        for _ in range(3):
            status, _, body = router.call("POST", "/v2/envs", {"env_id": "CartPole-v1"}, {"Idempotency-Key": f"k{n}"})
            assert status == 200, body
            reached.setdefault(f"k{n}", set()).add(body["address"])
    assert all(len(places) == 1 for places in reached.values()), reached
    # Keys spread; those whose replica is full went on to another one.
    assert set().union(*reached.values()) == set(REPLICAS) - {FULL}


def test_one_clients_batches_enter_one_replica(router: Router) -> None:
    entered: dict[str, set[str]] = {}
    for client in [f"10.0.0.{n}" for n in range(20)]:
        for _ in range(3):
            status, _, body = router.call("POST", "/v2/batch/step", {"steps": []}, {"X-Forwarded-For": client})
            assert status == 200
            entered.setdefault(client, set()).add(body["address"])
    assert all(len(places) == 1 for places in entered.values()), entered
    assert len(set().union(*entered.values())) >= 2


def test_a_clients_forwarded_header_is_dropped(router: Router) -> None:
    status, _, body = router.call(
        "GET", f"/v2/envs/{an_id('aaaaaaaaaaaa', 0, 3)}", headers={"X-Gymserve-Forwarded": "1"}
    )
    assert status == 200 and body["forwarded"] is None


def test_an_upgrade_reaches_the_worker_and_comes_back(router: Router, farm_ports: tuple[int, int]) -> None:
    _, base = farm_ports
    for path, where in [
        (f"/v2/envs/{an_id('cccccccccccc', 1, 9)}/stream", f"127.0.0.3:{base + 1}"),
        ("/v2/stream", None),
    ]:
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            head = s.recv(4096).decode()
        assert head.startswith("HTTP/1.1 101"), head
        assert "upgrade: websocket" in head.lower()
        if where:
            assert f"x-answered-by: {where}" in head.lower()


# --- the router's own answers -----------------------------------------------------------------------------


def expected(status: int, native: bool) -> dict[str, Any]:
    """The body of the router's answer that HAProxy makes under `status` (its own, before http-after-response)."""
    gen_docs = _gen_docs()
    (answer,) = [a for a in gen_docs.ROUTER_ANSWERS if a.haproxy_status == status]
    return error_body(answer.instance(), native)


def test_a_step_the_replica_dropped_is_not_resent(router: Router) -> None:
    """Only a connection that failed is tried again: a step that was sent may have run, and must not run twice."""
    before = Replica.dropped
    status, headers, body = router.call("POST", f"/v2/envs/{an_id('aaaaaaaaaaaa', 0, 9)}/drop", {"action": 0})
    assert Replica.dropped - before == 1
    # The app's 503 unavailable, retryable: a client resends with the same seq, which never runs a step twice.
    assert (status, headers.get("retry-after"), body) == (503, "1", expected(502, True))
    assert body["error"]["retryable"] is True


def test_healthz_and_metrics_are_the_routers(router: Router) -> None:
    assert router.call("GET", "/router/healthz")[::2] == (200, {"status": "ok"})
    status, _, body = router.call("GET", "/metrics")
    assert (status, body) == (404, expected(404, False))


def test_bodies_over_the_limit_are_refused_in_memory_with_content_length_or_chunked(router: Router) -> None:
    path = f"/v2/envs/{an_id('aaaaaaaaaaaa', 0, 4)}/step"
    assert router.call("POST", path, b"x" * BODY_LIMIT)[0] == 200
    status, _, body = router.call("POST", path, b"x" * (BODY_LIMIT + 1))
    assert (status, body) == (413, expected(413, True))

    def chunked(size: int) -> bytes:
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            try:
                for start in range(0, size, 4096):
                    n = min(4096, size - start)
                    s.sendall(f"{n:x}\r\n".encode() + b"x" * n + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the router answered and closed before the whole body was sent
            return s.recv(65536)

    assert chunked(900).startswith(b"HTTP/1.1 200")
    answer = chunked(200_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == expected(413, True)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, farm_ports: tuple[int, int], dns: FakeDns) -> Iterator[Router]:
    """A router with small per-client limits and no replica at all."""
    api, base = farm_ports
    port = free_port()
    env = router_env(
        api,
        base,
        dns,
        "nothing.farm",
        GYMSERVE_ROUTER_CONNECTIONS_PER_CLIENT="3",
        GYMSERVE_ROUTER_REQUESTS_PER_SECOND="5",
        GYMSERVE_ROUTER_REQUEST_BURST="0",
    )
    with running_haproxy(tmp_path_factory.mktemp("limited"), env, port):
        yield Router(port)


def test_without_worker_ports_an_id_goes_to_its_nodes_shared_port(
    tmp_path: Path, farm_ports: tuple[int, int], dns: FakeDns
) -> None:
    api, base = farm_ports
    port = free_port()
    env = router_env(api, base, dns, "replicas.farm", GYMSERVE_WORKER_PORT_BASE="0")
    with running_haproxy(tmp_path, env, port):
        status, _, body = Router(port).call("GET", f"/v2/envs/{an_id('bbbbbbbbbbbb', 1, 7)}")
    assert (status, body["address"], body["port"]) == (200, NODES["bbbbbbbbbbbb"], api)


def test_no_ready_replica_is_503_unavailable_with_retry_after(limited: Router) -> None:
    time.sleep(2.1)  # two fresh seconds: the rate counts the previous second too, weighted
    for path, native in [("/v2/envs", True), ("/v1/envs/", False), (f"/v2/envs/{an_id(GONE_NODE, 0, 1)}", True)]:
        status, headers, body = limited.call("GET", path)
        assert (status, headers.get("retry-after"), body) == (503, "5", expected(503, native)), path


def test_a_client_over_its_request_rate_gets_429(limited: Router) -> None:
    time.sleep(2.1)
    answers = [limited.call("GET", "/v1/envs/") for _ in range(10)]
    statuses = [a[0] for a in answers]
    assert statuses[:5] == [503] * 5 and set(statuses[6:]) == {429}, statuses
    assert answers[-1][1].get("retry-after") == "1" and answers[-1][2] == expected(429, False)


def test_a_client_over_its_connections_gets_429(limited: Router) -> None:
    time.sleep(2.1)
    held = [socket.create_connection(("127.0.0.1", limited.port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.2)
        status, _, body = limited.call("GET", "/v2/envs")
        assert (status, body) == (429, expected(429, True))
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while (status := limited.call("GET", "/v2/envs")[0]) != 503 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status == 503
