"""The gunicorn internals that gymserve's worker (gunicorn_worker.py) and its hooks (gunicorn_conf.py) rely on.

gunicorn does not promise these: pyproject pins it to the versions tested, and every test here names one
internal, so that an upgrade that changes one fails here, loudly, rather than in production (a slow client
holding a thread, a lost pipelined request, two writes per answer). Each test drives the real gunicorn code
in-process, over a socketpair, with the real GymserveWorker where it takes part.
"""

from __future__ import annotations

import functools
import os
import selectors
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.config import KNOWN_SETTINGS, Config
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.workers import gthread

from gymserve.gunicorn_worker import GymserveWorker, OneWriteResponse
from gymserve.settings import Settings

REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    answer = b"got " + body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


@pytest.fixture
def cfg() -> Config:
    config = Config()
    config.set("threads", 4)
    return config


@pytest.fixture
def worker(cfg: Config) -> Iterator[GymserveWorker]:
    made = GymserveWorker(1, os.getppid(), [], None, 30, cfg, Logger(cfg))
    made.configure(Settings(head_timeout_seconds=5.0, keepalive_linger_seconds=0.2))
    made.wsgi = app  # what base.Worker.load_wsgi sets
    yield made
    made.tmp.close()  # the heartbeat file base.Worker opens
    if made.poller is not None:
        made.poller.close()
        made.method_queue.close()


@pytest.fixture
def pair(cfg: Config) -> Iterator[tuple[socket.socket, Any]]:
    """The client's end, and gthread's connection (TConn) on the server's end."""
    client, server = socket.socketpair()
    client.settimeout(5)
    yield client, gthread.TConn(cfg, server, ("127.0.0.1", 50000), ("127.0.0.1", 8000))
    client.close()
    server.close()


def answers(client: socket.socket, count: int) -> list[bytes]:
    """The next `count` answers of the app above (each ends with its 'got ...' body)."""
    data = b""
    while data.count(b"got hello") < count:
        chunk = client.recv(65536)
        assert chunk, data
        data += chunk
    return [b"HTTP/1.1" + part for part in data.split(b"HTTP/1.1")[1:]]


# --- gthread's hand-back to the poller -------------------------------------------------------------------------


def test_defer_is_gthreads_sentinel_for_a_connection_to_wait_in_the_poller(worker: GymserveWorker, pair: Any) -> None:
    client, conn = pair
    client.sendall(REQUEST[:20])
    assert worker.handle(conn) is gthread._DEFER
    client.sendall(REQUEST[20:])
    assert worker.handle(conn) is True
    assert answers(client, 1)[0].endswith(b"got hello")


def test_finish_request_puts_a_deferred_connection_in_the_poller_until_it_is_readable(
    worker: GymserveWorker, pair: Any
) -> None:
    _, conn = pair
    submitted = _poller_of(worker)
    done: Future[Any] = Future()
    done.set_result(gthread._DEFER)
    worker.finish_request(conn, done)
    assert conn in worker.pending_conns and not submitted
    callback = worker.poller.get_key(conn.sock).data
    assert isinstance(callback, functools.partial) and callback.func == worker.on_pending_socket_readable
    callback(conn.sock)  # readable: back to a thread, without waiting for data there again
    assert conn.data_ready and submitted == [conn]


def test_finish_request_gives_a_kept_alive_connection_with_bytes_read_ahead_straight_back_to_a_thread(
    worker: GymserveWorker, pair: Any
) -> None:
    _, conn = pair
    submitted = _poller_of(worker)
    conn.init()
    conn.parser.unreader.unread(b"GET / HTTP/1.1\r\n")
    kept: Future[Any] = Future()
    kept.set_result(True)
    worker.finish_request(conn, kept)
    assert submitted == [conn]
    conn.parser.unreader.take_buffered()
    worker.finish_request(conn, kept)  # nothing read ahead: it waits in the poller as a kept-alive connection
    assert conn in worker.keepalived_conns and submitted == [conn]


