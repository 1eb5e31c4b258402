"""The router template run by a real nginx, once as compose renders it and once as the chart does: forged ids and the
router's other answers in the shape of the API asked, and requests that reach the right replica (the one an id
names, or for an id whose replica is gone, the one a hash of the id picks).

Needs an nginx binary (Debian: `apt-get install nginx-light`; the test is skipped without one). Names resolve
through a small DNS server of the test's own, replicas are one HTTP server that echoes what it received, all on
127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helmchart import FULLNAME, render
from routerconf import chart_env, compose_env
from routerconf import render as render_template

from gymserve.api.openapi import SCHEMAS
from gymserve.errors import GymServeError, error_body, kinds
from servers import free_port

pytestmark = pytest.mark.helm

HEX = "0123456789abcdef" * 2
UP = "127.0.0.1"  # where the echo server listens
REFUSED = "127.0.0.2"  # loopback too, but nothing listens there: the connection is refused
# Per farm: a running replica, one whose address refuses, one whose name no longer resolves, a name of another farm.
NODES = {
    "compose": {"up": "aaaaaaaaaaaa", "refused": "bbbbbbbbbbbb", "gone": "cccccccccccc", "foreign": f"{FULLNAME}-0"},
    "chart": {"up": f"{FULLNAME}-0", "refused": f"{FULLNAME}-1", "gone": f"{FULLNAME}-9999", "foreign": "aaaaaaaaaaaa"},
}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not found:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


# --- what nginx talks to ------------------------------------------------------------------------------------


class FakeDns:
    """A UDP DNS server that answers A queries from a table (NXDOMAIN for every other name)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            try:
                self.sock.bind(("127.0.0.1", free_port()))
                break
            except OSError:
                continue
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            self.sock.sendto(self.answer(query), client)

    def answer(self, query: bytes) -> bytes:
        labels, pos = [], 12
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
            pos += 1 + query[pos]
        question_end = pos + 5
        qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
        address = self.table.get(".".join(labels).lower())
        header = query[:2]
        if address is None:
            return header + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + query[12:question_end]
        if qtype != 1:
            return header + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + query[12:question_end]
        record = struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(address)
        return header + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + query[12:question_end] + record

    def close(self) -> None:
        self.sock.close()


# An env id whose replica reads the request, then drops the connection without answering (a crash mid-step).
DROPPED = "d" * 32
# An env id that the replica answers as lost, in its own words (the router passes that on untouched).
LOST = "e" * 32
LOST_BODY = {"error": {"code": "instance_lost", "message": "lost", "details": {}, "fault": "infrastructure"}}


class Echo(BaseHTTPRequestHandler):
    """A replica: answers every request with what it received, over keep-alive connections that it counts."""

    protocol_version = "HTTP/1.1"
    connections = 0
    requests: list[str] = []

    def setup(self) -> None:
        super().setup()
        Echo.connections += 1

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        Echo.requests.append(self.path)
        if DROPPED in self.path:
            self.close_connection = True
            return
        status, body = (410, json.dumps(LOST_BODY).encode()) if LOST in self.path else (200, self._echoed())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _echoed(self) -> bytes:
        return json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "forwarded": self.headers.get("X-Gymserve-Forwarded"),
                "port": self.server.server_address[1],  # which replica (or worker) answered
            }
        ).encode()

    do_GET = do_POST = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _echo_server() -> Iterator[int]:
    server = ThreadingHTTPServer((UP, free_port()), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def replica() -> Iterator[int]:
    yield from _echo_server()


@pytest.fixture(scope="module")
def worker_port() -> Iterator[int]:
    """A worker of the running replica, on a port of its own (GYMSERVE_WORKER_PORT_BASE)."""
    yield from _echo_server()


# --- the router ---------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Router:
    port: int
    error_log: Path

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else None)
        finally:
            conn.close()


