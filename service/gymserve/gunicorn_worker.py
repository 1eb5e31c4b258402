"""gymserve's gunicorn worker: gthread, where a request takes a thread only once it has all arrived, and a thread
that answered a tight keep-alive loop answers that client's next request without the poller in between.

Slow clients. Stock gthread hands a connection to a thread as soon as any byte arrives, and the thread
then blocks until the request head is complete: twenty clients that send one line of a head and wait
hold every thread of a worker, and everyone else waits (measured: past 60 s). Here a thread reads only
what the socket already holds, without blocking, keeps it with the connection, and hands the connection
back to gunicorn's poller until the head and a Content-Length body (up to GYMSERVE_MAX_BODY_BYTES) are
complete; then the request runs as gunicorn would run it, reading from that buffer. Every shape counts: a
Content-Length of any digit count, a chunked body (buffered to its last chunk), a head without its end. A body over
the limit is answered 413 and a head over 64 KiB 431 here, and the connection closed, unread. A request still
incomplete GYMSERVE_HEAD_TIMEOUT_SECONDS after its first byte (or a connection silent that long) is closed within a
second of it. Once a request is in, its socket has that same timeout: no thread ever waits on a socket without one.
Closing never blocks the poller's loop (gunicorn lingers up to 2 s there to drain a closed connection: here the
poller drains it), and idle connections are bounded: past worker_connections - threads of them, the one idle
longest is closed for a new one. (gunicorn's `timeout` is for a hung worker, not a slow client.)

Tight loops. gthread gives a keep-alive connection back to its poller after every request: a pipe write
wakes the poller, which registers the socket, waits for it and submits it to the pool again. An RL
client's next request comes a few hundred microseconds after its answer, so that round costs about as
much CPU as a step (py-spy: 29% of a loaded worker's samples). The thread that answered waits up to
GYMSERVE_KEEPALIVE_LINGER_SECONDS for the next request, but only while another thread is free, so no
other connection ever waits for a lingering one.
One write per answer. gunicorn writes an answer's head and its body with two sendall calls; an answer whose
whole body comes in one piece (every gymserve answer but a streamed one) goes out in one (OneWriteResponse),
a syscall less per request (py-spy: the two writes were 17% of a /v2 step's worker time).
Step streams. An upgraded connection waits between messages in the worker's stream loop (stream_loop.py), not in
gthread's poller: the loop's thread answers the resets and steps of this worker's quick envs itself, and hands a
stream to a pool thread only for what needs one (the whole app, a slow env, a client slow to read).
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

import contextlib
import errno
import os
import re
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import gthread

from .errors import GymServeError, HeadTooLarge, PayloadTooLarge, UriTooLong, closing_answer
from .pipeline import stream
from .pipeline.front import FRONT
from .settings import Settings
from .stream_loop import After, StreamLoop

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_HEAD_LIMIT = 64 * 1024  # beyond this gunicorn's own limits (request line, fields) refuse the head anyway
_CHUNK_LINE_LIMIT = 1024  # a chunk's size line (hex size and extensions) longer than this is not one
# What one recv() asks for. Not more: CPython allocates the whole size for each call, and past glibc's mmap
# threshold (128 KiB) that is an mmap and munmap per call (256 KiB: 9.6 us per small message, 64 KiB: 1.7 us).
_RECV = 64 * 1024
_CLOSE_LINGER = 2.0  # how long a closed connection is drained (RFC 9112 9.6), by the poller
_MAX_CLOSING = 1024  # past this many draining at once, the oldest is closed outright
_IN_LOOP = object()  # handle()'s answer for a stream the stream loop holds now: gthread's loop forgets it

WHOLE, WAIT, TOO_LARGE, HEAD_TOO_LARGE = "whole", "wait", "too large", "head too large"
LINE_TOO_LONG = "line too long"
LINE_LIMIT = 8190  # the longest request line: gunicorn's largest limit_request_line (gunicorn_conf sets it)


def arrival(data: bytes, max_body: int) -> str:
    """How much of a request `data` holds: WHOLE (its head, and its whole body when it has one), WAIT (not yet),
    TOO_LARGE (its body passes `max_body`, by Content-Length or by its chunks), LINE_TOO_LONG or HEAD_TOO_LARGE."""
    line_end = data.find(b"\r\n", 0, LINE_LIMIT + 2)
    if line_end < 0 and len(data) > LINE_LIMIT:
        return LINE_TOO_LONG
    end = data.find(_HEAD_END)
    if end < 0:
        return HEAD_TOO_LARGE if len(data) > _HEAD_LIMIT else WAIT
    start = end + len(_HEAD_END)
    length = _CONTENT_LENGTH.search(data, 0, end + 2)
    if length is not None:  # any digit count: "0000000000100" is 100, a length with 30 digits too large
        size = int(length[1])
        return TOO_LARGE if size > max_body else WHOLE if len(data) >= start + size else WAIT
    if _CHUNKED.search(data, 0, end + 2):
        return _chunks(data, start, max_body)
    return WHOLE


def _chunks(data: bytes, pos: int, max_body: int) -> str:
    """A chunked body from `pos`: WHOLE once its last chunk and trailers arrived. A malformed one is WHOLE too:
    gunicorn's parser refuses it from the buffer, without a read."""
    total = 0
    while True:
        line_end = data.find(b"\r\n", pos, pos + _CHUNK_LINE_LIMIT)
        if line_end < 0:
            return WAIT if len(data) - pos < _CHUNK_LINE_LIMIT else WHOLE
        size_text = data[pos:line_end].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            return WHOLE
        size = int(size_text, 16)
        if size == 0:  # the last chunk, then trailer fields, then an empty line
            return WHOLE if data.find(b"\r\n\r\n", line_end) >= 0 else WAIT
        total += size
        if total > max_body:
            return TOO_LARGE
        pos = line_end + 2 + size + 2
        if pos > len(data):
            return WAIT


