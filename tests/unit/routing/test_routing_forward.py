"""Forwarding between workers: the wire frames, and a real Forwarder talking to a real PeerServer on Unix sockets."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gymserve.errors import InstanceLost, OwnerTimeout
from gymserve.routing.forward import FORWARDED_HEADER, Forwarder
from gymserve.routing.peer_server import PeerServer, start_peer_server
from gymserve.routing.replica import Replica, make_replica
from gymserve.routing.wire import read_message, write_message

App = Callable[[dict[str, Any], Any], Any]

# --- wire ---


def framed(meta: dict[str, Any], body: bytes) -> bytes:
    out = io.BytesIO()
    write_message(out, meta, body)
    return out.getvalue()


@pytest.mark.parametrize("body", [b"", b"x", bytes(range(256)) * 40_000], ids=["empty", "one-byte", "10MB"])
def test_a_message_round_trips_through_a_buffer(body: bytes) -> None:
    meta = {"method": "POST", "path": "/v2/envs/a/step", "headers": {"Accept": "application/msgpack"}}
    stream = io.BytesIO(framed(meta, body) + framed({"status": 200}, b"next"))
    assert read_message(stream) == (meta, body)
    assert read_message(stream) == ({"status": 200}, b"next")
    assert read_message(stream) is None  # closed between messages: the end, not an error


def test_a_large_message_round_trips_over_a_real_socket() -> None:
    """Bigger than any socket buffer, so the writer blocks until the reader drains it."""
    body = bytes(range(256)) * 16_384  # 4 MiB
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    writer = threading.Thread(target=write_message, args=(theirs, {"status": 201}, body))
    writer.start()
    with ours, theirs, ours.makefile("rb") as stream:
        assert read_message(stream) == ({"status": 201}, body)
        writer.join()
        theirs.shutdown(socket.SHUT_WR)
        assert read_message(stream) is None


@pytest.mark.parametrize(
    "cut",
    [6, 4 + 5, 4 + 14, 4 + 14 + 2, 4 + 14 + 4, 4 + 14 + 4 + 3],
    ids=["in-head", "head-cut", "after-head", "in-body-length", "body-missing", "body-cut"],
)
def test_a_connection_closed_in_the_middle_of_a_message_raises(cut: int) -> None:
    data = framed({"status": 200}, b"hello")  # 4 + 15 + 4 + 5 bytes
    with pytest.raises(ConnectionError):
        read_message(io.BytesIO(data[:cut]))


def test_a_connection_closed_inside_the_first_length_prefix_raises() -> None:
    """Two bytes of a length are not "closed between messages": the peer died while sending."""
    with pytest.raises(ConnectionError):
        read_message(io.BytesIO(framed({}, b"")[:2]))


# --- a real peer server and forwarder ---


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return make_replica(str(tmp_path / "run"), 3)


@pytest.fixture
def peers() -> Iterator[list[PeerServer]]:
    started: list[PeerServer] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def forwarder(replica: Replica) -> Iterator[Callable[..., Forwarder]]:
    """Forwarders from slot 0; their kept connections are closed at the end (the app never closes them)."""
    made: list[Forwarder] = []

    def _make(timeout: float = 5) -> Forwarder:
        made.append(Forwarder(replica, my_slot=0, timeout=timeout))
        return made[-1]

    yield _make
    for f in made:
        for slot in list(kept(f)):
            f._drop(slot)


def kept(f: Forwarder) -> dict[int, Any]:
    """This thread's kept connections of `f`, by slot."""
    pool: dict[int, Any] = f._local.__dict__.get("pool", {})
    return pool


@pytest.fixture
def serve(replica: Replica, peers: list[PeerServer]) -> Callable[[int, App], PeerServer]:
    def _serve(slot: int, app: App) -> PeerServer:
        server = start_peer_server(app, replica.socket_path(slot))
        peers.append(server)
        return server

    return _serve


