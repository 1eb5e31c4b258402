"""The TTL reaper: a thread in each worker that closes envs idle for longer than their TTL."""

from __future__ import annotations

import logging
import threading

from .registry import EnvRecord, Registry

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, registry: Registry, interval_seconds: float) -> None:
        self.registry = registry
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> list[EnvRecord]:
        """Close every env idle past its TTL (checked again under its lock: a request may have just used it)."""
        reaped = []
        for record in self.registry.expired(now):
            idle = record.idle_seconds()
            if self.registry.pop_if_expired(record.instance_id):
                reaped.append(record)
                log.info(
                    "reaped env %s (%s) after %.1fs idle (ttl %.0fs)",
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
            except Exception:  # the reaper must outlive any one bad env
                log.exception("reaper pass failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gymserve-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