_REFUSALS: dict[str, Callable[[int], GymServeError]] = {  # what the worker answers before a request is read
    TOO_LARGE: PayloadTooLarge,
    HEAD_TOO_LARGE: lambda _: HeadTooLarge(_HEAD_LIMIT),
    LINE_TOO_LONG: lambda _: UriTooLong(LINE_LIMIT),
}


def complete(data: bytes, max_body: int) -> bool:
    """Whether a thread may take the request in `data` now: all there, or to be refused at once."""
    return arrival(data, max_body) != WAIT


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


def _asks_upgrade(conn: Any) -> bool:
    """Whether the buffered request asks for a stream's WebSocket upgrade. A step is a POST: its buffer (a body of up
    to GYMSERVE_MAX_BODY_BYTES) is looked at in place, never copied."""
    with conn.parser.unreader.buf.getbuffer() as buffered:
        if buffered[:4] != b"GET ":
            return False
        head = bytes(buffered[:_HEAD_LIMIT])
    return stream.is_upgrade(head)


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
        # Idle connections (kept alive, or waiting for the rest of a request) are bounded by closing the one idle
        # longest, never by refusing to accept: gthread's own bound stopped the listener, and 1,000 silent
        # connections stopped the worker until gunicorn's keep-alive (75 s) closed them.
        self.max_idle = max(1, self.cfg.worker_connections - self.cfg.threads)
        self.worker_connections = 1 << 30  # gthread's loop never stops accepting: max_idle bounds instead
        self._closing: dict[socket.socket, float] = {}  # draining after a close -> until when
        self._threads_now = self.cfg.threads
        self.stream_idle = settings.stream_idle_seconds
        self.stream_limits = stream.Limits(
            self.max_body,
            settings.stream_pings_per_second,
            settings.stream_max_in_flight,
            settings.stream_max_unsent_bytes,
        )
        self._streams: set[Any] = set()  # upgraded connections (pipeline/stream.py), for a drain's 1012
        self._loop: StreamLoop | None = None  # started at the first stream (stream_loop.py)
        self._loop_lock = threading.Lock()

    def spare_threads(self, n: int) -> None:
        """`n` calls are slow now (lifecycle.deadlines): the pool gets a thread for each, so that they never take
        the threads other envs and the probes need. (ThreadPoolExecutor's `_max_workers`, read at each submit, and
        `_adjust_thread_count`, which starts a thread if none is idle.)"""
        grown = self.cfg.threads + n - self._threads_now
        self._threads_now = self.cfg.threads + n
        self.tpool._max_workers = self._threads_now
        for _ in range(max(0, grown)):  # requests already queued get the new threads now, not at the next submit
            self.tpool._adjust_thread_count()

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

    # --- in a thread ---

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl:  # TLS is terminated in front of gymserve (the router, an ingress)
            return super().handle(conn)
        with self._busy_lock:
            self._busy += 1
        try:
            while True:
                session = getattr(conn, "gymserve_stream", None)
                if session is not None:
                    return self._serve_stream(conn, session)
                ready = self._buffer_request(conn)
                if ready is not True:
                    return ready
                if _asks_upgrade(conn):
                    return self._upgrade(conn)
                conn.gymserve_deadline = None
                keep = super().handle(conn)
                if keep is not True or not self._next_request_soon(conn):
                    return keep
        finally:
            conn.gymserve_idle_since = time.monotonic()
            with self._busy_lock:
                self._busy -= 1

    # --- the step stream (pipeline/stream.py): an upgraded connection, its frames answered as they arrive ---

    def _upgrade(self, conn: Any) -> Any:
        """An upgrade to a stream route: the app checks it as the GET it is (the env's owner, tenancy: its own
        error answer, before any 101); then the connection is a WebSocket, in the stream loop between messages."""
        raw = conn.parser.unreader.buf.getvalue()
        head = raw[: raw.find(_HEAD_END) + len(_HEAD_END)]
        req = next(conn.parser)
        resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
        environ["wsgi.multithread"] = True
        for hop in stream.HOP_HEADERS:  # the check is a plain GET (werkzeug refuses a non-WebSocket route's upgrade)
            environ.pop(hop, None)
        line, headers, body = stream.call_app(self.wsgi, environ)
        if not line.startswith("200"):
            resp.force_close()
            resp.start_response(line, headers)
            resp.write(body)
            resp.close()
            return False
        match = stream.ENV_STREAM.fullmatch(environ["PATH_INFO"])
        front = getattr(self.wsgi, "extensions", {}).get(FRONT)
        direct = front.stream_message if front is not None else None
        session = stream.Session(self.wsgi, environ, match[1] if match else None, self.stream_limits, direct=direct)
        try:
            accepted = session.accept(head)
        except GymServeError as err:  # not a valid WebSocket upgrade (its key, its version): the 400 says which
            self._send_quietly(conn.sock, closing_answer(err, native=True))
            return False
        session.send_late = partial(self._send_quietly, conn.sock, end=True)
        conn.sock.sendall(accepted)
        conn.gymserve_stream = session
        conn.gymserve_lock = threading.Lock()
        conn.gymserve_unsent = b""
        self._streams.add(conn)
        conn.gymserve_deadline = time.monotonic() + self.stream_idle
        return self._to_loop(conn)

    def _serve_stream(self, conn: Any, session: stream.Session) -> Any:
        """On a pool thread: what the stream loop left (an answer the socket did not take, a message that needs the
        whole app), then what the socket holds, answered message by message in order; then back to the loop, or
        False once the stream ended. A drain closes it with 1012: a message not answered before is not run."""
        sock = conn.sock
        with conn.gymserve_lock:
            sock.settimeout(self.head_timeout)  # a client that does not read its answers is closed, not waited for
            try:
                unsent, conn.gymserve_unsent = conn.gymserve_unsent, b""
                sock.sendall(unsent)
                for out in session.receive(None):
                    sock.sendall(out)
            except OSError:
                session.closed = True
            while not session.closed:
                try:
                    sock.setblocking(False)
                    data = sock.recv(_RECV)
                except (BlockingIOError, InterruptedError):
                    break  # the next message is the stream loop's: it answers a quick env's without a hand-off
                except OSError:
                    data = b""
                if self._draining():
                    self._moved(sock, session)
                    break
                sock.settimeout(self.head_timeout)  # a client that does not read its answers is closed, not waited for
                try:
                    for out in session.receive(data):
                        sock.sendall(out)
                except OSError:
                    session.closed = True
                if not data:
                    session.closed = True
            if not session.closed and self._draining():  # it drained while this thread ran: end_streams skipped it
                self._moved(sock, session, end=True)
            if session.closed:
                self._streams.discard(conn)
                return False
            self._set_stream_deadline(conn, session)
        return self._to_loop(conn)

    def _set_stream_deadline(self, conn: Any, session: stream.Session) -> None:
        late = session.partial_since + self.head_timeout if session.partial is not None else None
        conn.gymserve_deadline = late or time.monotonic() + self.stream_idle

    # --- on the stream loop's thread (stream_loop.py) ---

    def _to_loop(self, conn: Any) -> Any:
        """The stream waits in the loop for its next message; gthread's loop forgets it meanwhile."""
        conn.sock.setblocking(False)
        with self._loop_lock:  # never into a loop being retired (stream_loop_stuck holds this lock meanwhile)
            if self._loop is None:
                self._loop = self._new_loop()
            self._loop.add(conn)
        return _IN_LOOP

    def _new_loop(self) -> StreamLoop:
        return StreamLoop(self._stream_turn, self._stream_expired, self._to_loop).start()

    def stream_loop_stuck(self, threads: set[int]) -> None:
        """The deadline watchdog found slow calls on `threads`: when the stream loop's is one, a new loop takes every
        other stream (the old one ends after its call)."""
        with self._loop_lock:
            old = self._loop
            if old is None or old.thread.ident not in threads:
                return
            self._loop = self._new_loop()
            for conn in old.retire():
                self._loop.add(conn)

    def _stream_turn(self, conn: Any) -> After | None:
        """A stream's message arrived: the resets and steps of this worker's envs answered here and now; None while
        the stream stays in the loop, else what to do with it once it is out (a pool thread, or closing)."""
        if not conn.gymserve_lock.acquire(blocking=False):  # a drain's close going out on it: the next turn sees it
            return None
        try:
            return self._stream_answers(conn, conn.gymserve_stream)
        except Exception:  # a bug: this stream ends, the loop and every other stream go on
            self.log.exception("gymserve: a stream's turn failed")
            conn.gymserve_stream.closed = True
            return partial(self._end_stream, conn)
        finally:
            conn.gymserve_lock.release()

    def _stream_answers(self, conn: Any, session: stream.Session) -> After | None:
        sock = conn.sock
        try:
            data = sock.recv(_RECV, socket.MSG_DONTWAIT)  # whatever timeout a late answer left on the socket
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if self._draining():
            self._moved(sock, session)
            return partial(self._end_stream, conn)
        session.only_direct = True
        out = b""
        try:
            for out in session.receive(data):
                sent = sock.send(out, socket.MSG_DONTWAIT)
                if sent < len(out):  # the client is not reading: a pool thread sends the rest, or times out
                    conn.gymserve_unsent = out[sent:]
                    break
        except BlockingIOError:
            conn.gymserve_unsent = out
        except OSError:
            session.closed = True
        finally:
            session.only_direct = False
        if not data:
            session.closed = True
        if not session.closed and not conn.gymserve_unsent and self._draining():  # end_streams skipped it, busy
            self._moved(sock, session)
        if session.closed:
            return partial(self._end_stream, conn)
        if session.needs_thread or conn.gymserve_unsent:
            return partial(self.enqueue_req, conn)
        self._set_stream_deadline(conn, session)
        return None

    def _stream_expired(self, conn: Any, now: float) -> After | None:
        """Idle past GYMSERVE_STREAM_IDLE_SECONDS (1001), or a message still in pieces (1008): closed."""
        session = conn.gymserve_stream
        if conn.gymserve_deadline > now and not session.closed:
            return None
        late_piece = session.fragment_late(self.head_timeout)
        code, why = (1008, "a message still in pieces") if late_piece else (1001, "idle")
        with contextlib.suppress(OSError):
            conn.sock.send(session.close(code, why), socket.MSG_DONTWAIT)
        return partial(self._end_stream, conn)

    def _end_stream(self, conn: Any) -> None:
        """A stream the loop held is over: closed as gthread closes a connection, from its own loop."""
        self._streams.discard(conn)
        self.method_queue.defer(self._closed_stream, conn)

    def _closed_stream(self, conn: Any) -> None:
        self.nr_conns -= 1
        self._close_later(conn.sock)

    def _moved(self, sock: socket.socket, session: stream.Session, end: bool = False) -> None:
        """A drain's close (1012, moved): the env is parked, the client reconnects and resends what was not answered."""
        self._send_quietly(sock, session.close(stream.MOVED, "moved"), end=end)

    def _draining(self) -> bool:
        envs = getattr(self.wsgi, "extensions", {}).get("gymserve")
        return envs is not None and envs.envs.draining.is_set()

    def end_streams(self, code: int, reason: str) -> None:
        """Close every stream not answering a message right now (a drain: 1012, the env moved); one that is will
        close itself before its next message."""
        for conn in list(self._streams):
            if conn.gymserve_lock.acquire(blocking=False):
                try:  # ended for the poller too: the connection goes at once, not at the graceful timeout
                    self._send_quietly(conn.sock, conn.gymserve_stream.close(code, reason), end=True)
                finally:
                    conn.gymserve_lock.release()

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes, end: bool = False) -> None:
        """`data` sent if the client takes it within a second; `end`: then no more (the connection's thread is
        stuck in an env call: the client must not wait for it to close the connection)."""
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(data)
            if end:
                sock.shutdown(socket.SHUT_RDWR)

    def _next_request_soon(self, conn: Any) -> bool:
        """Whether this thread should take the connection's next request itself: it came in time, and another
        thread is free for everyone else."""
        if not self.alive or self.linger <= 0 or self._busy >= self._threads_now:
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
            while (state := arrival(held, self.max_body)) == WAIT:
                try:
                    chunk = conn.sock.recv(_RECV)
                except (BlockingIOError, InterruptedError):
                    now = time.monotonic()
                    if getattr(conn, "gymserve_deadline", None) is None:  # from the first byte, or from accept
                        conn.gymserve_deadline = now + self.head_timeout
                    return gthread._DEFER  # the poller wakes it, or murder_pending closes it at the deadline
                except OSError:
                    return False
                if not chunk:
                    return False  # closed by the client, between requests or in the middle of one
                held += chunk
            if state != WHOLE:
                self._refuse(conn, held, _REFUSALS[state](self.max_body))
                return False
        finally:
            unreader.unread(held)
            conn.sock.settimeout(self.head_timeout)  # what gunicorn reads or writes from now on waits this long
        return True

    def _refuse(self, conn: Any, held: bytes, err: GymServeError) -> None:
        """Answer `err` before the request is read (in /v1's shape on a /v1 path), then the connection is closed."""
        native = b" /v1/" not in held[: held.find(b"\r\n") if b"\r\n" in held else 512]
        answer = closing_answer(err, native)
        try:
            conn.sock.settimeout(self.head_timeout)
            conn.sock.sendall(answer)
        except OSError:
            pass  # gone already

    # --- in the poller's loop ---

    def accept(self, listener: Any) -> None:
        """gthread's accept, with room made: past max_idle idle connections, the one idle longest is closed."""
        try:
            client, address = listener.accept()
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(True)
        self._make_room()
        self.enqueue_req(gthread.TConn(self.cfg, client, address, listener.getsockname()))

    def _make_room(self) -> None:
        idle = (self.keepalived_conns, self.pending_conns)
        while len(self.keepalived_conns) + len(self.pending_conns) >= self.max_idle:
            queue = min((q for q in idle if q), key=lambda q: getattr(q[0], "gymserve_idle_since", 0.0))
            self._drop(queue.popleft())

    def _drop(self, conn: Any) -> None:
        """Close an idle connection at once (it has nothing in flight)."""
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close the connections whose request did not arrive within GYMSERVE_HEAD_TIMEOUT_SECONDS of its first byte
        (they are checked every loop, about once a second, not only when a byte arrives); and end the drains of
        closed connections that ran out of time."""
        now = time.monotonic()
        late = [
            c for c in self.pending_conns if min(c.timeout, getattr(c, "gymserve_deadline", None) or c.timeout) <= now
        ]
        for conn in late:
            self.pending_conns.remove(conn)
            self.log.debug("closing a connection whose request did not arrive in time")
            self._drop(conn)
        for sock in [s for s, until in self._closing.items() if until <= now]:
            self._closed(sock)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gthread's, with its graceful close moved off this loop: gunicorn lingers up to 2 s here to drain a
        connection it closes, and every other connection of the worker waited (measured: 1,955 ms per close)."""
        failed = fs.cancelled() or fs.exception() is not None
        if not failed and fs.result() is _IN_LOOP:
            return  # the stream loop holds it, and closes it at its end (_end_stream)
        if not failed and fs.result() is not False:  # kept alive, or waiting in the poller: gthread's own way
            super().finish_request(conn, fs)
            return
        self.nr_conns -= 1
        self._close_later(conn.sock)

    def _close_later(self, sock: socket.socket) -> None:
        """Half-close now (the client sees the answer end), drain what it still sends from this loop, close at EOF
        or after _CLOSE_LINGER: RFC 9112 9.6's graceful close, never waited for."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, sock))
        except (OSError, ValueError, KeyError):
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._closing[sock] = time.monotonic() + _CLOSE_LINGER
        if len(self._closing) > _MAX_CLOSING:
            self._closed(next(iter(self._closing)))  # the oldest

    def _drain(self, sock: socket.socket, _fileobj: Any) -> None:
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._closed(sock)

    def _closed(self, sock: socket.socket) -> None:
        self._closing.pop(sock, None)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
