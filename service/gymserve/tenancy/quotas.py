"""A tenant's farm-wide limits, checked at create: live envs, creates per minute and the longest TTL."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter

from .. import metrics
from ..errors import InvalidValue, QuotaExceeded, RateLimited, StoreUnavailable
from .store import MemoryStore, RedisStore, SqliteStore, Store
from .tenants import Tenant

log = logging.getLogger(__name__)

QUOTAS_FILE = "quotas.sqlite"  # in the replica's runtime directory: the counts of a server without a store


class Quotas:
    """This worker's side of the farm-wide counts: what it admitted, released and keeps alive with heartbeats."""

    def __init__(self, store: Store | None, worker: str, heartbeat_seconds: float, retry_after: int) -> None:
        self.store = store
        self.worker = worker
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_after = retry_after
        self.life_ms = int(heartbeat_seconds * 3 * 1000)  # three missed beats: the worker is gone
        self.held: Counter[str] = Counter()  # tenant -> envs this worker holds or is creating
        # Admits and beats of this worker are serialized: a beat writes absolute counts and must never
        # overwrite an add that happened between reading `held` and writing it.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def build(
        cls, url: str, worker: str, heartbeat_seconds: float, retry_after: int, runtime_dir: str | None = None
    ) -> Quotas:
        """Redis/Valkey at `url`; else a SQLite file in the replica's runtime directory, which all its workers
        share (quotas hold for the whole server); else, a lone process without a replica, its own memory."""
        store: Store
        if url:
            store = RedisStore(url)
        elif runtime_dir:
            store = SqliteStore(os.path.join(runtime_dir, QUOTAS_FILE))
        else:
            log.warning("tenants without GYMSERVE_STORE_URL nor a replica: quotas hold in this process only")
            store = MemoryStore()
        return cls(store, worker, heartbeat_seconds, retry_after)

    def ttl(self, tenant: Tenant, requested: float | None, default: float) -> float:
        """The TTL a create gets: the tenant's maximum caps the server's default; a larger wish is refused."""
        cap = tenant.max_ttl_seconds
        if cap is None:
            return default if requested is None else requested
        if requested is not None and requested > cap:
            err = InvalidValue("ttl", f"{requested:g}s is over the limit of {cap:g}s of tenant {tenant.name}")
            err.details["limit"] = cap
            raise err
        if requested is None:
            return min(default, cap) if default > 0 else cap
        return requested

    def admit(self, tenant: Tenant, weight: int) -> None:
        """Count `weight` envs against the tenant's quota and one create against its rate, or refuse (429)."""
        if self.store is None:
            return
        if tenant.max_envs is not None:  # for the "tenant at its quota" alert: usage over this
            metrics.TENANT_MAX_ENVS.labels(tenant.name).set(tenant.max_envs)
        with self._lock:
            try:
                verdict, value = self.store.admit(
                    tenant.name, self.worker, weight, tenant.max_envs, tenant.creates_per_minute, self.life_ms
                )
            except self.store_errors as exc:
                log.error("quota store unreachable: %s", exc)
                raise StoreUnavailable(
                    "the store that counts tenants' envs cannot be reached; retry later",
                    retry_after=self.retry_after,
                ) from None
            if verdict == "ok":
                self.held[tenant.name] += weight
                self._start()
                return
        if verdict == "rate":
            assert tenant.creates_per_minute is not None
            raise RateLimited(tenant.name, tenant.creates_per_minute, max(1, math.ceil(value / 1000)))
        assert tenant.max_envs is not None
        raise QuotaExceeded(tenant.name, tenant.max_envs, value, weight)

    def release(self, tenant: str, weight: int) -> None:
        if self.store is None:
            return
        with self._lock:
            self.held[tenant] = max(0, self.held[tenant] - weight)
            try:
                self.store.release(tenant, self.worker, weight)
            except self.store_errors as exc:  # the next heartbeat writes the true count
                log.warning("quota store: release not recorded (%s); the next heartbeat repairs it", exc)

    @property
    def store_errors(self) -> tuple[type[Exception], ...]:
        errors: tuple[type[Exception], ...] = getattr(self.store, "errors", ())
        return errors

    def beat(self) -> None:
        """Renew this worker's counts: absolute values, so a store that restarted empty is repaired too."""
        if self.store is None:
            return
        with self._lock:
            for tenant, count in list(self.held.items()):
                try:
                    self.store.beat(tenant, self.worker, count, self.life_ms)
                except self.store_errors as exc:
                    log.warning("quota store: heartbeat failed: %s", exc)
                    return
                if count == 0:
                    del self.held[tenant]

    def _start(self) -> None:
        # Started on the first admit, in the worker process (never before gunicorn forks).
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gymserve-quota-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # the heartbeat must outlive any one failure
                log.exception("quota heartbeat failed")

    def stop(self) -> None:
        self._stop.set()