def start_router(
    tmp_path: Path,
    env: dict[str, str],
    dns: FakeDns,
    pools: dict[str, str] | None = None,
    replicas: list[str] | None = None,
    keyed: list[str] | None = None,
    workers: dict[str, str] | None = None,
) -> Iterator[Router]:
    """nginx with the template rendered from `env`, resolving through `dns`; stopped (by its PID) at the end.

    `pools`: node -> address of the connection pools that router-pools.sh would write (none by default);
    `workers`: "<node>.<slot>" -> "address:port" of its pools of single workers;
    `replicas`: the addresses of its pool of every replica (for creates and lists, and by a hash of the id for ids
    whose replica is gone); `keyed`: of its pool of keyed creates (the replicas' by default).
    """
    port = free_port()
    config = render_template({**env, "NGINX_LOCAL_RESOLVERS": f"127.0.0.1:{dns.port}"})
    write_pools(tmp_path, pools or {}, int(env["GYMSERVE_PORT"]), replicas, keyed, workers)
    assert config.count(POOLS_GLOB) == 4
    config = config.replace(POOLS_GLOB, f"{tmp_path}/*.gymserve-")
    # Only where it listens and logs differs from the image: a free port, files of the test's own.
    for image_value, test_value in [
        ("listen 8080 ", f"listen 127.0.0.1:{port} "),
        ("/var/log/nginx/access.log", str(tmp_path / "access.log")),
    ]:
        assert config.count(image_value) == 1, image_value
        config = config.replace(image_value, test_value)
    (tmp_path / "default.conf").write_text(config)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"  {kind}_temp_path {tmp_path}/{kind};" for kind in kinds)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log info;\nevents {{}}\nhttp {{\n"
        # The official image's log format "main" (the template's access_log uses it).
        "  log_format main '$remote_addr - $remote_user [$time_local] \"$request\" $status';\n"
        f"{temp}\n  include {tmp_path}/default.conf;\n}}\n"
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [nginx_binary(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    router = Router(port, tmp_path / "error.log")
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"nginx exited {proc.returncode}: {stderr.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 10 s"
                time.sleep(0.05)
        yield router
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


POOLS_GLOB = "/etc/nginx/conf.d/*.gymserve-"


def write_pools(
    where: Path,
    pools: dict[str, str],
    port: int,
    replicas: list[str] | None = None,
    keyed: list[str] | None = None,
    workers: dict[str, str] | None = None,
) -> None:
    """The files of router-pools.sh, in its format (test_router_pools.py runs the script itself). `keyed`: the
    servers of the keyed creates' pool (the script gives it the replicas' servers; a test may give others)."""
    by_name = {f"gymserve-node-{node}": f"{ip}:{port}" for node, ip in pools.items()}
    by_name |= {f"gymserve-worker-{w.replace('.', '-')}": address for w, address in (workers or {}).items()}
    (where / "router.gymserve-pools").write_text(
        "".join(
            f"upstream {name} {{\n    server {address};\n    keepalive 32;\n"
            "    keepalive_timeout 60s;\n    keepalive_requests 100000;\n}\n"
            for name, address in by_name.items()
        )
    )
    (where / "router.gymserve-nodes").write_text("".join(f"{n} gymserve-node-{n};\n" for n in pools))
    (where / "router.gymserve-workers").write_text(
        "".join(f"{w} gymserve-worker-{w.replace('.', '-')};\n" for w in workers or {})
    )
    if replicas:  # addresses, or address:port where a test runs several replicas on one address

        def server(address: str) -> str:
            return f"    server {address if ':' in address else f'{address}:{port}'};\n"

        servers = "".join(map(server, replicas))
        keyed_servers = "".join(map(server, keyed or replicas))
        (where / "router.gymserve-pools").write_text(
            (where / "router.gymserve-pools").read_text()
            + f"upstream gymserve-replicas {{\n{servers}    keepalive 32;\n}}\n"
            + f"upstream gymserve-keyed {{\n    hash $http_idempotency_key;\n{keyed_servers}    keepalive 32;\n}}\n"
            + f"upstream gymserve-by-client {{\n    hash $gs_client;\n{servers}    keepalive 32;\n}}\n"
            + f"upstream gymserve-by-id {{\n    hash $gs_id consistent;\n{servers}    keepalive 32;\n}}\n"
        )
        (where / "router.gymserve-any").write_text('"" gymserve-replicas;\n')


def farm_env(farm: str, replica_port: int) -> dict[str, str]:
    env = compose_env() if farm == "compose" else chart_env(render())
    # nginx resolves the keyed-create upstream with the system's resolver when it starts (the fake DNS serves
    # only nginx's run-time resolver): a name the system knows stands in for the backend.
    return {**env, "GYMSERVE_PORT": str(replica_port), "GYMSERVE_ROUTER_BACKEND": "localhost"}


def dns_table(env: dict[str, str], farm: str, backend: str = UP) -> dict[str, str]:
    domain = env["GYMSERVE_ROUTER_NODE_DOMAIN"]
    nodes = NODES[farm]
    return {
        nodes["up"] + domain: UP,
        nodes["refused"] + domain: REFUSED,
        nodes["foreign"] + domain: UP,  # resolvable, but the router must not even ask
        env["GYMSERVE_ROUTER_BACKEND"]: backend,
    }


@pytest.fixture(params=["compose", "chart"])
def farm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def router(farm: str, replica: int, tmp_path: Path) -> Iterator[Router]:
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm))
    try:
        yield from start_router(tmp_path, env, dns)
    finally:
        dns.close()


# --- the answers --------------------------------------------------------------------------------------------


def assert_error(answer: Answer, api: str, status: int, code: str, details: dict[str, Any], router: str | None) -> str:
    """The router's answer is the app's error body for its API (errors.error_body), with its status; its message."""
    native = api == "v2"
    assert answer.status == status, answer
    assert answer.headers.get("content-type") == "application/json", answer
    assert answer.headers.get("x-gymserve-router") == router, answer
    message = answer.body["error"]["message"] if native else answer.body["message"]
    expected = GymServeError(message, details=details)
    expected.code = code
    expected.fault, expected.retryable = kinds().get(code, ("client", False))  # type: ignore[assignment]
    assert answer.body == error_body(expected, native), answer.body
    if native:
        # the OpenAPI document's /v2 error, its references resolved against the document's components
        jsonschema.validate(answer.body, {"$ref": "#/components/schemas/Error", "components": {"schemas": SCHEMAS}})
    return str(message)


def test_ids_of_running_replicas_reach_them_and_nothing_else(router: Router, farm: str) -> None:
    node = NODES[farm]["up"]
    for path in [f"/v1/envs/{node}.0-1.{HEX}/step/", f"/v2/envs/{node}.3-42.{HEX}"]:
        answer = router.call("POST", path, {"X-Gymserve-Forwarded": "1", "Content-Type": "application/json"}, b"{}")
        assert answer.status == 200 and "x-gymserve-router" not in answer.headers, answer
        # The path as sent; the workers' own forwarding header never comes from a client.
        assert answer.body["path"] == path and not answer.body["forwarded"], answer.body
    for path in ["/v1/envs/", "/v2/envs", "/v2/batch/step", "/healthz"]:
        answer = router.call("POST", path, body=b"{}")
        assert answer.status == 200 and answer.body["path"] == path, answer


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_forged_ids_are_refused_by_the_router(router: Router, farm: str, api: str) -> None:
    status = 400 if api == "v1" else 404
    for instance_id in [
        "not-an-id",
        f"{NODES[farm]['foreign']}.0-1.{HEX}",  # another farm's node: resolvable, never asked
        f"{NODES[farm]['up']}.0-1.{HEX[:-1]}",
        f"{NODES[farm]['up']}.0-1234-1.{HEX}",
    ]:
        answer = router.call("GET", f"/{api}/envs/{instance_id}/")
        message = assert_error(answer, api, status, "unknown_instance", {"instance_id": instance_id}, "rejected")
        assert message == f"Instance_id {instance_id} unknown"
    # Not safe to echo inside JSON: refused without it.
    answer = router.call("GET", f'/{api}/envs/"{NODES[farm]["up"]}%22/')
    assert_error(answer, api, status, "unknown_instance", {}, "rejected")


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("why", ["gone", "refused"])
def test_before_any_pool_ids_of_a_replica_that_does_not_answer_go_to_the_backend(
    router: Router, farm: str, api: str, why: str
) -> None:
    # Gone (no name) or refusing, and router-pools.sh has found no replica yet: any replica by the backend's name,
    # which adopts the env or answers for it; never the router's own "lost".
    instance_id = f"{NODES[farm][why]}.1-7.{HEX}"
    path = f"/{api}/envs/{instance_id}" + ("/step/" if api == "v1" else "/step")
    answer = router.call("POST", path, {"Content-Type": "application/json"}, b"{}")
    assert answer.status == 200 and "x-gymserve-router" not in answer.headers, answer
    assert answer.body["path"] == path, answer.body


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_bodies_beyond_the_routers_limit(router: Router, farm: str, api: str) -> None:
    for path in [f"/{api}/envs/", f"/{api}/envs/{NODES[farm]['up']}.0-1.{HEX}/step/"]:
        # nginx refuses on the declared length, before any body is sent.
        answer = router.call("POST", path, {"Content-Length": str(65 * 2**20)})
        assert_error(answer, api, 413, "payload_too_large", {}, None)


def test_metrics_are_not_the_routers(router: Router) -> None:
    message = assert_error(router.call("GET", "/metrics"), "v1", 404, "not_found", {}, None)
    assert "Scrape each replica" in message


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_no_replica_to_take_a_create(farm: str, replica: int, tmp_path: Path, api: str) -> None:
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm, backend=REFUSED))
    try:
        for router in start_router(tmp_path, env, dns):
            answer = router.call("POST", f"/{api}/envs/", {"Content-Type": "application/json"}, b"{}")
            # 503, not the 502 nginx met (refused): the body in the API's shape, and when to retry (docs/compose.md).
            assert_error(answer, api, 503, "unavailable", {}, "unavailable")
            assert answer.headers.get("retry-after") == "5"
    finally:
        dns.close()


