"""The farm's own operations as a client sees them, in front of a real server: a port that refuses for a while, and
an env that answers `503 unavailable` "moving" (issue 22), played on the client's route through a TcpProxy.

Importable as `outage` from the tests of this folder (pytest puts a test file's folder on sys.path).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from servers import free_port
from tcp_proxy import FORWARD, LOSE, TcpProxy

MOVING_BODY = (
    b'{"error": {"code": "unavailable", "message": "the env is moving to another process; retry",'
    b' "details": {"reason": "moving"}, "fault": "infrastructure", "retryable": true}}'
)
MOVING = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Content-Length: %d\r\n\r\n" % len(MOVING_BODY) + MOVING_BODY
)


class Door:
    """A port below 32768 that relays bytes to `upstream_url` and can be shut: while shut, connections to it are
    refused, and the ones it was relaying are closed (a restart of the router or the server, seen from outside)."""

    def __init__(self, upstream_url: str) -> None:
        host, _, port = upstream_url.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._relayed: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(): it stops listening now, not at close
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._relayed:
                _hang_up(sock)
            self._relayed.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._relayed |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _hang_up(source)
        _hang_up(sink)


def _hang_up(sock: socket.socket) -> None:
    """Close `sock` for its peer too: close() alone leaves it open while another thread still reads it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Outage:
    """At the `at`-th step: the step runs on the server and its answer is lost with every connection, the door
    refuses connections for `refused` seconds, then the next `moving` steps are answered 503 unavailable "moving"
    (Retry-After: 1), and then the server answers again. `client.url` is where a client goes."""

    def __init__(self, server_url: str, at: int, refused: float = 1.0, moving: int = 2) -> None:
        self.at, self.refused, self.moving_left = at, refused, moving
        self.proxy = TcpProxy(server_url, self._decide)
        self.door = Door(self.proxy.url)
        self.url = self.door.url
        self.steps = 0
        self.moving_answers = 0
        self._reopened = threading.Event()

    def _decide(self, request: bytes) -> str | bytes:
        if b"/step" not in request.split(b"\r\n", 1)[0]:
            return FORWARD
        self.steps += 1
        if self.steps == self.at:
            self.door.shut()
            threading.Thread(target=self._reopen, daemon=True).start()
            return LOSE
        if self._reopened.is_set() and self.moving_left > 0:
            self.moving_left -= 1
            self.moving_answers += 1
            return MOVING
        return FORWARD

    def _reopen(self) -> None:
        time.sleep(self.refused)
        self.door.open()
        self._reopened.set()

    def close(self) -> None:
        self.door.shut()
        self.proxy.close()
