"""One keep-alive HTTP/1.1 connection to one server: the one connection helper of the client's session, the
replicas' sub-batches (routing/peers.py) and `gymserve bench`.

http.client rather than urllib3's pool: a step costs the client ~70 us less CPU (measured side by side on the same
server; docs/performance.md). This module imports nothing of the server: the client is pip-installable alone.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
import weakref
from collections.abc import Callable, Mapping


class Closed(Exception):
    """The connection helper was closed (by this thread or another) before a request could take a connection."""


class KeptConnection:
    """At most one idle keep-alive connection to one server, and a new one whenever there is none to reuse.

    `take()` gives the idle connection if the server has not closed it meanwhile (between two answers a live
    server sends nothing, so a readable idle socket is one it closed: dropped before use, as urllib3 does) and it
    has idled less than `max_idle`; else a new connection, connected with `connect_timeout` and then waiting up to
    `timeout` for each read (OSError when it cannot connect: nothing was sent). `keep(conn, resp)`, once the whole
    answer is read, keeps it for the next request unless the server closes it, this helper was closed, or one is
    kept already. A connection whose exchange failed is closed by its user: what was sent may have run, so whether
    to send it again is the user's call. `host` may be a callable, asked for an address at each new connection.
    Thread-safe; a helper dropped without `close()` closes its connection when collected.
    """

    def __init__(
        self,
        host: str | Callable[[], str],
        port: int | None,
        *,
        timeout: float,
        connect_timeout: float | None = None,
        tls: bool = False,
        max_idle: float | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.max_idle = max_idle
        self.closed = False
        # In a box of its own, so that weakref.finalize does not hold the helper itself.
        self.idle: list[http.client.HTTPConnection] = []
        self._idle_since = 0.0
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self.idle)

    def take(self) -> http.client.HTTPConnection:
        """The idle connection if it is still good, else a new, connected one."""
        with self._lock:
            if self.closed:
                raise Closed
            conn = self.idle.pop() if self.idle else None
            fresh = self.max_idle is None or time.monotonic() - self._idle_since < self.max_idle
        if conn is not None and fresh and conn.sock is not None and not select.select([conn.sock], [], [], 0)[0]:
            return conn
        if conn is not None:
            conn.close()
        return self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        host = self.host() if callable(self.host) else self.host
        kind = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        conn = kind(host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        assert conn.sock is not None
        if self.timeout != self.connect_timeout:
            conn.sock.settimeout(self.timeout)
        return conn

    def keep(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """After `resp` was read whole: `conn` kept for the next request, or closed."""
        with self._lock:
            if resp.will_close or self.closed or self.idle:
                conn.close()
            else:
                self.idle.append(conn)
                if self.max_idle is not None:
                    self._idle_since = time.monotonic()

    def exchange(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole answer on a kept or new connection. OSError or http.client.HTTPException when
        it fails (the connection is closed then); Closed after close()."""
        conn = self.take()
        resp, data = send(conn, method, path, body, headers)
        self.keep(conn, resp)
        return resp, data

    def close(self) -> None:
        """Close the idle connection; every take() from now on raises Closed."""
        with self._lock:
            self.closed = True
            _close_all(self.idle)


def send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request and its whole answer on `conn`, which is closed if that fails."""
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    except BaseException:
        conn.close()
        raise


def _close_all(connections: list[http.client.HTTPConnection]) -> None:
    while connections:
        connections.pop().close()
