"""The step stream on a real two-worker gymserve, driven by a plain, maintained WebSocket library (websockets' sync
client; wsproto where a test must send what no well-behaved client sends): each op, pipelining and order, errors,
refusal before the 101, every bound, the batch stream, and a stream across a restart (1012, then resumed)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, CloseConnection, Request

from servers import Server

pytestmark = pytest.mark.integration


def ws_url(srv: Server, path: str) -> str:
    return srv.url.replace("http://", "ws://") + path


def create(srv: Server, **body: Any) -> str:
    resp = requests.post(srv.url + "/v2/envs", json={"env_id": "CartPole-v1", **body}, timeout=30)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["instance_id"])


def ask(ws: ClientConnection, message: dict[str, Any], binary: bool = True) -> dict[str, Any]:
    ws.send(msgpack.packb(message) if binary else json.dumps(message))
    answer = ws.recv()
    assert isinstance(answer, bytes) is binary  # the answer comes in the kind of frame of its request
    return msgpack.unpackb(answer) if binary else json.loads(answer)


def observation(answer: dict[str, Any]) -> np.ndarray:
    nd = answer["observation"]["$nd"]
    data = nd["data"]
    return np.frombuffer(data, nd["dtype"]) if isinstance(data, bytes) else np.asarray(data, nd["dtype"])


def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    rcvd = closed.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


def test_each_op_answers_its_routes_body_in_the_kind_of_frame_of_its_request(make_server: Any) -> None:
    srv = make_server()
    iid = create(srv, kwargs={"render_mode": "rgb_array"})
    local = gym.make("CartPole-v1")
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        reset = ask(ws, {"op": "reset", "seed": 3, "seq": 1}, binary=False)  # JSON, in a text frame
        assert np.array_equal(observation(reset), local.reset(seed=3)[0]) and reset["seq"] == 1
        for seq, action in enumerate([0, 1, 1, 0], start=2):
            step = ask(ws, {"op": "step", "action": action, "seq": seq})  # msgpack, in a binary frame
            assert np.array_equal(observation(step), local.step(action)[0]) and step["seq"] == seq
        frame = ask(ws, {"op": "render"})
        assert frame["frame"]["$nd"]["shape"] == [400, 600, 3]  # the value form, never PNG
        assert ask(ws, {"op": "close"}, binary=False) == {"closed": True}
        assert closed_with(ws) == (1000, "closed")
    assert requests.get(f"{srv.url}/v2/envs/{iid}", timeout=10).status_code == 404


def test_pipelined_requests_are_answered_in_order_and_a_resend_is_answered_again(make_server: Any) -> None:
    srv = make_server()
    iid = create(srv)
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        ask(ws, {"op": "reset", "seed": 1, "seq": 1})
        for seq in range(2, 22):  # 20 requests before reading any answer
            ws.send(msgpack.packb({"op": "step", "action": seq % 2, "seq": seq}))
        answers = [msgpack.unpackb(ws.recv(timeout=10)) for _ in range(20)]
        assert [a.get("seq") for a in answers] == list(range(2, 22)), answers[-1]
        assert ask(ws, {"op": "step", "action": 1, "seq": 21}) == answers[-1]  # a resend: the kept answer
        conflict = ask(ws, {"op": "step", "action": 0, "seq": 5})
        assert conflict["error"]["code"] == "sequence_conflict" and conflict["error"]["details"]["expected"] == 22
        assert ask(ws, {"op": "step", "action": 0, "seq": 22})["seq"] == 22  # still open, still in order


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        (b"\xc1", "bad_request", "body"),  # not msgpack
        ("{not json", "bad_request", "body"),
        (msgpack.packb([1, 2]), "bad_request", "body"),  # not a map
        (msgpack.packb({"op": "jump"}), "invalid_value", "op"),
        (msgpack.packb({"op": "step"}), "missing_parameter", "action"),  # the HTTP route's own error
        (json.dumps({"op": "step", "action": 7}), "invalid_value", "action"),
    ],
)
def test_a_bad_message_is_answered_with_its_error_and_the_stream_stays_open(
    make_server_once: Any, frame: bytes | str, code: str, field: str
) -> None:
    srv = make_server_once
    iid = create(srv)
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        ask(ws, {"op": "reset"})
        ws.send(frame)
        answer = ws.recv(timeout=10)
        error = (msgpack.unpackb(answer) if isinstance(answer, bytes) else json.loads(answer))["error"]
        assert error["code"] == code and error["details"].get("field") == field, error
        assert "observation" in ask(ws, {"op": "step", "action": 0})


@pytest.fixture(scope="module")
def make_server_once(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from servers import start_server

    srv = start_server(tmp_path_factory.mktemp("stream"))
    yield srv
    srv.stop()


def test_an_unknown_or_lost_id_is_refused_before_the_101_with_the_routes_error(make_server_once: Any) -> None:
    srv = make_server_once
    for iid, status in ((f"itest.0-1.{'a' * 32}", 410), ("not-an-id", 404)):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(srv, f"/v2/envs/{iid}/stream"))
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] in ("instance_lost", "unknown_instance")
    iid = create(srv)
    plain = requests.get(f"{srv.url}/v2/envs/{iid}/stream", timeout=10)  # no upgrade: what the route is
    assert plain.status_code == 200 and plain.json() == {"instance_id": iid, "upgrade": "websocket"}
    bad_key = requests.get(
        f"{srv.url}/v2/envs/{iid}/stream",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "short"},
        timeout=10,
    )  # fmt: skip
    assert bad_key.status_code == 400 and bad_key.json()["error"]["details"]["field"] == "headers", bad_key.text


def test_the_batch_stream_steps_envs_of_both_workers(make_server_once: Any) -> None:
    srv = make_server_once
    ids = [create(srv) for _ in range(4)]
    for iid in ids:
        requests.post(f"{srv.url}/v2/envs/{iid}/reset", json={"seed": 0}, timeout=10)
    with connect(ws_url(srv, "/v2/stream")) as ws:
        answer = ask(ws, {"op": "batch_step", "items": [{"id": iid, "action": 0} for iid in ids]})
        assert len(answer["results"]) == 4 and all("observation" in r for r in answer["results"]), answer
        wrong = ask(ws, {"op": "step", "action": 0})
        assert wrong["error"]["code"] == "invalid_value" and wrong["error"]["details"]["field"] == "op"


def test_a_streams_tenancy_is_its_routes_the_key_at_the_upgrade_and_at_every_message(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from servers import start_server
    from tenant_files import auth, write

    tmp = tmp_path_factory.mktemp("stream-tenants")
    srv = start_server(tmp, tenants_file=write(tmp / "tenants.toml"))
    try:
        made = requests.post(srv.url + "/v2/envs", json={"env_id": "CartPole-v1"}, headers=auth("team-a"), timeout=30)
        iid = made.json()["instance_id"]
        never = iid[:-32] + "0" * 32  # this worker's shape, never minted
        url = ws_url(srv, f"/v2/envs/{iid}/stream")
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401), (auth("team-b"), 404)):
            with pytest.raises(InvalidStatus) as refused:  # refused before the 101, as the HTTP route refuses
                connect(url, additional_headers=headers)
            route = requests.post(f"{srv.url}/v2/envs/{iid}/step", json={"action": 0}, headers=headers, timeout=10)
            assert refused.value.response.status_code == route.status_code == status
            assert json.loads(refused.value.response.body)["error"]["code"] == route.json()["error"]["code"]
        with pytest.raises(InvalidStatus) as unknown:  # another tenant's env reads as one never made
            connect(ws_url(srv, f"/v2/envs/{never}/stream"), additional_headers=auth("team-b"))
        assert unknown.value.response.status_code == 404
        with connect(url, additional_headers=auth("team-a")) as ws:
            assert "observation" in ask(ws, {"op": "reset", "seed": 1})
            assert "observation" in ask(ws, {"op": "step", "action": 0})
        with connect(ws_url(srv, "/v2/stream"), additional_headers=auth("team-b")) as ws:
            [item] = ask(ws, {"op": "batch_step", "items": [{"id": iid, "action": 0}]})["results"]
            assert item["error"]["code"] == "unknown_instance"  # team-b's batch cannot step team-a's env
        steps = requests.get(f"{srv.url}/v2/envs/{iid}", headers=auth("team-a"), timeout=10).json()["steps"]
        assert steps == 1  # only its own tenant's step ran
    finally:
        srv.stop()


def raw_stream(srv: Server, iid: str) -> tuple[socket.socket, WSConnection]:
    """A stream by hand (wsproto, client side): for frames that no well-behaved client library sends."""
    sock = socket.create_connection(("127.0.0.1", int(srv.url.rsplit(":", 1)[1])), timeout=10)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target=f"/v2/envs/{iid}/stream")))
    ws.receive_data(sock.recv(4096))
    list(ws.events())  # the 101
    return sock, ws


def close_code_of(sock: socket.socket, ws: WSConnection, within: float) -> int | None:
    sock.settimeout(within)
    while True:
        data = sock.recv(65536)
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                return event.code
        if not data:
            return None


def test_every_bound_closes_with_its_code(make_server: Any) -> None:
    srv = make_server(max_body_bytes=4096, stream_idle_seconds=1, head_timeout_seconds=2, stream_pings_per_second=5)
    iid = create(srv)
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream"), max_size=None) as ws:
        ws.send(msgpack.packb({"op": "step", "action": 0, "pad": "x" * 5000}))
        assert closed_with(ws)[0] == 1009  # a message over GYMSERVE_MAX_BODY_BYTES
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        started = time.monotonic()
        assert closed_with(ws) == (1001, "idle") and time.monotonic() - started < 3.5  # idle past 1 s
    sock, ws_ = raw_stream(srv, iid)
    sock.sendall(ws_.send(BytesMessage(data=b"\x81", message_finished=False)))  # a message never finished
    assert close_code_of(sock, ws_, within=5) == 1008
    sock.close()
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        with contextlib.suppress(ConnectionClosed):  # the stream loop answers each ping as it comes: the close may
            for _ in range(20):  # come before the last ping is sent
                ws.ping()
        assert closed_with(ws)[0] == 1008  # more pings a second than GYMSERVE_STREAM_PINGS_PER_SECOND
    assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200


def test_a_drain_closes_the_stream_with_1012_and_the_client_resumes_on_the_restarted_server(make_server: Any) -> None:
    srv = make_server(workers=1, drain_seconds=2)
    iid = create(srv)
    local = gym.make("CartPole-v1")
    local.reset(seed=5)
    with connect(ws_url(srv, f"/v2/envs/{iid}/stream")) as ws:
        ask(ws, {"op": "reset", "seed": 5, "seq": 1})
        ask(ws, {"op": "step", "action": 1, "seq": 2})
        local.step(1)
        srv.signal(signal.SIGTERM)
        assert closed_with(ws) == (1012, "moved")  # the env was parked: reconnect and resend
    assert srv.proc.wait(timeout=30) == 0
    port = int(srv.url.rsplit(":", 1)[1])
    again = make_server(workers=1, port=port)  # the same state directory (the test's) and port
    with connect(ws_url(again, f"/v2/envs/{iid}/stream")) as resumed:
        step = ask(resumed, {"op": "step", "action": 0, "seq": 3})
        assert step["seq"] == 3 and np.array_equal(observation(step), local.step(0)[0])