def test_creates_with_an_idempotency_key_take_the_hashed_upstream(farm: str, replica: int, tmp_path: Path) -> None:
    """The pool of every replica refuses, the keyed pool (a hash of the key, written by router-pools.sh) answers:
    keyed creates, and only they, go through the hash of the key."""
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm, backend=REFUSED))
    try:
        for router in start_router(tmp_path, env, dns, pools={}, replicas=[REFUSED], keyed=[UP]):
            keyed = {"Content-Type": "application/json", "Idempotency-Key": "k-1"}
            answer = router.call("POST", "/v2/envs", keyed, b"{}")
            assert answer.status == 200 and answer.body["path"] == "/v2/envs", answer
            plain = router.call("POST", "/v2/envs", {"Content-Type": "application/json"}, b"{}")
            assert_error(plain, "v2", 503, "unavailable", {}, "unavailable")
            listing = router.call("GET", "/v2/envs", {"Idempotency-Key": "k-1"}, b"")
            assert_error(listing, "v2", 503, "unavailable", {}, "unavailable")  # only a POST is a create
    finally:
        dns.close()


# --- connection pools (router-pools.sh writes them; test_router_pools.py runs the script) --------------------


@pytest.fixture
def pooled(farm: str, replica: int, tmp_path: Path) -> Iterator[Router]:
    """A router with pools for the running replica, for one that refuses, and for one whose name is gone."""
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm))
    nodes = NODES[farm]
    try:
        yield from start_router(
            tmp_path,
            env,
            dns,
            pools={nodes["up"]: UP, nodes["refused"]: REFUSED, nodes["gone"]: REFUSED},
            replicas=[UP],
        )
    finally:
        dns.close()


