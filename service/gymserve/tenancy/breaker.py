"""A circuit breaker for the quota store: after a failure, stop calling it for a while, then try once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Breaker:
    """Closed: every call goes through. A failure opens it for `open_seconds`: calls are refused at once,
    without waiting on a store that hangs. Then one caller makes a trial call (the others are still refused
    meanwhile): a success closes the breaker, a failure opens it again."""

    def __init__(self, open_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()  # guards the state only: never held across a call to the store
        self._open_until: float | None = None
        self._trial = False

    def allow(self) -> bool:
        """Whether this caller may call the store now; one who may must then report `succeeded` or `failed`."""
        with self._lock:
            if self._open_until is None:
                return True
            if self._trial or self._clock() < self._open_until:
                return False
            self._trial = True  # half-open: this caller is the one trial
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._open_until, self._trial = None, False

    def failed(self) -> None:
        with self._lock:
            self._open_until, self._trial = self._clock() + self.open_seconds, False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None
