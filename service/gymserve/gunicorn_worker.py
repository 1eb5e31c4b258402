"""gunicorn's gthread worker, minus its hand-off to the poller between the requests of a tight keep-alive loop.

gthread gives a keep-alive connection back to its main thread after every request: the thread pool's
done-callback wakes the poller through a pipe, the poller registers the socket, waits for it to be
readable and submits it to the pool again. An RL client steps in a tight loop (its next request comes
a few hundred microseconds after its answer), so that round costs about as much CPU as the step itself
(py-spy: 29% of a loaded worker's samples in the hand-off). This worker lets the thread that answered
wait briefly for that client's next request and answer it too, but only while another thread is
free, so that no other connection ever waits for a lingering one.
See https://docs.gunicorn.org/en/stable/design.html#async-workers for the model it keeps.
"""

from __future__ import annotations

import select
import threading
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class KeepAliveThreadWorker(ThreadWorker):
    """gthread, with a thread lingering up to `linger_seconds` on its connection for the next request."""

    linger_seconds = 0.0  # set by gunicorn_conf from GYMSERVE_KEEPALIVE_LINGER_SECONDS

    def init_process(self) -> None:
        self._busy = 0
        self._busy_lock = threading.Lock()
        super().init_process()

    def handle(self, conn: Any) -> Any:
        with self._busy_lock:
            self._busy += 1
        try:
            keep = super().handle(conn)
            while keep is True and self._next_request_soon(conn):
                keep = super().handle(conn)
            return keep
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _next_request_soon(self, conn: Any) -> bool:
        """Whether this thread should answer the connection's next request itself (it has arrived in time)."""
        if not self.alive or self.linger_seconds <= 0 or self._busy >= self.cfg.threads:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # already read ahead: the poller would never see it as readable
        try:
            readable, _, _ = select.select([conn.sock], [], [], self.linger_seconds)
        except (OSError, ValueError):
            return False
        return bool(readable)