def _poller_of(worker: GymserveWorker) -> list[Any]:
    """The worker's poller and method queue, as gthread's init_process makes them; its thread pool replaced by a
    list of the connections submitted to it."""
    worker.poller = selectors.DefaultSelector()
    worker.method_queue.init()
    submitted: list[Any] = []

    def submit(fn: Any, conn: Any) -> Future[Any]:
        assert fn == worker.handle
        submitted.append(conn)
        return Future()

    worker.tpool = SimpleNamespace(submit=submit)
    return submitted


def test_the_poller_accepts_on_every_socket_of_self_sockets(worker: GymserveWorker) -> None:
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        worker.sockets = listeners  # init_process adds the worker's own port here before gthread's loop starts
        worker.poller = selectors.DefaultSelector()
        worker.set_accept_enabled(True)
        for listener in listeners:
            assert worker.poller.get_key(listener).data == worker.accept
    finally:
        for listener in listeners:
            listener.close()


# --- the connection and its parser -----------------------------------------------------------------------------


def test_tconn_init_builds_the_parser_and_reads_nothing(pair: Any) -> None:
    client, conn = pair
    client.sendall(REQUEST)
    assert not conn.initialized and conn.parser is None
    conn.init()
    assert conn.initialized and conn.parser is not None
    assert conn.sock.recv(len(REQUEST), socket.MSG_PEEK) == REQUEST  # all still on the socket
    conn.gymserve_deadline = 1.0  # the worker keeps its own state on the connection


def test_the_unreader_holds_read_ahead_bytes_in_buf_and_gives_them_back(pair: Any) -> None:
    _, conn = pair
    conn.init()
    unreader = conn.parser.unreader
    assert unreader.buf.getvalue() == b""
    unreader.unread(b"world")
    unreader.unread(b"hello ")  # unread puts bytes in front of those already held
    assert unreader.buf.getvalue() == b"hello world"
    assert unreader.take_buffered() == b"hello world"
    assert unreader.buf.getvalue() == b""


def test_the_parser_reads_a_request_from_the_unreader_before_the_socket(pair: Any) -> None:
    _, conn = pair
    conn.init()
    conn.sock.settimeout(0.5)  # nothing is on the socket: a read from it would fail the test
    conn.parser.unreader.unread(REQUEST)
    req = next(conn.parser)
    assert (req.method, req.path, req.body.read()) == ("POST", "/x", b"hello")


