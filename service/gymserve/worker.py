"""Everything one worker process holds: settings, env factory, registry, id minter and drain state."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from . import metrics
from .envs import DEFAULT_AUTORESET, CreateRequest, EnvFactory
from .errors import CapacityExceeded, Draining, GymServeError, InvalidValue
from .registry import EnvRecord, Registry
from .routing.forward import Forwarder
from .routing.ids import IdMinter, Owner
from .routing.replica import Replica
from .settings import Settings

log = logging.getLogger(__name__)


class Worker:
    """The core of one worker; the HTTP layer calls it and never touches gymnasium directly.

    `replica` is set under gunicorn (several workers share its env counts and socket directory);
    without it (tests, a plain WSGI server) the worker stands alone.
    """

    def __init__(self, settings: Settings, owner: Owner | None = None, replica: Replica | None = None) -> None:
        self.settings = settings
        self.owner = owner or Owner(settings.node_id, 0, 0)
        self.replica = replica
        self.forwarder = Forwarder(replica, self.owner.slot, settings.forward_timeout_seconds) if replica else None
        slot_envs = metrics.WORKER_ENVS.labels(str(self.owner.slot))

        def on_count(n: int) -> None:
            if replica is not None:
                replica.set_count(self.owner.slot, n)  # what siblings' placement reads
            slot_envs.set(n)

        self.factory = EnvFactory(settings)
        self.registry = Registry(settings, on_count, _count_closed)
        self.ids = IdMinter(self.owner)
        self.draining = threading.Event()
        # Batch stepping forwards each sibling's items in parallel; threads start on first use, after fork.
        siblings = max(1, (replica.slots if replica else 1) - 1)
        self.peer_pool = ThreadPoolExecutor(max_workers=siblings, thread_name_prefix="gymserve-peer-batch")

    def replica_envs(self) -> int:
        return self.replica.total_envs() if self.replica else len(self.registry)

    def some_worker_has_room(self, weight: int = 1) -> bool:
        if self.registry.has_room(weight):
            return True
        if self.replica is None:
            return False
        limit = self.settings.max_envs_per_worker
        return any(self.replica.counts[slot] + weight <= limit for slot in self.replica.live_slots())

    def roomiest_sibling(self, weight: int) -> int | None:
        """The live sibling slot with the fewest envs that can take `weight` more, if the replica has room."""
        if self.replica is None or self.replica_envs() + weight > self.settings.max_envs:
            return None
        counts = {s: self.replica.counts[s] for s in self.replica.live_slots() if s != self.owner.slot}
        roomy = [s for s, n in counts.items() if n + weight <= self.settings.max_envs_per_worker]
        return min(roomy, key=counts.__getitem__) if roomy else None

    def placement_for(self, weight: int) -> int | None:
        """Where a create of `weight` (sub-)envs goes: None for this worker, else the sibling slot that takes it.

        The sibling with the fewest envs, when this worker has no room or holds more than that sibling plus the
        placement tolerance: creates spread by load, not by which worker won the accept race. (The counts are
        read without a lock, so racing creates may overshoot by one each.)
        """
        if self.replica is None:
            return None
        sibling = self.roomiest_sibling(weight)
        if sibling is None or not self.registry.has_room(weight):
            return sibling
        mine = self.replica.counts[self.owner.slot]
        return sibling if mine - self.replica.counts[sibling] > self.settings.placement_tolerance else None

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self.draining.is_set():
            reasons.append("draining")
        if self.replica_envs() >= self.settings.max_envs or not self.some_worker_has_room():
            reasons.append("full")
        return reasons

    def ttl_for(self, requested: object) -> float:
        """The idle TTL of a new env: the server default, or the client's wish capped by the server maximum."""
        if requested is None:
            return self.settings.env_ttl_seconds
        if isinstance(requested, bool) or not isinstance(requested, (int, float)) or requested <= 0:
            raise InvalidValue("ttl", f"expected a positive number of seconds, got {requested!r}")
        cap = self.settings.env_ttl_max_seconds
        return float(min(requested, cap) if cap else requested)

    def create(self, req: CreateRequest, ttl: float) -> EnvRecord:
        try:
            record = self._create(req, ttl)
        except GymServeError as err:
            metrics.FAILED.labels(metrics.label_for(req.env_id, self.factory.allowed), err.code).inc()
            raise
        record.meters = metrics.EnvMeters(record.env_id)
        record.meters.live.inc(record.weight)
        metrics.CREATED.labels(record.env_id).inc(record.weight)
        log.info("created env %s (%s%s)", record.instance_id, record.env_id, _vector_note(record))
        return record

    def _create(self, req: CreateRequest, ttl: float) -> EnvRecord:
        if self.draining.is_set():
            raise Draining(
                "this server is draining for shutdown and takes no new envs; retry on another",
                retry_after=self.settings.retry_after_seconds,
            )
        self.factory.check_env_id(req.env_id)
        self.factory.check_vector(req)
        # Other workers count without a shared lock (a worker killed holding one would stall them all),
        # so the replica limit can be overshot by at most one create per worker racing this check.
        weight = req.weight
        if self.replica_envs() + weight > self.settings.max_envs:
            raise CapacityExceeded(
                f"this replica holds {self.replica_envs()} of its maximum of {self.settings.max_envs} envs "
                f"and cannot take {weight} more; close some or retry later",
                retry_after=self.settings.retry_after_seconds,
                details={"limit": self.settings.max_envs},
            )
        with self.registry.reserve(weight):
            env = self.factory.make(req)
            record = EnvRecord(
                instance_id=self.ids.mint(),
                env_id=req.env_id,
                env=env,
                ttl=ttl,
                num_envs=req.num_envs,
                auto_reset=req.auto_reset,
                autoreset_mode=(req.autoreset_mode or DEFAULT_AUTORESET) if req.num_envs else None,
            )
            self.registry.add(record)
        return record

    def close(self, instance_id: str) -> EnvRecord:
        record = self.registry.pop(instance_id)
        log.info("closed env %s (%s)", record.instance_id, record.env_id)
        return record


def _vector_note(record: EnvRecord) -> str:
    return f" x{record.num_envs}, autoreset {record.autoreset_mode}" if record.num_envs else ""


def _count_closed(record: EnvRecord, reason: str) -> None:
    """Closed envs are counted like live ones: a vector env as its sub-envs."""
    if record.meters is not None:
        record.meters.live.dec(record.weight)
    metrics.CLOSED.labels(record.env_id, reason).inc(record.weight)
    if reason == "ttl":
        metrics.REAPED.labels(record.env_id).inc(record.weight)