def test_steps_reuse_the_pooled_connections(pooled: Router, farm: str) -> None:
    before = Echo.connections
    node = NODES[farm]["up"]
    for i in range(60):  # each on a fresh client connection
        path = f"/v2/envs/{node}.{i % 4}-1.{HEX}/step"
        answer = pooled.call("POST", path, {"Content-Type": "application/json"}, b"{}")
        assert answer.status == 200 and answer.body["path"].startswith(f"/v2/envs/{node}."), answer
    # One nginx worker here: its pool holds the connection it opened (a second one at most, for a race).
    assert Echo.connections - before <= 2, f"{Echo.connections - before} connections for 60 requests"
    # Creates and lists too, through the pool of every replica.
    before = Echo.connections
    for path in ["/v1/envs/", "/v2/envs", "/v2/batch/step"] * 20:
        answer = pooled.call("POST", path, {"Content-Type": "application/json"}, b"{}")
        assert answer.status == 200 and answer.body["path"] == path, answer
    assert Echo.connections - before <= 2, f"{Echo.connections - before} connections for 60 requests"


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_ids_of_replicas_that_refuse_or_are_gone_reach_a_replica(pooled: Router, farm: str, api: str) -> None:
    """A pool that refuses (its replica is away, or was replaced), or a node with no pool whose name does not resolve:
    nothing was sent, so the replica that the id's hash picks takes it, and answers in its own words."""
    suffix = "/step/" if api == "v1" else "/step"
    unknown = "eeeeeeeeeeee" if farm == "compose" else f"{FULLNAME}-42"  # no pool, no name
    for node in [NODES[farm]["gone"], NODES[farm]["refused"], unknown]:
        path = f"/{api}/envs/{node}.1-7.{HEX}{suffix}"
        for _ in range(3):  # the same answer every time
            answer = pooled.call("POST", path, {"Content-Type": "application/json"}, b"{}")
            assert answer.status == 200 and "x-gymserve-router" not in answer.headers, answer
            assert answer.body["path"] == path, answer.body


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_replicas_own_lost_answer_passes_unchanged(pooled: Router, farm: str, api: str) -> None:
    for node in [NODES[farm]["up"], NODES[farm]["gone"]]:  # reached through its pool, or by the hash of the id
        answer = pooled.call("POST", f"/{api}/envs/{node}.1-7.{LOST}/step", {"Content-Type": "application/json"}, b"{}")
        assert (answer.status, answer.body) == (410, LOST_BODY), answer
        assert "x-gymserve-router" not in answer.headers, answer


