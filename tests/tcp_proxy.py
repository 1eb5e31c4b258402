"""A TCP proxy for HTTP/1.1 tests: counts the bytes of each exchange, and can lose an answer or answer busy on purpose.

Importable as `tcp_proxy` from any test module and from tests/perf (they put tests/ on sys.path).
Each client connection gets its own upstream connection, so fresh client connections land on any
gunicorn worker. Requests on a connection are handled one at a time (no pipelining), which is
how urllib3 and requests use a connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

FORWARD = "forward"
LOSE = "lose"  # forward the request, let the server answer, then drop the connection without relaying it


def _read_message(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One HTTP message (head + Content-Length body) from `sock`; None when the peer closed first."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head_end = buffer.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[: head_end + length])
    del buffer[: head_end + length]
    return message


class Exchange(NamedTuple):
    """A request relayed to the server and its answer relayed back, with their sizes on the wire (heads included)."""

    request_line: bytes
    request_bytes: int
    answer_bytes: int
    answer_body_bytes: int


NO_UPGRADE = b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n"


def busy_answer(status: int, retry_after: int = 0) -> bytes:
    reason = {429: "Too Many Requests", 503: "Service Unavailable"}[status]
    body = b'{"error": {"code": "busy", "message": "the proxy says: busy", "details": {}}}'
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nRetry-After: {retry_after}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class TcpProxy:
    """`TcpProxy(server_url)`: clients talk to `proxy.url`. `decide(request_bytes)` says what to do with each
    request: FORWARD, LOSE, or bytes to answer with instead of forwarding (see `busy_answer`). A WebSocket upgrade
    is answered 501 and not recorded: the proxy relays HTTP messages one at a time, never frames."""

    def __init__(self, upstream_url: str, decide: Callable[[bytes], str | bytes] | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.decide = decide or (lambda _request: FORWARD)
        self.requests: list[bytes] = []  # every request the proxy received, whatever became of it
        self.exchanges: list[Exchange] = []  # the requests whose answers reached the client
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        from_client, from_server = bytearray(), bytearray()
        try:
            while (request := _read_message(client, from_client)) is not None:
                if b"\r\nupgrade: websocket" in request.lower():  # HTTP only, as a proxy that knows no WebSocket
                    client.sendall(NO_UPGRADE)  # a client's stream="auto" steps over HTTP then
                    continue
                with self._lock:
                    self.requests.append(request)
                action = self.decide(request)
                if isinstance(action, bytes):
                    client.sendall(action)
                    continue
                upstream.sendall(request)
                answer = _read_message(upstream, from_server)
                if answer is None or action == LOSE:
                    return  # the server ran the request; its answer is lost with the connection
                client.sendall(answer)
                with self._lock:
                    body = len(answer) - answer.index(b"\r\n\r\n") - 4
                    self.exchanges.append(Exchange(request.split(b"\r\n", 1)[0], len(request), len(answer), body))
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
