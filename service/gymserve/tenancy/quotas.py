"""A tenant's farm-wide limits, checked at create: live envs, creates per minute and the longest TTL."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from .. import metrics
from ..errors import InvalidValue, QuotaExceeded, RateLimited, StoreUnavailable
from .breaker import Breaker
from .store import MemoryStore, RedisStore, SqliteStore, Store
from .tenants import Tenant

log = logging.getLogger(__name__)

QUOTAS_FILE = "quotas.sqlite"  # in the replica's runtime directory: the counts of a server without a store


class SharedLock:
    """Many holders of the shared side at once, or one of the exclusive side. A waiting exclusive holder goes first
    (a steady stream of creates never starves the heartbeat), after at most one store call's timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # for the exclusive side

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Quotas:
    """This worker's side of the farm-wide counts: what it admitted, released and keeps alive with heartbeats."""

    def __init__(self, store: Store | None, worker: str, heartbeat_seconds: float, retry_after: int) -> None:
        self.store = store
        self.worker = worker
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_after = retry_after
        self.life_ms = int(heartbeat_seconds * 3 * 1000)  # three missed beats: the worker is gone
        self.held: Counter[str] = Counter()  # tenant -> envs this worker holds or is creating
        self._held_lock = threading.Lock()  # `held` alone, never across a store call
        # Admits and releases run side by side (the store adds atomically); a beat writes absolute counts, so
        # it excludes them: it must never overwrite an add made between reading `held` and writing it. A beat
        # waits at most the store's timeout, then the breaker refuses at once.
        self._ops = SharedLock()
        # After a failure the store is not called for retry_after seconds (what Retry-After tells clients).
        self.breaker = Breaker(retry_after)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def build(
        cls,
        url: str,
        worker: str,
        heartbeat_seconds: float,
        retry_after: int,
        runtime_dir: str | None = None,
        timeout: float = 0.5,
    ) -> Quotas:
        """Redis/Valkey at `url`; else a SQLite file in the replica's runtime directory, which all its workers
        share (quotas hold for the whole server); else, a lone process without a replica, its own memory."""
        store: Store
        if url:
            store = RedisStore(url, timeout)
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

    def admit(self, tenant: Tenant, weight: int, parked: int = 0, moving_in: bool = False) -> None:
        """Count `weight` envs against the tenant's quota and one create against its rate, or refuse (429).

        `parked`: the tenant's envs in the park store, which count too (they hold no worker's count). `moving_in`:
        a parked env adopted, counted again here with no check and no create (it was admitted when made).
        """
        if self.store is None:
            return
        limit = None if moving_in or tenant.max_envs is None else max(0, tenant.max_envs - parked)
        rate = None if moving_in else tenant.creates_per_minute
        if tenant.max_envs is not None:  # for the "tenant at its quota" alert: usage over this
            metrics.TENANT_MAX_ENVS.labels(tenant.name).set(tenant.max_envs)
        with self._ops.shared():
            if not self.breaker.allow():  # it failed a moment ago: answer now, without waiting on it again
                raise self._unavailable()
            try:
                verdict, value = self.store.admit(tenant.name, self.worker, weight, limit, rate, self.life_ms)
            except self.store_errors as exc:
                self.breaker.failed()
                log.error("quota store unreachable: %s", exc)
                raise self._unavailable() from None
            except BaseException:
                self.breaker.failed()
                raise
            self.breaker.succeeded()
            if verdict == "ok":
                with self._held_lock:
                    self.held[tenant.name] += weight
                self._start()
                return
        if verdict == "warming":  # the store restarted empty: the live workers' counts are not all back yet
            raise StoreUnavailable(
                "the store that counts tenants' envs restarted empty; creates resume once every worker has written "
                "its counts again (within one heartbeat)",
                retry_after=max(1, math.ceil(value / 1000)),
            )
        if verdict == "rate":
            assert tenant.creates_per_minute is not None
            raise RateLimited(tenant.name, tenant.creates_per_minute, max(1, math.ceil(value / 1000)))
        assert tenant.max_envs is not None
        raise QuotaExceeded(tenant.name, tenant.max_envs, value + parked, weight)

    def release(self, tenant: str, weight: int) -> None:
        if self.store is None:
            return
        with self._ops.shared():
            with self._held_lock:
                self.held[tenant] = max(0, self.held[tenant] - weight)
            if not self.breaker.allow():  # the next heartbeat that reaches the store writes the true count
                return
            try:
                self.store.release(tenant, self.worker, weight)
            except self.store_errors as exc:
                self.breaker.failed()
                log.warning("quota store: release not recorded (%s); the next heartbeat repairs it", exc)
                return
            except BaseException:
                self.breaker.failed()
                raise
            self.breaker.succeeded()

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            "the store that counts tenants' envs cannot be reached; retry later", retry_after=self.retry_after
        )

    @property
    def store_errors(self) -> tuple[type[Exception], ...]:
        errors: tuple[type[Exception], ...] = getattr(self.store, "errors", ())
        return errors

    def beat(self) -> None:
        """Renew this worker's counts: absolute values, so a store that restarted empty is repaired too."""
        if self.store is None:
            return
        with self._ops.exclusive():
            with self._held_lock:
                counts = list(self.held.items())
            for tenant, count in counts:
                if not self.breaker.allow():
                    return
                try:
                    self.store.beat(tenant, self.worker, count, self.life_ms)
                except self.store_errors as exc:
                    self.breaker.failed()
                    log.warning("quota store: heartbeat failed: %s", exc)
                    return
                except BaseException:
                    self.breaker.failed()
                    raise
                self.breaker.succeeded()
                if count == 0:
                    with self._held_lock:
                        if self.held[tenant] == 0:
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