def test_a_step_the_replica_dropped_is_not_resent(pooled: Router, farm: str) -> None:
    path = f"/v2/envs/{NODES[farm]['up']}.0-1.{DROPPED}/step"
    answer = pooled.call("POST", path, {"Content-Type": "application/json"}, b"{}")
    # Sent, then the connection broke: it may have run, so the router tells the client to decide, once.
    assert answer.status == 503 and answer.headers.get("retry-after") == "5", answer
    assert Echo.requests.count(path) == 1


def test_an_ids_worker_is_reached_on_its_own_port(farm: str, replica: int, worker_port: int, tmp_path: Path) -> None:
    """A replica whose workers listen on ports of their own: slot 1's ids reach worker 1's port (no hop between
    workers), the other slots' the replica's shared port, and a worker port that refuses (its worker is being
    replaced) sends the request, unsent so far, to the shared port by the replica's name: never lost, never a 503."""
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm))
    up = NODES[farm]["up"]
    workers = {f"{up}.1": f"{UP}:{worker_port}", f"{up}.2": f"{REFUSED}:{worker_port}"}
    try:
        for router in start_router(tmp_path, env, dns, pools={up: UP}, replicas=[UP], workers=workers):
            for slot, reached in [(1, worker_port), (0, replica), (7, replica), (2, replica)]:
                for api, suffix in [("v1", "/step/"), ("v2", "/step")]:
                    path = f"/{api}/envs/{up}.{slot}-42.{HEX}{suffix}"
                    answer = router.call("POST", path, {"Content-Type": "application/json"}, b"{}")
                    assert answer.status == 200 and answer.body["path"] == path, answer
                    assert answer.body["port"] == reached, (slot, answer.body)
    finally:
        dns.close()


