"""A batch with items of another replica: sent to it as one sub-batch by validated node name (routing.peers), once."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve.app import create_app
from gymserve.codec import values
from gymserve.routing import peers
from gymserve.settings import Settings
from servers import free_port

PATTERN = "replica-[ab]"


def make(node: str, pattern: str = PATTERN, **extra: str) -> Any:
    env = {"GYMSERVE_PEER_NODE_PATTERN": pattern, **extra}
    return create_app(Settings.from_env(env, node_id=node)).test_client()


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two replicas; what one POSTs to the other's name reaches the other's app (and is recorded, with the worker
    slot it was sent to in "slots")."""
    apps = {"replica-a": make("replica-a"), "replica-b": make("replica-b")}
    sent: list[tuple[str, dict[str, str]]] = []
    slots: list[int | None] = []

    real = inspect.signature(peers.begin_batch)

    def begin_batch(*args: Any, **kwargs: Any) -> Callable[[], tuple[int, bytes]]:
        call = real.bind(*args, **kwargs)  # called as the real one would be, or a TypeError here
        call.apply_defaults()
        got = call.arguments
        node = got["node"]
        assert peers.reachable(got["settings"], node)
        headers = {"Content-Type": got["content_type"], "Accept": got["accept"], peers.FANOUT_HEADER: "1"}
        if got["authorization"] is not None:
            headers["Authorization"] = got["authorization"]
        sent.append((node, headers))
        slots.append(got["slot"])
        body = got["body"]

        def answer() -> tuple[int, bytes]:
            resp = apps[node].post(peers.BATCH_PATH, data=body, headers=headers)
            return resp.status_code, resp.data

        return answer

    monkeypatch.setattr(peers, "begin_batch", begin_batch)
    return {**apps, "sent": sent, "slots": slots}


def create(client: Any, seed: int) -> str:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    assert client.post(f"/v2/envs/{iid}/reset", json={"seed": seed}).status_code == 200
    return str(iid)


def test_a_batch_steps_the_items_of_every_replica_in_one_sub_batch_each(farm: dict[str, Any]) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    ids = [create(a, 1), create(b, 2), create(b, 3), create(a, 4)]
    resp = a.post("/v2/batch/step", json={"items": [{"id": i, "action": 1} for i in ids]})
    assert resp.status_code == 200, resp.json
    results = resp.json["results"]
    assert [("error" in r) for r in results] == [False] * 4, results
    # Each answer is its own env's first step, whichever replica holds it.
    for seed, result in zip([1, 2, 3, 4], results, strict=True):
        local = gym.make("CartPole-v1")
        local.reset(seed=seed)
        expected = local.step(1)[0]
        assert np.allclose(result["observation"]["$nd"]["data"], expected), (seed, result)
    # B's envs were stepped on B: their next step there is their second.
    assert b.post(f"/v2/envs/{ids[1]}/step", json={"action": 1}).json["seq"] == 3
    assert [node for node, _ in farm["sent"]] == ["replica-b"]  # one sub-batch for B's two items
    assert farm["slots"] == [None]  # to B's shared port: its workers have no ports of their own


def test_with_worker_ports_each_worker_of_another_replica_gets_its_own_sub_batch(farm: dict[str, Any]) -> None:
    farm["replica-a"] = make("replica-a", GYMSERVE_WORKER_PORT_BASE="8100")
    a, b = farm["replica-a"], farm["replica-b"]
    ids = [create(b, 2), create(b, 3)]
    slot = int(ids[0].split(".")[1].split("-")[0])
    other = ids[0].replace(f".{slot}-", f".{slot + 1}-", 1)  # B's worker in the next slot (none here: lost)
    resp = a.post("/v2/batch/step", json={"items": [{"id": i, "action": 1} for i in [ids[0], other, ids[1]]]})
    assert resp.status_code == 200, resp.json
    codes = [r.get("error", {}).get("code") for r in resp.json["results"]]
    assert codes[0] is None and codes[2] is None and codes[1] in {"instance_lost", "unknown_instance"}, codes
    assert [node for node, _ in farm["sent"]] == ["replica-b"] * 2 and farm["slots"] == [slot, slot + 1]


