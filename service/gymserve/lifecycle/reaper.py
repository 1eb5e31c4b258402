"""The TTL reaper: a thread in each worker that closes envs idle for longer than their TTL (or, with
GYMSERVE_IDLE_ACTION=park, parks them: `park` says whether it did)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .registry import EnvRecord, Registry

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        registry: Registry,
        interval_seconds: float,
        park: Callable[[EnvRecord], bool] | None = None,
        on_pass: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.interval_seconds = interval_seconds
        self.park = park
        self.on_pass = on_pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> list[EnvRecord]:
        """Close every env idle past its TTL (checked again under its lock: a request may have just used it)."""
        reaped = []
        for record in self.registry.expired(now):
            idle = record.idle_seconds()
            done = self.park(record) if self.park else self.registry.pop_if_expired(record.instance_id)
            if done:
                reaped.append(record)
                log.info(
                    "%s env %s (%s) after %.1fs idle (ttl %.0fs)",
                    "hibernated" if self.park else "reaped",
                    record.instance_id,
                    record.env_id,
                    idle,
                    record.ttl,
                )
        return reaped

    def _loop(self) -> None:
        interval = self.interval_seconds
        while not self._stop.wait(interval):
            try:
                self.run_once()
                if self.on_pass is not None:
                    self.on_pass()
            except Exception:  # the reaper must outlive any one bad env
                log.exception("reaper pass failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gymserve-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