class EchoApp:
    """A tiny WSGI app that records what it was asked and answers with headers worth filtering."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"] or 0))
        self.calls.append({**environ, "body": body})
        start_response(
            "201 Created",
            [
                ("Content-Type", "application/msgpack"),
                ("Retry-After", "3"),
                ("Location", "/v2/envs/x"),
                ("Content-Encoding", "gzip"),
                ("Set-Cookie", "session=stolen"),
                ("X-Internal", "secret"),
                ("Connection", "close"),
            ],
        )
        return [self.name.encode(), b":", body]


def test_an_answer_comes_back_with_its_end_to_end_headers(
    serve: Callable[[int, App], PeerServer], forwarder: Callable[..., Forwarder]
) -> None:
    app = EchoApp()
    serve(1, app)
    f = forwarder()
    headers = {"Content-Type": "application/json", "Accept": "application/msgpack"}
    answer = f.send(1, "POST", "/v2/envs/a.1-0.x/step", "q=1", headers, b'{"action": 1}', "a.1-0.x", tenant="anonymous")
    assert answer.status == 201
    assert answer.body == b'echo:{"action": 1}'
    assert answer.headers == {
        "Content-Type": "application/msgpack",
        "Retry-After": "3",
        "Location": "/v2/envs/x",
        "Content-Encoding": "gzip",
        # Every end-to-end header is the owner's answer, whatever its name (no allowlist to forget one on);
        # only Connection stays on the hop between the workers.
        "Set-Cookie": "session=stolen",
        "X-Internal": "secret",
    }
    (environ,) = app.calls
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]) == (
        "POST",
        "/v2/envs/a.1-0.x/step",
        "q=1",
    )
    assert environ["CONTENT_TYPE"] == "application/json" and environ["HTTP_ACCEPT"] == "application/msgpack"
    # The owner must know the request already took its one hop, and from whom.
    assert environ["HTTP_" + FORWARDED_HEADER.upper().replace("-", "_")] == "0"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ({"Cache-Control": "no-store", "Vary": "Accept, Accept-Encoding"}, ["Cache-Control", "Vary"]),
        (
            {
                "Connection": "keep-alive, X-Hop",
                "Keep-Alive": "timeout=5",
                "Proxy-Connection": "keep-alive",
                "TE": "trailers",
                "Transfer-Encoding": "chunked",
                "Upgrade": "h2c",
                "Trailer": "X-Checksum",
                "Content-Length": "999",
                "X-Hop": "named by Connection",
                "Cache-Control": "no-store",
            },
            ["Cache-Control"],
        ),
        ({"connection": "close", "content-length": "1", "cache-control": "no-store"}, ["cache-control"]),
    ],
    ids=["end-to-end", "hop-by-hop", "lower-case"],
)
def test_the_hop_by_hop_headers_stay_on_the_hop_and_every_other_travels(
    sent: dict[str, str],
    kept: list[str],
    serve: Callable[[int, App], PeerServer],
    forwarder: Callable[..., Forwarder],
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *sent.items()])
        return [b"blob"]

    serve(1, app)
    answer = forwarder().send(1, "GET", "/v2/envs/a.1-0.x/snapshot", "", {}, b"", "a.1-0.x", tenant="anonymous")
    assert answer.headers == {"Content-Type": "application/octet-stream", **{name: sent[name] for name in kept}}


def test_one_connection_per_thread_carries_many_requests(
    serve: Callable[[int, App], PeerServer], forwarder: Callable[..., Forwarder]
) -> None:
    app = EchoApp()
    serve(2, app)
    f = forwarder()
    for i in range(5):
        assert f.send(2, "GET", "/v2/envs", "", {}, str(i).encode(), tenant="anonymous").body == f"echo:{i}".encode()
    assert [call["body"] for call in app.calls] == [b"0", b"1", b"2", b"3", b"4"]
    assert len(kept(f)) == 1  # five requests over one kept connection


def test_a_missing_socket_is_a_lost_instance(forwarder: Callable[..., Forwarder]) -> None:
    f = forwarder()
    with pytest.raises(InstanceLost) as lost:
        f.send(1, "POST", "/v2/envs/a.1-0.x/step", "", {}, b"", "a.1-0.x", tenant="anonymous")
    assert lost.value.status == 410 and lost.value.details == {"instance_id": "a.1-0.x"}


def test_a_socket_nobody_listens_on_is_a_lost_instance(replica: Replica, forwarder: Callable[..., Forwarder]) -> None:
    """A worker that died without removing its socket file: connecting is refused."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(replica.socket_path(1))
    dead.close()
    with pytest.raises(InstanceLost):
        forwarder().send(1, "GET", "/v2/envs", "", {}, b"", "a.1-0.x", tenant="anonymous")