def test_names_outside_the_pattern_and_sub_batches_go_no_further(farm: dict[str, Any]) -> None:
    a = farm["replica-a"]
    foreign = "evil-host.0-1." + "0" * 32
    mine = create(a, 5)
    resp = a.post("/v2/batch/step", json={"items": [{"id": foreign, "action": 0}, {"id": mine, "action": 0}]})
    results = resp.json["results"]
    assert results[0]["error"]["code"] == "wrong_replica" and "error" not in results[1]
    # A replica's sub-batch (the fan-out header) never reaches a third replica.
    other = "replica-b.0-1." + "0" * 32
    resp = a.post("/v2/batch/step", json={"items": [{"id": other, "action": 0}]}, headers={peers.FANOUT_HEADER: "1"})
    assert resp.json["results"][0]["error"]["code"] == "wrong_replica"
    assert farm["sent"] == []


def test_without_peers_items_of_other_replicas_fail_alone() -> None:
    a = make("replica-a", pattern="")
    resp = a.post("/v2/batch/step", json={"items": [{"id": "replica-b.0-1." + "0" * 32, "action": 0}]})
    assert resp.json["results"][0]["error"]["code"] == "wrong_replica"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (socket.gaierror(-2, "Name or service not known"), "instance_lost"),  # gone: its name no longer resolves
        (ConnectionRefusedError(), "unavailable"),  # there, but not answering: retry
        (TimeoutError(), "owner_timeout"),
    ],
)
def test_a_replica_that_does_not_answer(monkeypatch: pytest.MonkeyPatch, failure: Exception, code: str) -> None:
    def fail() -> tuple[int, bytes]:
        raise failure

    monkeypatch.setattr(peers, "begin_batch", lambda *args: fail)
    a = make("replica-a")
    resp = a.post("/v2/batch/step", json={"items": [{"id": "replica-b.0-1." + "0" * 32, "action": 0}]})
    assert resp.json["results"][0]["error"]["code"] == code


def test_the_peer_pattern_must_be_a_regex() -> None:
    with pytest.raises(Exception, match="PEER_NODE_PATTERN"):
        Settings.from_env({"GYMSERVE_PEER_NODE_PATTERN": "("}, node_id="x")


def test_a_peer_is_reached_only_at_an_address_the_replicas_name_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"replica-b": ["10.0.0.2"], "prometheus-ish": ["10.0.0.9"], "gymserve": ["10.0.0.1", "10.0.0.2"]}

    def getaddrinfo(host: str, port: int, *args: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings = Settings.from_env(
        {"GYMSERVE_PEER_NODE_PATTERN": "[a-z-]+", "GYMSERVE_PEERS_DNS": "gymserve"}, node_id="replica-a"
    )
    assert peers.address_of(settings, "replica-b") == "10.0.0.2"
    for not_a_replica in ["prometheus-ish", "gone-replica"]:  # resolves elsewhere / does not resolve
        with pytest.raises(socket.gaierror):
            peers.address_of(settings, not_a_replica)


def test_a_sub_batch_is_sent_at_once_and_its_answer_read_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker steps its own items between the two: a pool thread sending it would wait for the GIL."""
    import http.server
    import threading

    arrived = threading.Event()

    class Replica(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.set()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Replica)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(peers, "address_of", lambda settings, node: "127.0.0.1")
    port = server.server_address[1]
    settings = Settings.from_env(
        {"GYMSERVE_PEER_NODE_PATTERN": "replica-[abc]", "GYMSERVE_PORT": str(port)}, node_id="replica-a"
    )
    try:
        answer = peers.begin_batch(settings, "replica-b", b"\x80", "application/msgpack", "application/msgpack")
        assert arrived.wait(5)  # before anyone asked for the answer
        assert answer() == (200, b"ok")
        peers._drop("replica-b", port)  # the kept connection
    finally:
        server.shutdown()
        server.server_close()
    refused = peers.begin_batch(
        settings, "replica-c", b"\x80", "application/msgpack", "application/msgpack"
    )  # nothing listens now
    with pytest.raises(ConnectionRefusedError):
        refused()


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
def test_relayed_answers_read_as_the_ones_made_here(farm: dict[str, Any], accept: str) -> None:
    """B's items are relayed as B wrote them (in the caller's encoding): the same bytes as A's own would be."""

    a, b = farm["replica-a"], farm["replica-b"]
    ids = [create(a, 7), create(b, 7)]  # the same seed: the same first step on either replica
    resp = a.post("/v2/batch/step", json={"items": [{"id": i, "action": 0} for i in ids]}, headers={"Accept": accept})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == accept
    mine, relayed = values.loads(resp.data, accept)["results"]
    assert farm["sent"][0][1]["Accept"] == accept
    assert np.array_equal(mine["observation"], relayed["observation"]) and mine["seq"] == relayed["seq"] == 2
    assert {k: v for k, v in mine.items() if k != "observation"} == {
        k: v for k, v in relayed.items() if k != "observation"
    }


