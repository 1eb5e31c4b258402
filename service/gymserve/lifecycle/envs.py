"""Everything one worker process holds: settings, env factory, registry, id minter and drain state."""

from __future__ import annotations

import copy
import logging
import secrets
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import fields, replace
from typing import Any

from .. import metrics
from ..envs import cost
from ..envs.factory import DEFAULT_AUTORESET, CreateRequest, EnvFactory
from ..errors import CapacityExceeded, Draining, GymServeError, InvalidValue, UnknownInstance
from ..routing.forward import Forwarder
from ..routing.ids import IdMinter, Owner
from ..routing.replica import Replica
from ..settings import Settings
from ..tenancy.quotas import Quotas
from ..tenancy.tenants import ANONYMOUS, Directory, Tenant
from . import copies as snapshots
from .idempotency import Keys
from .registry import EnvRecord, Registry

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
        self.keys = Keys()  # the idempotency keys of the creates this worker made
        self.sealer = snapshots.Sealer.from_environ(settings.max_snapshot_bytes)
        self.registry = Registry(settings, on_count, self._closed)
        # Who each request is (its key), and the tenants' farm-wide counts (none without a tenants file).
        self.tenants = Directory(settings.tenants_file, settings.tenants_reload_seconds)
        me = f"{self.owner.node}.{self.owner.slot}.{self.owner.generation}.{secrets.token_hex(4)}"
        self.quotas = (
            Quotas(None, me, settings.store_heartbeat_seconds, settings.retry_after_seconds)
            if self.tenants.open
            else Quotas.build(settings.store_url, me, settings.store_heartbeat_seconds, settings.retry_after_seconds)
        )
        self.ids = IdMinter(self.owner)
        self.draining = threading.Event()

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

    def ttl_for(self, requested: float | None, tenant: Tenant = ANONYMOUS) -> float:
        """The idle TTL of a new env: the server default, or the client's wish (a positive number, as the
        request model says) capped by the server maximum.

        A tenant's max_ttl_seconds caps the default too, and a wish above it is refused (422 naming ttl).
        """
        ttl = self.quotas.ttl(tenant, requested, self.settings.env_ttl_seconds)
        if requested is None:
            return ttl
        cap = self.settings.env_ttl_max_seconds
        return float(min(ttl, cap) if cap else ttl)

    def create(
        self, req: CreateRequest, ttl: float, tenant: Tenant = ANONYMOUS, labels: dict[str, str] | None = None
    ) -> EnvRecord:
        return self._opened(req.env_id, tenant, lambda: self._create(req, ttl, tenant, labels or {}), "created")

    def fork(
        self, instance_id: str, ttl: float | None, labels: dict[str, str] | None, tenant: Tenant = ANONYMOUS
    ) -> EnvRecord:
        """A new env of this worker in exactly the state of `instance_id` (random generators included), with its
        own id, sequence, counters and TTL (the original's unless given) and labels (copied unless given)."""
        source = self.registry.get(instance_id)  # another tenant's env reads as unknown here
        return self._opened(source.env_id, tenant, lambda: self._fork(source, ttl, labels, tenant), "forked")

    def _opened(self, env_id: str, tenant: Tenant, make: Callable[[], EnvRecord], verb: str) -> EnvRecord:
        """`make()`'s new env, counted and logged like every new env (its failure counted too)."""
        try:
            record = make()
        except GymServeError as err:
            metrics.FAILED.labels(metrics.label_for(env_id, self.factory.allowed), err.code).inc()
            metrics.REFUSED_BY_TENANT.labels(tenant.name, err.code).inc()
            raise
        record.meters = metrics.EnvMeters(record.env_id, self.settings, tenant.name)
        record.meters.live.inc(record.weight)
        metrics.CREATED.labels(record.env_id).inc(record.weight)
        log.info("%s env %s (%s%s)", verb, record.instance_id, record.env_id, _vector_note(record))
        return record

    def _check_room(self, weight: int) -> None:
        """A new env of `weight` may be made here: not draining, and the replica has room (503 otherwise)."""
        if self.draining.is_set():
            raise Draining(
                "this server is draining for shutdown and takes no new envs; retry on another",
                retry_after=self.settings.retry_after_seconds,
            )
        # Other workers count without a shared lock (a worker killed holding one would stall them all),
        # so the replica limit can be overshot by at most one create per worker racing this check.
        if self.replica_envs() + weight > self.settings.max_envs:
            raise CapacityExceeded(
                f"this replica holds {self.replica_envs()} of its maximum of {self.settings.max_envs} envs "
                f"and cannot take {weight} more; close some or retry later",
                retry_after=self.settings.retry_after_seconds,
                details={"limit": self.settings.max_envs},
            )

    def _admitted(self, tenant: Tenant, weight: int, make: Callable[[], EnvRecord]) -> EnvRecord:
        """`make()` with room for `weight` envs held on this worker and in the tenant's farm-wide quota (429)."""
        self._check_room(weight)
        with self.registry.reserve(weight):
            self.quotas.admit(tenant, weight)
            try:
                return make()
            except BaseException:
                self.quotas.release(tenant.name, weight)
                raise

    def _fork(self, source: EnvRecord, ttl: float | None, labels: dict[str, str] | None, tenant: Tenant) -> EnvRecord:
        def copied() -> EnvRecord:
            with self.registry.use(source.instance_id) as locked:  # no step moves it while it is copied
                state = _state_of(locked, snapshots.copy_env(locked.env))
            return self._adopt(state, source.ttl if ttl is None else ttl, labels, tenant)

        return self._admitted(tenant, source.weight, copied)

    def snapshot(self, instance_id: str) -> bytes:
        """The env's state sealed into a blob that any replica with this farm's key can restore."""
        with self.registry.use(instance_id) as record:  # pickled under its lock: no step moves it meanwhile
            return self.sealer.seal(_state_of(record, record.env))

    def restore(
        self,
        blob: bytes,
        env_id: str,
        ttl: float,
        labels: dict[str, str] | None,
        num_envs: int | None = None,
        autoreset_mode: str | None = None,
        tenant: Tenant = ANONYMOUS,
    ) -> EnvRecord:
        """A new env in the state a snapshot holds; the blob is opened only if this farm's key sealed it.
        `env_id` (and `num_envs`, `autoreset_mode` if given) must be the snapshot's."""
        self.factory.check_env_id(env_id)
        state = self.sealer.open(blob)
        for name, given, held in (
            ("env_id", env_id, state.env_id),
            ("num_envs", num_envs, state.num_envs),
            ("autoreset_mode", autoreset_mode, state.autoreset_mode),
        ):
            if given is not None and given != held:
                raise InvalidValue(name, f"the snapshot's is {held!r}, not {given!r}")

        def restored() -> EnvRecord:
            return self._admitted(tenant, state.weight, lambda: self._adopt(state, ttl, labels, tenant))

        return self._opened(env_id, tenant, restored, "restored")

    def _adopt(self, state: snapshots.EnvState, ttl: float, labels: dict[str, str] | None, tenant: Tenant) -> EnvRecord:
        """A new record for an env copied or restored (its place already reserved); labels: the state's unless given."""
        record = EnvRecord(
            **_carried(state),
            instance_id=self.ids.mint(),
            ttl=ttl,
            labels=dict(state.labels if labels is None else labels),
            tenant=tenant.name,
        )
        self.registry.add(record)
        return record

    def _create(self, req: CreateRequest, ttl: float, tenant: Tenant, labels: dict[str, str]) -> EnvRecord:
        if self.draining.is_set():
            self._check_room(req.weight)  # the draining answer comes before any check of the request
        self.factory.check_env_id(req.env_id)
        self.factory.check_vector(req)

        def made() -> EnvRecord:
            record = EnvRecord(
                instance_id=self.ids.mint(),
                env_id=req.env_id,
                env=self._make_within_bounds(req),
                ttl=ttl,
                num_envs=req.num_envs,
                auto_reset=req.auto_reset,
                autoreset_mode=(req.autoreset_mode or DEFAULT_AUTORESET) if req.num_envs else None,
                labels=dict(labels),
                tenant=tenant.name,
            )
            self.registry.add(record)
            return record

        return self._admitted(tenant, req.weight, made)

    def _make_within_bounds(self, req: CreateRequest) -> Any:
        """The env, unless one answer of it would exceed GYMSERVE_MAX_ANSWER_BYTES (422 at create).

        A vector env is weighed on one sub-env made first: building all of them to find out would be the
        very allocation the limit is there to prevent (AddRenderObservation renders each one at make).
        """
        limit = self.settings.max_answer_bytes
        renders = (req.kwargs or {}).get("render_mode") == "rgb_array" and "AddRenderObservation" not in req.wrappers
        if req.num_envs is not None:
            probe = self.factory.make(replace(req, num_envs=None, autoreset_mode=None))
            try:
                cost.check(probe, req.num_envs, limit, renders)
            finally:
                probe.close()
        env = self.factory.make(req)
        if req.num_envs is None:
            try:
                cost.check(env, 1, limit, renders=False)
            except GymServeError:
                env.close()
                raise
        return env

    def close(self, instance_id: str) -> EnvRecord:
        record = self.registry.pop(instance_id)
        log.info("closed env %s (%s)", record.instance_id, record.env_id)
        return record

    def _closed(self, record: EnvRecord, reason: str) -> None:
        """Every env closed (client, ttl, shutdown) gives its places back to its tenant's quota, and its key."""
        self.quotas.release(record.tenant, record.weight)
        _count_closed(record, reason)
        self.keys.forget_env(record.instance_id)

    def close_matching(self, selector: dict[str, str], tenant: str) -> int:
        """Close `tenant`'s envs on this worker whose labels match `selector` (never empty: that would be every env)."""
        assert selector, "a bulk close needs a label selector"
        closed = 0
        for record in self.registry.snapshot():
            if record.tenant == tenant and record.matches(selector):
                with suppress(UnknownInstance):  # closed meanwhile by its client or the reaper
                    self.close(record.instance_id)
                    closed += 1
        return closed


def _carried(source: EnvRecord | snapshots.EnvState) -> dict[str, Any]:
    """What a copy or a snapshot carries of an env: every field of EnvState, which EnvRecord has under the same
    names (labels and the vector tally are the callers' to copy)."""
    return {f.name: getattr(source, f.name) for f in fields(snapshots.EnvState) if f.name != "labels"}


def _state_of(record: EnvRecord, env: object) -> snapshots.EnvState:
    carried = _carried(record)
    carried.update(env=env, vector_tally=copy.deepcopy(record.vector_tally))
    return snapshots.EnvState(**carried, labels=dict(record.labels))


def _vector_note(record: EnvRecord) -> str:
    return f" x{record.num_envs}, autoreset {record.autoreset_mode}" if record.num_envs else ""


def _count_closed(record: EnvRecord, reason: str) -> None:
    """Closed envs are counted like live ones: a vector env as its sub-envs."""
    if record.meters is not None:
        record.meters.live.dec(record.weight)
    metrics.CLOSED.labels(record.env_id, reason).inc(record.weight)
    if reason == "ttl":
        metrics.REAPED.labels(record.env_id).inc(record.weight)
