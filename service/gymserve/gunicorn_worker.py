"""gymserve's gunicorn worker: gthread, where a request takes a thread only once it has all arrived, and a thread
that answered a tight keep-alive loop answers that client's next request without the poller in between.

Slow clients. Stock gthread hands a connection to a thread as soon as any byte arrives, and the thread
then blocks until the request head is complete: twenty clients that send one line of a head and wait
hold every thread of a worker, and everyone else waits (measured: past 60 s). Here a thread reads only
what the socket already holds, without blocking, keeps it with the connection, and hands the connection
back to gunicorn's poller until the head and a Content-Length body (up to GYMSERVE_MAX_BODY_BYTES) are
complete; then the request runs as gunicorn would run it, reading from that buffer. A request still
incomplete after GYMSERVE_HEAD_TIMEOUT_SECONDS is closed. (gunicorn's `timeout` is for a hung worker,
not a slow client.)

Tight loops. gthread gives a keep-alive connection back to its poller after every request: a pipe write
wakes the poller, which registers the socket, waits for it and submits it to the pool again. An RL
client's next request comes a few hundred microseconds after its answer, so that round costs about as
much CPU as a step (py-spy: 29% of a loaded worker's samples). The thread that answered waits up to
GYMSERVE_KEEPALIVE_LINGER_SECONDS for the next request, but only while another thread is free, so no
other connection ever waits for a lingering one.
One write per answer. gunicorn writes an answer's head and its body with two sendall calls; an answer whose
whole body comes in one piece (every gymserve answer but a streamed one) goes out in one (OneWriteResponse),
a syscall less per request (py-spy: the two writes were 17% of a /v2 step's worker time).
A port of its own. With GYMSERVE_WORKER_PORT_BASE set, each worker also listens on base + its slot, beside the
replica's shared port: a router that reads the slot in an instance id reaches the worker that holds the env, where
the shared port hands a connection to whichever worker accepts it and (workers - 1) / workers of the steps then
take a hop over the owner's Unix socket.
See https://docs.gunicorn.org/en/stable/design.html for the worker model this keeps.

gunicorn internals used here (pyproject pins gunicorn to the versions tested; tests/unit/test_gunicorn_contract.py
fails when one of them changes): gthread's `_DEFER` (a connection handed back to the poller until it is readable),
`TConn` (`init()` builds the parser and reads nothing; `sock`, `parser`, `initialized`; attributes of our own),
the parser's unreader (`buf` peeked, `take_buffered()`, `unread()`; the parser reads a request from it first),
`ThreadWorker.handle` (True: keep alive, False: close; no wait for data on an initialized connection),
`finish_request` (`_DEFER`: pending in the poller; kept alive with bytes read ahead: straight back to the pool),
`wsgi.Response` (looked up by `wsgi.create` at each request; the attributes OneWriteResponse reads) and `util.write`,
and `self.sockets` (the listeners gthread's poller accepts on, read when its loop starts).
"""

from __future__ import annotations

import os
import re
import select
import socket
import threading
import time
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import gthread

from .settings import Settings

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*\r\n", re.IGNORECASE)
_HEAD_LIMIT = 64 * 1024  # beyond this gunicorn's own limits (request line, fields) refuse the head anyway
_RECV = 256 * 1024


