"""The worker's stream loop: one thread that waits on every idle step stream and answers its resets and steps itself.

Between messages, a stream used to go back to gthread's poller, and each message then cost a register, a wake-up,
a hand-off to a pool thread and a future (at 16 lockstep clients, more CPU than the step's own handler). Here every
stream stays registered in one selector, and the loop's thread answers a message of an env this worker holds as soon
as it has arrived (`Session.only_direct`: the one handler, pipeline/front.py's `stream_message`), with no hand-off.
Anything else goes to a pool thread, as before, and comes back here after: a message that needs the whole app (a
sibling's env, a render, a close, a batch), an answer the client's socket does not take at once, a drain.

A slow call does not stall the other streams: once the deadline watchdog finds the loop's thread in a slow call
(lifecycle/deadlines.py), the worker `replace`s the loop. A new thread takes every other stream; the old one ends
after its call, and gives its last stream to the new loop.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.5  # how often idle streams and streams with a message still in pieces are looked at


After = Callable[[], None]  # what the worker does with a stream once it left the loop: close it, or a pool thread


class StreamLoop:
    """One thread, one selector, the streams registered in it (gunicorn TConn objects with a `gymserve_stream`).

    `serve(conn)` answers what the socket holds, on this thread: None while the stream stays here, else what to do
    with it once it is out of the selector. `expire(conn, now)` is the same for a stream's deadline (idle, a message
    in pieces). `handoff(conn)` gives a retired loop's last stream to the worker's loop now.
    """

    def __init__(
        self,
        serve: Callable[[Any], After | None],
        expire: Callable[[Any, float], After | None],
        handoff: Callable[[Any], None],
    ) -> None:
        self.serve, self.expire, self.handoff = serve, expire, handoff
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.incoming: deque[Any] = deque()
        self.conns: set[Any] = set()
        self.lock = threading.Lock()  # `retired` and `current`, between this thread and the one replacing it
        self.retired = False
        self.current: Any = None
        self.thread = threading.Thread(target=self._run, name="gymserve-streams", daemon=True)

    def start(self) -> StreamLoop:
        self.thread.start()
        return self

    def add(self, conn: Any) -> None:
        """Give the loop a stream (from any thread): it is registered by the loop's own thread."""
        self.incoming.append(conn)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def retire(self) -> list[Any]:
        """Stop this loop (its thread is stuck in a slow call): every stream but the one it serves now, for a new
        loop. The old thread gives that one to the worker's new loop itself, once its call is over."""
        with self.lock:
            self.retired = True
            moving = [c for c in self.conns if c is not self.current]
            self.conns.difference_update(moving)
            moving += list(self.incoming)
            self.incoming.clear()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        return moving

    def _run(self) -> None:
        swept = time.monotonic()
        try:
            while not self.retired:
                try:
                    swept = self._pass(swept)
                except Exception:  # a bug: logged, and every stream goes on being served
                    log.exception("gymserve: a pass of the stream loop failed")
                    time.sleep(0.01)  # never a tight loop of the same failure
        finally:
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _pass(self, swept: float) -> float:
        """One wait and what it found; the streams past their deadline every SWEEP_SECONDS. When it last swept."""
        for key, _ in self.selector.select(SWEEP_SECONDS):
            if key.data is None:
                self._take_incoming()
            elif not self._serve(key.data):
                return swept
        now = time.monotonic()
        if now - swept < SWEEP_SECONDS or self.retired:
            return swept
        for conn in list(self.conns):
            after = self.expire(conn, now)
            if after is not None:
                self._out(conn)
                after()
        return now

    def _serve(self, conn: Any) -> bool:
        """One stream's turn; False once the loop is retired (nothing more is served here)."""
        with self.lock:
            if self.retired:
                return False
            if conn not in self.conns:
                return True
            self.current = conn
        after = self.serve(conn)
        with self.lock:
            self.current = None
            retired = self.retired
        if after is not None:
            self._out(conn)
            after()
        elif retired:  # replaced while its call ran: the worker's new loop takes it on
            self._out(conn)
            self.handoff(conn)
        return not retired

    def _take_incoming(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            with self.lock:
                if self.retired or not self.incoming:
                    return
                conn = self.incoming.popleft()
                self.conns.add(conn)
            with contextlib.suppress(OSError, ValueError, KeyError):  # closed meanwhile: its deadline ends it
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _out(self, conn: Any) -> None:
        self.conns.discard(conn)
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.selector.unregister(conn.sock)