def test_handle_serves_a_buffered_request_on_an_initialized_connection_without_waiting_for_data(
    worker: GymserveWorker, cfg: Config, pair: Any
) -> None:
    client, conn = pair
    conn.init()
    conn.parser.unreader.unread(REQUEST)
    assert gthread.ThreadWorker.handle(worker, conn) is True  # True: keep alive
    assert answers(client, 1)[0].endswith(b"got hello")
    conn.parser.unreader.unread(REQUEST.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
    assert gthread.ThreadWorker.handle(worker, conn) is False  # False: close


def test_pipelined_requests_are_answered_by_the_thread_that_read_them(worker: GymserveWorker, pair: Any) -> None:
    client, conn = pair
    client.sendall(REQUEST + REQUEST)  # the second is read ahead into the unreader with the first
    assert worker.handle(conn) is True
    assert len(answers(client, 2)) == 2


# --- the response ----------------------------------------------------------------------------------------------


def test_wsgi_create_builds_the_module_level_response_class_at_each_request(
    worker: GymserveWorker, pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []

    class Recorded(OneWriteResponse):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(wsgi, "Response", Recorded)  # as GymserveWorker.init_process sets OneWriteResponse
    client, conn = pair
    client.sendall(REQUEST)
    assert worker.handle(conn) is True
    answers(client, 1)
    assert len(built) == 1


def test_the_response_has_the_state_one_write_reads() -> None:
    req: Any = SimpleNamespace(version=(1, 1), method="POST", should_close=lambda: False)
    resp = wsgi.Response(req, None, SimpleNamespace(is_ssl=False))
    assert (resp.headers_sent, resp.chunked, resp._omits_body, resp.response_length, resp.sent) == (
        False,
        False,
        False,
        None,
        0,
    )
    resp.start_response("200 OK", [("Content-Length", "5")])
    assert resp.response_length == 5 and not resp.chunked and resp.headers == [("Content-Length", "5")]
    head = resp.default_headers()
    assert head[0] == "HTTP/1.1 200 OK\r\n" and all(isinstance(line, str) and line.endswith("\r\n") for line in head)
    assert not any(line.lower().startswith("content-length") for line in head)  # OneWriteResponse adds `headers`


def test_util_write_is_one_sendall() -> None:
    writes: list[bytes] = []
    util.write(SimpleNamespace(sendall=writes.append), b"head and body")
    assert writes == [b"head and body"]


# --- what the hooks use ----------------------------------------------------------------------------------------


def test_the_hooks_names_and_settings_are_gunicorns() -> None:
    names = {setting.name for setting in KNOWN_SETTINGS}
    for name in ("control_socket_disable", "worker_tmp_dir", "worker_class", "threads", "keepalive", "backlog"):
        assert name in names, name
    for hook in ("on_starting", "pre_fork", "post_fork", "post_worker_init", "worker_exit", "child_exit", "on_exit"):
        assert hook in names, hook
    assert isinstance(Arbiter.WORKERS, dict)  # pre_fork reads server.WORKERS: pid -> worker


def test_handle_exit_stops_the_loop_gracefully(worker: GymserveWorker) -> None:
    worker.method_queue.init()
    worker.handle_exit(15, None)  # the drain's end in gunicorn_conf
    assert not worker.alive
    worker.method_queue.close()


# --- what the worker's bounds and closes rely on (issue 25) ------------------------------------------------------


def test_a_closed_connection_drains_in_the_poller_and_never_blocks_finish_request(
    worker: GymserveWorker, pair: Any
) -> None:
    """gthread's finish_request closes a False connection gracefully in its loop, lingering up to 2 s while the
    client keeps its end open; gymserve's half-closes it and lets the poller drain it."""
    client, conn = pair
    _poller_of(worker)
    worker.nr_conns = 1
    done: Future[Any] = Future()
    done.set_result(False)
    started = time.monotonic()
    worker.finish_request(conn, done)
    assert time.monotonic() - started < 0.1 and worker.nr_conns == 0
    assert client.recv(10) == b""  # the half-close: the client sees the end of the answer at once
    assert conn.sock in worker._closing
    client.close()  # the client closes its end: the drain ends at the next event
    worker.wait_for_and_dispatch_events(timeout=1.0)
    assert conn.sock not in worker._closing


def test_accept_makes_room_by_closing_the_connection_idle_longest(worker: GymserveWorker, cfg: Config) -> None:
    submitted = _poller_of(worker)
    worker.max_idle = 2
    ends = [socket.socketpair() for _ in range(3)]
    idle = [
        gthread.TConn(cfg, server, ("127.0.0.1", 50000 + i), ("127.0.0.1", 8000)) for i, (_, server) in enumerate(ends)
    ]
    for age, conn in zip((3.0, 2.0), idle[:2], strict=True):
        conn.gymserve_idle_since = time.monotonic() - age
    worker.keepalived_conns.append(idle[0])  # the older
    worker.pending_conns.append(idle[1])
    worker.nr_conns = 2
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with socket.create_connection(listener.getsockname()):
        worker.accept(listener)
    assert list(worker.keepalived_conns) == [] and list(worker.pending_conns) == [idle[1]]
    assert worker.nr_conns == 2  # one closed, one accepted
    assert len(submitted) == 1
    submitted[0].sock.close()
    listener.close()
    for client, server in ends:
        client.close()
        server.close()


def test_murder_pending_closes_a_request_late_from_its_first_byte(worker: GymserveWorker, pair: Any) -> None:
    _, conn = pair
    _poller_of(worker)
    conn.timeout = time.monotonic() + 75  # gthread's own deadline for a pending connection: the keep-alive
    conn.gymserve_deadline = time.monotonic() - 0.01  # gymserve's: the head timeout from the first byte
    worker.pending_conns.append(conn)
    worker.nr_conns = 1
    worker.murder_pending()
    assert not worker.pending_conns and worker.nr_conns == 0
