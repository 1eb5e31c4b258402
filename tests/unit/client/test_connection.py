"""The one connection helper (gymserve.client.connection) of the client, the replicas' sub-batches and bench."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gymserve.client.connection import Closed, KeptConnection
from servers import free_port


class Echo(BaseHTTPRequestHandler):
    """Answers every request with the client's port (one port: one connection); `close` in the path closes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if "close" in self.path:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def ports(kept: KeptConnection, *paths: str) -> list[bytes]:
    return [kept.exchange("GET", path)[1] for path in paths]


def test_requests_share_one_kept_connection(server: ThreadingHTTPServer) -> None:
    kept = KeptConnection("127.0.0.1", server.server_address[1], timeout=5)
    first, second = ports(kept, "/a", "/b")
    assert first == second and len(kept.idle) == 1
    kept.close()
    assert kept.idle == []
    with pytest.raises(Closed):
        kept.take()


def test_an_answer_that_closes_leaves_no_connection_kept(server: ThreadingHTTPServer) -> None:
    kept = KeptConnection("127.0.0.1", server.server_address[1], timeout=5)
    first, second = ports(kept, "/close", "/a")
    assert first != second  # bench's fresh connections: Connection: close on every request


def test_an_idle_connection_the_server_closed_is_replaced_before_use(server: ThreadingHTTPServer) -> None:
    kept = KeptConnection("127.0.0.1", server.server_address[1], timeout=5)
    (first,) = ports(kept, "/a")
    (idle,) = kept.idle
    assert idle.sock is not None
    idle.sock.shutdown(2)  # the client sees EOF on it, as after the server's keep-alive timeout
    (second,) = ports(kept, "/a")
    assert first != second


def test_a_connection_idle_longer_than_max_idle_is_replaced(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gymserve.client.connection as connection

    now = [1000.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    kept = KeptConnection("127.0.0.1", server.server_address[1], timeout=5, max_idle=30)
    first, second = ports(kept, "/a", "/a")
    assert first == second
    now[0] += 31
    (third,) = ports(kept, "/a")
    assert third != second


def test_the_host_may_be_resolved_at_each_new_connection(server: ThreadingHTTPServer) -> None:
    asked: list[int] = []

    def resolve() -> str:
        asked.append(1)
        return "127.0.0.1"

    kept = KeptConnection(resolve, server.server_address[1], timeout=5)
    ports(kept, "/a", "/a", "/close", "/a")
    assert len(asked) == 2  # the first connection, and the one after the server closed it


def test_a_failed_exchange_closes_its_connection_and_keeps_none() -> None:
    kept = KeptConnection("127.0.0.1", free_port(), timeout=5)  # nobody listens
    with pytest.raises(ConnectionRefusedError):
        kept.exchange("GET", "/")
    assert kept.idle == []


def test_a_lost_answer_raises_and_the_next_request_takes_a_new_connection() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def read_then_hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=read_then_hang_up, daemon=True)
    thread.start()
    kept = KeptConnection("127.0.0.1", port, timeout=5)
    with pytest.raises(http.client.RemoteDisconnected):
        kept.exchange("GET", "/")
    thread.join(5)
    listener.close()
    assert kept.idle == []