def test_a_sub_batch_goes_to_the_workers_own_port_and_to_the_shared_one_when_that_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import http.server
    import threading

    class Replica(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            port = str(self.server.server_address[1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(port)))
            self.end_headers()
            self.wfile.write(port)

        def log_message(self, *args: Any) -> None:
            pass

    shared, worker = (http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Replica) for _ in range(2))
    for server in (shared, worker):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(peers, "address_of", lambda settings, node: "127.0.0.1")
    base = worker.server_address[1] - 1  # slot 1's port is the worker's; slot 0's refuses
    settings = Settings.from_env(
        {
            "GYMSERVE_PEER_NODE_PATTERN": "replica-b",
            "GYMSERVE_PORT": str(shared.server_address[1]),
            "GYMSERVE_WORKER_PORT_BASE": str(base),
            "GYMSERVE_WORKERS": "1",
        },
        node_id="replica-a",
    )
    try:
        for slot, reached in [(1, worker), (0, shared), (None, shared)]:
            answer = peers.begin_batch(settings, "replica-b", b"\x80", "application/msgpack", "x", slot=slot)
            assert answer() == (200, str(reached.server_address[1]).encode()), slot
    finally:
        for server in (shared, worker):
            peers._drop("replica-b", server.server_address[1])  # the kept connections
            server.shutdown()
            server.server_close()


def test_a_worker_port_whose_syns_are_dropped_falls_back_to_the_shared_port_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A network policy that admits another pod's shared port but not its worker ports drops the SYNs: a timeout,
    not a refusal. The batch tries the worker's port for GYMSERVE_PEER_CONNECT_TIMEOUT_SECONDS (not the read
    timeout), then sends the sub-batch to the shared port, in a namespace of the test's own."""
    import http.server
    import threading
    import time

    import netns

    connect_timeout, base, shared = 0.5, 8100, 8000
    with netns.namespace() as ns:
        b = make("replica-b")
        ids = [create(b, 2), create(b, 3)]
        reached: list[int] = []

        class Replica(http.server.BaseHTTPRequestHandler):
            """Replica B's shared port: what arrives is stepped by B's app."""

            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                reached.append(self.server.server_address[1])
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}  # B's own
                resp = b.post(peers.BATCH_PATH, data=body, headers=headers)
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers["Content-Type"])
                self.send_header("Content-Length", str(len(resp.data)))
                self.end_headers()
                self.wfile.write(resp.data)

            def log_message(self, *args: Any) -> None:
                pass

        ns.iptables("-A", "INPUT", "-p", "tcp", "--dport", f"{base}:{base + 63}", "-j", "DROP")
        server = ns.run(lambda: http.server.ThreadingHTTPServer((ns.address, shared), Replica))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setattr(peers, "address_of", lambda settings, node: ns.address)
        a = make(
            "replica-a",
            GYMSERVE_PORT=str(shared),
            GYMSERVE_WORKER_PORT_BASE=str(base),
            GYMSERVE_PEER_CONNECT_TIMEOUT_SECONDS=str(connect_timeout),
        )

        def batch() -> tuple[Any, float]:
            start = time.monotonic()
            try:
                return a.post("/v2/batch/step", json={"items": [{"id": i, "action": 1} for i in ids]}), start
            finally:
                for port in range(base, base + 64):
                    peers._drop("replica-b", port)
                peers._drop("replica-b", shared)

        try:
            resp, start = ns.run(batch)
            took = time.monotonic() - start
        finally:
            server.shutdown()
            server.server_close()
    assert resp.status_code == 200, resp.json
    assert [r.get("error") for r in resp.json["results"]] == [None, None], resp.json
    assert reached == [shared]  # one sub-batch, at the shared port
    assert connect_timeout <= took < connect_timeout + 2.0, took  # the worker's port was tried, for that long