def complete(data: bytes, max_body: int) -> bool:
    """Whether `data` holds a whole request head and, when it announces one within `max_body`, its whole body."""
    end = data.find(_HEAD_END)
    if end < 0:
        return len(data) > _HEAD_LIMIT
    length = _CONTENT_LENGTH.search(data, 0, end + 2)
    if length is None:
        return True  # no body, or a chunked one: the app bounds and reads it
    size = int(length[1])
    return size > max_body or len(data) >= end + len(_HEAD_END) + size  # too large: the app answers 413 unread


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, writing the head together with a body that is all there in one piece."""

    def write(self, arg: bytes) -> None:
        whole = (
            not self.headers_sent  # type: ignore[has-type]
            and not self.chunked
            and not self._omits_body
            and isinstance(arg, bytes)
            and self.response_length == len(arg)
        )
        if not whole:
            super().write(arg)
            return
        head = [*self.default_headers(), *(f"{k}: {v}\r\n" for k, v in self.headers), "\r\n"]
        util.write(self.sock, "".join(head).encode("latin-1") + arg)
        self.headers_sent = True
        self.sent += len(arg)


class GymserveWorker(gthread.ThreadWorker):
    """gthread that never blocks a thread on a slow client, and keeps a fast one on its thread."""

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.configure(settings)
        wsgi.Response = OneWriteResponse  # what gthread's wsgi.create builds, in this worker process only
        slot = getattr(self, "gymserve_slot", None)  # gunicorn_conf.pre_fork gives every worker one
        port = settings.worker_port(slot) if slot is not None else None
        if port is not None:
            own = self._own_listener(settings.host, port)
            if own is not None:
                self.sockets = [*self.sockets, own]  # type: ignore[has-type]  # accepted by gthread's poller too
        super().init_process()

    def configure(self, settings: Settings) -> None:
        """The worker's own settings (what init_process sets before gthread starts its loop)."""
        self.head_timeout = settings.head_timeout_seconds
        self.max_body = settings.max_body_bytes
        self.linger = settings.keepalive_linger_seconds
        self._busy = 0
        self._busy_lock = threading.Lock()

    def _own_listener(self, host: str, port: int) -> socket.socket | None:
        """The worker's own listening socket; None (the shared port still serves) when the port is taken."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # this slot's previous worker's TIME_WAITs
            sock.bind((host, port))
            sock.listen(self.cfg.backlog)
        except OSError as err:
            sock.close()
            self.log.warning(
                "gymserve: cannot listen on worker port %s:%d (%s); the shared one serves",
                host,
                port,
                err,
            )
            return None
        self.log.info("gymserve: worker pid %d also listens on %s:%d", os.getpid(), host, port)
        return sock

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl:  # TLS is terminated in front of gymserve (the router, an ingress)
            return super().handle(conn)
        with self._busy_lock:
            self._busy += 1
        try:
            while True:
                ready = self._buffer_request(conn)
                if ready is not True:
                    return ready
                conn.gymserve_deadline = None
                keep = super().handle(conn)
                if keep is not True or not self._next_request_soon(conn):
                    return keep
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _next_request_soon(self, conn: Any) -> bool:
        """Whether this thread should take the connection's next request itself: it came in time, and another
        thread is free for everyone else."""
        if not self.alive or self.linger <= 0 or self._busy >= self.cfg.threads:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # already read ahead: the poller would never see it as readable
        try:
            readable, _, _ = select.select([conn.sock], [], [], self.linger)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _buffer_request(self, conn: Any) -> Any:
        """True: the request is all in the parser's buffer. gthread's _DEFER: wait in the poller. False: close."""
        conn.init()  # builds the parser; reads nothing
        unreader = conn.parser.unreader
        held = unreader.take_buffered()  # read ahead by the previous request of a kept-alive connection
        try:
            conn.sock.setblocking(False)
            while not complete(held, self.max_body):
                try:
                    chunk = conn.sock.recv(_RECV)
                except (BlockingIOError, InterruptedError):
                    now = time.monotonic()
                    deadline = getattr(conn, "gymserve_deadline", None)
                    if deadline is None:
                        conn.gymserve_deadline = now + self.head_timeout
                    elif now > deadline:
                        self.log.debug("closing a connection whose request did not arrive in time")
                        return False
                    return gthread._DEFER
                except OSError:
                    return False
                if not chunk:
                    return False  # closed by the client, between requests or in the middle of one
                held += chunk
        finally:
            unreader.unread(held)
            conn.sock.setblocking(True)
        return True
