"""Leases: a daemon thread keeps a server env alive while the client object that holds it lives."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .errors import ClientError, RemoteError
from .http import HttpSession

# Keepalives are sent at this fraction of the env's idle TTL, so that two may be lost before the env expires.
FRACTION = 0.3
MIN_INTERVAL = 0.05


class Lease:
    """POSTs /v2/envs/<id>/keepalive every `FRACTION` of the env's TTL, on a connection of its own.

    The thread is a daemon and holds only a weak reference to `holder` (the object whose life is the
    lease's): it never keeps the process or the client object alive. It ends on `stop()` (close), when
    the holder is collected, or when the server says the env is gone.
    """

    def __init__(self, http: HttpSession, path: str, ttl: float, holder: Any) -> None:
        self.http = http
        self.path = path
        self.interval = max(MIN_INTERVAL, ttl * FRACTION)
        self._holder = weakref.ref(holder)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"gymserve-lease {path}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if self._holder() is None:
                    return
                try:
                    self.http.send("POST", self.path + "/keepalive", None, {"Accept": "application/json"}).checked()
                except RemoteError as err:
                    if err.status in (404, 410):  # closed, reaped or lost: nothing left to keep alive
                        return
                except ClientError:
                    pass  # a network blip: the next keepalive may get through before the TTL runs out
        finally:
            self.http.close()

    def stop(self) -> None:
        self._stop.set()