def test_a_clients_batches_enter_one_replica_and_are_never_resent(farm: str, tmp_path: Path) -> None:
    """Batches go to the replica a hash of the client's addresses picks, every time (its path stays warm); one that
    was sent and then lost its connection is not sent to another replica (its items may have been stepped)."""
    env = farm_env(farm, 0)
    dns = FakeDns(dns_table(env, farm))
    servers = [_echo_server() for _ in range(4)]
    ports = [next(server) for server in servers]
    try:
        env["GYMSERVE_PORT"] = str(ports[0])
        for router in start_router(tmp_path, env, dns, replicas=[f"{UP}:{p}" for p in ports]):
            for forwarded_for in [None, "203.0.113.7"]:
                headers = {"Content-Type": "application/msgpack"}
                if forwarded_for:
                    headers["X-Forwarded-For"] = forwarded_for
                reached = {router.call("POST", "/v2/batch/step", headers, b"\x80").body["port"] for _ in range(12)}
                assert len(reached) == 1 and reached <= set(ports), reached
            clients = {
                router.call("POST", "/v2/batch/step", {"X-Forwarded-For": f"198.51.100.{i}"}, b"\x80").body["port"]
                for i in range(40)
            }
            assert len(clients) > 1, "40 clients' batches all entered one of 4 replicas"
            # Creates and lists still go round the replicas.
            assert len({router.call("POST", "/v2/envs", body=b"{}").body["port"] for _ in range(8)}) > 1
            dropped = f"/v2/batch/step?{DROPPED}&farm={farm}"  # Echo.requests is shared by the module
            answer = router.call("POST", dropped, {"Content-Type": "application/msgpack"}, b"\x80")
            assert answer.status == 503 and answer.body["error"]["code"] == "unavailable", answer
            assert Echo.requests.count(dropped) == 1, "a batch whose connection broke once sent was sent again"
    finally:
        dns.close()
        for server in servers:
            next(server, None)


def port_reached(router: Router, path: str) -> int:
    """Which replica answered a GET of `path` (the replica's own answer, none of the router's)."""
    answer = router.call("GET", path)
    assert answer.status == 200 and "x-gymserve-router" not in answer.headers, answer
    return int(answer.body["port"])


def test_ids_of_gone_replicas_are_spread_by_a_hash_of_the_id(farm: str, tmp_path: Path) -> None:
    """Ids whose replica is gone reach the replica a consistent hash of the id picks: the same one for the same id
    (/v1 or /v2), different ones for different ids; one that was sent and then lost its connection is not resent."""
    env = farm_env(farm, 0)
    dns = FakeDns(dns_table(env, farm))
    servers = [_echo_server() for _ in range(4)]
    ports = [next(server) for server in servers]
    gone = NODES[farm]["gone"]
    try:
        env["GYMSERVE_PORT"] = str(ports[0])
        for router in start_router(tmp_path, env, dns, replicas=[f"{UP}:{p}" for p in ports]):
            for token in [HEX, "f" * 32, "0" * 32]:
                reached = {port_reached(router, f"/{api}/envs/{gone}.1-7.{token}") for api in ("v1", "v2") * 4}
                assert len(reached) == 1, token
            spread = {port_reached(router, f"/v2/envs/{gone}.1-7.{i:032x}") for i in range(40)}
            assert len(spread) > 1 and spread <= set(ports), "40 ids all went to one of 4 replicas"
            dropped = f"/v2/envs/{gone}.2-7.{DROPPED}/step?farm={farm}"  # Echo.requests is shared by the module
            answer = router.call("POST", dropped, {"Content-Type": "application/json"}, b"{}")
            assert answer.status == 503 and answer.body["error"]["code"] == "unavailable", answer
            assert Echo.requests.count(dropped) == 1, "a step whose connection broke once sent was sent again"
    finally:
        dns.close()
        for server in servers:
            next(server, None)


def test_a_replica_whose_name_moved_gets_its_ids_by_the_hash(farm: str, replica: int, tmp_path: Path) -> None:
    """A StatefulSet pod replaced under its old name: the router's pool still holds the old address (refused), and
    the name now gives another one. Nothing was sent: a replica picked by the id's hash takes it."""
    env = farm_env(farm, replica)
    dns = FakeDns(dns_table(env, farm))  # the "refused" node's name gives REFUSED (127.0.0.2)
    node = NODES[farm]["refused"]
    try:
        for router in start_router(tmp_path, env, dns, pools={node: "127.0.0.3"}, replicas=[UP]):
            for api, suffix in [("v1", "/step/"), ("v2", "/step")]:
                path = f"/{api}/envs/{node}.1-7.{HEX}{suffix}"
                answer = router.call("POST", path, {"Content-Type": "application/json"}, b"{}")
                assert answer.status == 200 and answer.body["path"] == path, answer
    finally:
        dns.close()