def test_a_peer_that_never_answers_times_out_within_the_timeout(
    replica: Replica, forwarder: Callable[..., Forwarder]
) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(replica.socket_path(1))
    mute.listen(4)  # connections are queued, never accepted nor answered
    f = forwarder(timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(OwnerTimeout) as slow:
            f.send(1, "POST", "/v2/envs/a.1-0.x/step", "", {}, b"{}", "a.1-0.x", tenant="anonymous")
    finally:
        mute.close()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2
    assert slow.value.status == 504 and "a.1-0.x" in slow.value.message
    assert "GYMSERVE_FORWARD_TIMEOUT_SECONDS" in slow.value.message
    assert not kept(f)  # a connection that timed out is never reused


class SlowToAccept(PeerServer):
    """A peer that listens with a backlog of one and accepts nothing until it is served."""

    request_queue_size = 0


def test_a_peer_whose_backlog_is_full_is_waited_for_not_lost(
    replica: Replica, peers: list[PeerServer], forwarder: Callable[..., Forwarder]
) -> None:
    """Many threads connecting at once fill the owner's accept backlog: a Unix socket with a timeout then says
    EAGAIN at once. The owner is alive, so its env is not lost: the forward waits for room (up to its timeout)."""
    app = EchoApp()
    owner = SlowToAccept(replica.socket_path(1), app)  # listening, not accepting yet
    queued = []
    for _ in range(4):  # fill the backlog
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(replica.socket_path(1))
        except BlockingIOError:
            c.close()
            break
        queued.append(c)
    try:
        with pytest.raises(OwnerTimeout):  # never any room: the forward timeout, not "lost"
            forwarder(timeout=0.2).send(1, "GET", "/v2/envs", "", {}, b"", "a.1-0.x", tenant="anonymous")
        # Room comes within the timeout (the owner starts accepting after 0.3 s): the request goes through.

        def accept_later() -> None:
            time.sleep(0.3)
            peers.append(owner)  # served from now on, shut down at the end
            threading.Thread(target=owner.serve_forever, daemon=True).start()

        later = threading.Thread(target=accept_later)
        later.start()
        started = time.monotonic()
        answer = forwarder(timeout=5).send(1, "POST", "/v2/envs/a.1-0.x/step", "", {}, b"{}", "a.1-0.x", tenant="x")
        later.join()
        assert answer.status == 201 and len(app.calls) == 1
        assert time.monotonic() - started >= 0.25, "it went through while the backlog was full?"
    finally:
        for c in queued:
            c.close()
        if owner not in peers:
            owner.server_close()


class DyingPeer(PeerServer):
    """A peer whose worker can die: every connection it accepted is closed, as the kernel does for a dead process."""

    def __init__(self, path: str, app: Any) -> None:
        super().__init__(path, app)
        self.accepted: list[socket.socket] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted.append(request)
        super().process_request(request, client_address)

    def die(self) -> None:
        self.shutdown()
        self.server_close()
        for conn in self.accepted:
            conn.shutdown(socket.SHUT_RDWR)


def start_dying_peer(app: App, path: str) -> DyingPeer:
    server = DyingPeer(path, app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_kept_connection_to_a_replaced_peer_is_retried_once_on_the_new_one(
    replica: Replica, serve: Callable[[int, App], PeerServer], forwarder: Callable[..., Forwarder]
) -> None:
    old_app, new_app = EchoApp("old"), EchoApp("new")
    old = start_dying_peer(old_app, replica.socket_path(1))
    f = forwarder()
    assert f.send(1, "GET", "/v2/envs", "", {}, b"1", tenant="anonymous").body == b"old:1"
    old.die()
    serve(1, new_app)  # gunicorn's replacement worker takes the slot's socket path
    assert f.send(1, "GET", "/v2/envs", "", {}, b"2", tenant="anonymous").body == b"new:2"
    assert [c["body"] for c in old_app.calls] == [b"1"] and [c["body"] for c in new_app.calls] == [b"2"]


def test_a_kept_connection_to_a_peer_that_died_for_good_is_a_lost_instance(
    replica: Replica, forwarder: Callable[..., Forwarder]
) -> None:
    old = start_dying_peer(EchoApp(), replica.socket_path(1))
    f = forwarder()
    f.send(1, "GET", "/v2/envs", "", {}, b"", tenant="anonymous")
    old.die()
    with pytest.raises(InstanceLost):
        f.send(1, "GET", "/v2/envs", "", {}, b"", "a.1-0.x", tenant="anonymous")


def test_a_fresh_connection_that_breaks_is_not_retried(replica: Replica, forwarder: Callable[..., Forwarder]) -> None:
    """Only a kept connection may be stale; a new one that breaks means the owner is going away."""
    calls: list[bytes] = []
    hangup = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hangup.bind(replica.socket_path(1))
    hangup.listen(4)

    def accept_and_hang_up() -> None:
        while True:
            try:
                conn, _ = hangup.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as stream:
                message = read_message(stream)
                calls.append(message[1] if message else b"")

    threading.Thread(target=accept_and_hang_up, daemon=True).start()
    try:
        with pytest.raises(InstanceLost):
            forwarder().send(1, "GET", "/v2/envs", "", {}, b"once", "a.1-0.x", tenant="anonymous")
    finally:
        hangup.close()
    assert calls == [b"once"]


def broken_app(environ: dict[str, Any], start_response: Any) -> Any:
    raise RuntimeError("a bug in the app")


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v2/envs/a.1-0.x/step", {"error"}), ("/v1/envs/a.1-0.x/step/", {"message", "code", "fault", "retryable"})],
    ids=["v2", "v1"],
)
def test_an_app_that_raises_gives_a_500_in_the_apis_shape(
    serve: Callable[[int, App], PeerServer], forwarder: Callable[..., Forwarder], path: str, shape: set[str]
) -> None:
    serve(1, broken_app)
    f = forwarder()
    for _ in range(2):  # and the sibling's connection survives it
        answer = f.send(1, "POST", path, "", {}, b"{}", "a.1-0.x", tenant="anonymous")
        body = orjson.loads(answer.body)
        assert answer.status == 500 and answer.headers["Content-Type"] == "application/json"
        assert set(body) == shape
        code = body["error"]["code"] if "error" in body else body["code"]
        assert code == "internal" and "a bug" not in answer.body.decode()
