"""The Envs service: the one way to act on a worker's envs, each verb for an explicit Caller."""

from __future__ import annotations

import builtins
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import msgspec

from .. import metrics
from ..envs import cost
from ..envs.factory import DEFAULT_AUTORESET, EnvFactory
from ..errors import CapacityExceeded, Draining, GymServeError, InstanceLost, Moving, UnknownInstance
from ..pipeline.models import CreateRequest
from ..routing import peers
from ..routing.ids import IdMinter, Owner
from ..routing.replica import Replica
from ..routing.resolve import Resolution, Where
from ..settings import Settings
from ..tenancy.quotas import Quotas
from ..tenancy.tenants import Tenant
from . import copies, labels
from .caller import Caller
from .deadlines import Deadlines
from .idempotency import Keys
from .moves import Moves, holder_owner
from .parking import Parked
from .placement import Placement
from .registry import EnvRecord, Records, Registry

log = logging.getLogger(__name__)

# A step this quick is answered on the stream loop's own thread, between other streams' messages; a slower env's go to
# a pool thread of their own, so that they run beside the others (CartPole: ~10 us; MuJoCo, Atari: up to a few ms).
QUICK_STEP_SECONDS = 0.001


class Envs:
    """Everything one worker holds of envs, behind verbs: create, get, list, close, close_matching, fork, snapshot,
    restore. The HTTP layer calls these and never touches gymnasium, the registry or the keys directly.

    `replica` is set under gunicorn (several workers share its env counts); without it (tests, a plain WSGI server)
    the worker stands alone. `open_server`: no tenants file, so quotas never reach a store.
    """

    def __init__(
        self, settings: Settings, owner: Owner | None = None, replica: Replica | None = None, open_server: bool = True
    ) -> None:
        self.settings = settings
        self.owner = owner or Owner(settings.node_id, 0, 0)
        slot_envs = metrics.WORKER_ENVS.labels(str(self.owner.slot))

        def on_count(n: int) -> None:
            if replica is not None:
                replica.set_count(self.owner.slot, n)  # what siblings' placement reads
            slot_envs.set(n)

        self.factory = EnvFactory(settings)
        self.keys = Keys()  # the idempotency keys of the creates this worker made
        self.sealer = copies.Sealer.from_environ(settings.max_snapshot_bytes)
        self.registry = Registry(settings, on_count, self._closed)
        self._made_ids: set[str] = set()  # env ids made here before (their modules loaded): vector probes weigh true
        # Every env call's deadline (its watchdog started by gunicorn_conf); with tenants, each has a share.
        self.deadlines = Deadlines(settings, settings.threads, shared=not open_server)
        self.deadlines.quarantine = self.registry.quarantine
        self.registry.deadlines = self.deadlines
        self.placement = Placement(settings, self.owner, replica, self.registry)
        me = f"{self.owner.node}.{self.owner.slot}.{self.owner.generation}.{secrets.token_hex(4)}"
        beat, retry_after = settings.store_heartbeat_seconds, settings.retry_after_seconds
        self.quotas = (
            Quotas(None, me, beat, retry_after)  # no tenants file: nothing to count
            if open_server
            else Quotas.build(
                settings.store_url,
                me,
                beat,
                retry_after,
                replica.runtime_dir if replica else None,
                settings.store_timeout_seconds,
            )
        )
        self.ids = IdMinter(self.owner)
        self.draining = threading.Event()
        # Where envs go when this worker stops, and come from when it did not make them (None: they are lost).
        self.moves = Moves.build(settings, self.registry, self.owner, under_gunicorn=replica is not None)

    # --- reading ---

    def get(self, instance_id: str, caller: Caller) -> EnvRecord:
        return self.registry.get(instance_id, caller)

    def touch(self, instance_id: str, caller: Caller) -> EnvRecord:
        """The env, for a read that needs no lock (spaces, transitions); it still counts as a use."""
        return self.registry.touch(instance_id, caller)

    def use(self, instance_id: str, caller: Caller, seq: int | None = None) -> Any:
        """The env locked for this call alone, under its deadline (a context manager), its idle clock restarted;
        `seq`: the call's number, whose resend is answered at once while it runs."""
        return self.registry.use(instance_id, caller, seq)

    def watch(self, instance_id: str, caller: Caller, wait: float) -> Any:
        """The env's lock for a viewer's read: watching is not using (a context manager yielding the record, or
        None when another call held the lock for longer than `wait` seconds)."""
        return _watched(self.registry, self.get(instance_id, caller), wait, caller)

    def holds(self, instance_id: str) -> bool:
        """Whether this worker holds the env now, whoever's it is (a keyed create checks its env lived to be kept)."""
        return self.registry.find(instance_id) is not None

    def quick(self, instance_id: str) -> bool:
        """Whether this worker holds the env, no call runs on it now (a call would not wait for its lock) and its last
        step took at most QUICK_STEP_SECONDS: what the stream loop (stream_loop.py) answers on its own thread."""
        record = self.registry.find(instance_id)
        return record is not None and not record.lock.locked() and record.step_seconds <= QUICK_STEP_SECONDS

    def has_room(self, weight: int) -> bool:
        """Whether this worker has room for `weight` more (sub-)envs."""
        return self.registry.has_room(weight)

    def list(self, caller: Caller, selector: dict[str, str] | None = None) -> Records:
        return self.registry.list(caller, selector)

    def readiness(self) -> dict[str, object]:
        """Whether this worker takes new envs (the reasons it does not), and what it and its replica hold."""
        return {
            "reasons": self.not_ready_reasons(),
            "worker_envs": len(self.registry),
            "worker_capacity": self.settings.max_envs_per_worker,
            "replica_envs": self.placement.replica_envs(),
            "replica_capacity": self.settings.max_envs,
            "workers": len(self.placement.live_slots()),
        }

    def not_ready_reasons(self) -> builtins.list[str]:
        reasons = []
        if self.draining.is_set():
            reasons.append("draining")
        if self.placement.replica_envs() >= self.settings.max_envs or not self.placement.some_worker_has_room():
            reasons.append("full")
        return reasons

    # --- making ---

    def ttl_for(self, requested: float | None, tenant: Tenant) -> float:
        """The idle TTL of a new env: the server default, or the client's wish (a positive number, as the
        request model says) capped by the server maximum.

        A tenant's max_ttl_seconds caps the default too, and a wish above it is refused (422 naming ttl).
        """
        ttl = self.quotas.ttl(tenant, requested, self.settings.env_ttl_seconds)
        if requested is None:
            return ttl
        cap = self.settings.env_ttl_max_seconds
        return float(min(ttl, cap) if cap else ttl)

    def create(self, spec: CreateRequest, caller: Caller) -> EnvRecord:
        """A new env as `spec` asks (a restore when it carries a snapshot), for the caller's tenant."""
        if spec.snapshot is not None:
            return self.restore(spec, caller)
        ttl = self.ttl_for(spec.ttl, caller.tenant)
        return self._opened(spec.env_id, caller.tenant, lambda: self._create(spec, ttl, caller.tenant), "created")

    def fork(self, instance_id: str, caller: Caller, ttl: float | None, new_labels: dict[str, str] | None) -> EnvRecord:
        """A new env of this worker in exactly the state of `instance_id` (random generators included), with its
        own id, sequence, counters and TTL (the original's unless given) and labels (copied unless given)."""
        source = self.get(instance_id, caller)
        tenant = caller.tenant
        ttl = source.ttl if ttl is None else self.ttl_for(ttl, tenant)

        def forked() -> EnvRecord:
            with self.use(instance_id, caller) as locked:  # no step moves it while it is copied
                state = copies.state_of(locked, copies.copy_env(locked.env))
            return self._record_from(state, ttl, new_labels, tenant)

        return self._opened(source.env_id, tenant, lambda: self._admitted(tenant, source.weight, forked), "forked")

    def snapshot(self, instance_id: str, caller: Caller) -> bytes:
        """The env's state sealed into a blob that any replica with this farm's key can restore."""
        expires_at = time.time() + self.settings.snapshot_ttl_seconds
        binding = copies.snapshot_binding(caller.tenant.name)
        with self.use(instance_id, caller) as record:  # pickled under its lock: no step moves it meanwhile
            return self.sealer.seal(copies.state_of(record, record.env), binding, expires_at)

    def restore(self, spec: CreateRequest, caller: Caller) -> EnvRecord:
        """A new env in the state `spec.snapshot` holds; the blob is opened only if this farm's key sealed it."""
        copies.check_restore(spec)
        ttl, tenant = self.ttl_for(spec.ttl, caller.tenant), caller.tenant
        self.factory.check_env_id(spec.env_id)
        state = copies.opened(self.sealer, spec, tenant.name)
        self.factory.kwargs_policy.check(state.env_id, copies.made_with(state.env))  # today's policy, not the blob's

        def restored() -> EnvRecord:
            return self._admitted(tenant, state.weight, lambda: self._record_from(state, ttl, spec.labels, tenant))

        return self._opened(spec.env_id, tenant, restored, "restored")

    # --- moving ---

    def located(self, caller: Caller, instance_id: str) -> Caller:
        """The caller, its resolution brought up to date for an id this worker does not hold: a parked env adopted
        here (now local), or one a sibling adopted (forward there). Raises moving (503) or lost with its reason."""
        resolution = caller.resolution
        assert resolution is not None
        where = resolution.where
        if self.holds(instance_id):  # made here, or adopted here under another worker's id
            return caller if where is Where.LOCAL else caller._replace(resolution=Resolution(Where.LOCAL, self.owner))
        if self.moves is None or where is Where.UNKNOWN:
            return caller
        if where is Where.SIBLING and resolution.owner is not None and self.placement.is_live(resolution.owner.slot):
            return caller  # its worker is up: it holds the env, or adopts it
        found = self.moves.where(instance_id, caller)
        if found is not None and found.parked is not None:  # parked, and the caller's
            if self.draining.is_set():
                raise Moving(instance_id)  # parked by this very drain: the next process adopts it
            self.adopt(instance_id, caller.tenant, found.parked)
            return caller._replace(resolution=Resolution(Where.LOCAL, self.owner))
        holder = holder_owner(found.holder) if found is not None and found.state == "held" else None
        if holder is not None and (sent := self._toward(holder, caller)) is not None:
            return caller._replace(resolution=Resolution(sent, holder))
        if holder is not None and holder.node != self.owner.node and not caller.may_fan_out:
            raise Moving(instance_id)  # sent here by a replica whose look-up is already stale: it moved meanwhile
        lost = where in (Where.LOST, Where.SIBLING)
        fallback = self.lost(instance_id, resolution.owner) if lost else UnknownInstance(instance_id[:100])
        raise self.moves.error_for(instance_id, found, fallback)

    def lost(self, instance_id: str, owner: Owner | None) -> InstanceLost:
        """An env lost with its worker; `worker_stuck` when gunicorn's master killed that worker, stuck in a call
        that held the GIL (lifecycle.deadlines)."""
        replica = self.placement.replica
        stuck = owner is not None and replica is not None and replica.was_stuck(owner.generation)
        return InstanceLost(instance_id, "worker_stuck" if stuck else None)

    def hop_lost(self, caller: Caller, instance_id: str) -> GymServeError:
        """What a request is told when the sibling it was sent to went away without answering. A draining worker
        parks its envs before it exits, so an env the store knows is moving (the retry adopts or follows it);
        one it does not know was lost with its worker."""
        lost = self.lost(instance_id, caller.resolution.owner if caller.resolution else None)
        if self.moves is None:
            return lost
        found = self.moves.where(instance_id, caller)
        if found is not None and found.state in ("parked", "held"):
            return Moving(instance_id)
        return self.moves.error_for(instance_id, found, lost)

    def _toward(self, holder: Owner, caller: Caller) -> Where | None:
        """How a request reaches the worker that adopted its env: a sibling (once, over its socket), another replica
        (once, over HTTP), or not at all (None: that worker is gone, or the request already took its hop)."""
        if holder.node == self.owner.node:
            live = holder.slot != self.owner.slot and self.placement.is_live(holder.slot)
            return Where.SIBLING if live and caller.may_forward else None
        return Where.REPLICA if caller.may_fan_out and peers.reachable(self.settings, holder.node) else None

    def adopt(self, instance_id: str, tenant: Tenant, parked: Parked) -> EnvRecord:
        """The parked env `instance_id`, made this worker's under its own id (room and quota held for it)."""
        assert self.moves is not None

        def admitted(env_id: str, weight: int, make: Callable[[], EnvRecord]) -> EnvRecord:
            return self._opened(env_id, tenant, lambda: self._admitted(tenant, weight, make, moving_in=True), "adopted")

        return self.moves.adopt(instance_id, parked, admitted, self.keys)

    def parked(self, caller: Caller, selector: dict[str, str]) -> builtins.list[dict[str, Any]]:
        """The caller's parked envs, as a list shows them: asked once per list, by the worker that received it."""
        return [] if self.moves is None or not caller.may_fan_out else self.moves.listed(caller, selector)

    def close_parked(self, caller: Caller, selector: dict[str, str]) -> int:
        """A bulk delete of the caller's parked envs: done once, by the worker that received it."""
        if self.moves is None or not caller.may_fan_out:
            return 0
        labels.check_bulk(selector)
        return self.moves.close_parked(caller, selector)

    def idle_parker(self) -> Callable[[EnvRecord], bool] | None:
        """What the reaper does instead of closing an env idle past its TTL: park it (GYMSERVE_IDLE_ACTION=park)."""
        moves = self.moves
        if moves is None or self.settings.idle_action != "park":
            return None
        return lambda record: moves.hibernate(record, self.keys)

    def park_all(self) -> tuple[int, int]:
        """A drain: every env parked once its call in flight is answered (parked, lost). (0, 0) without a store."""
        return (0, 0) if self.moves is None else self.moves.park_all(self.keys)

    # --- closing ---

    def close(self, instance_id: str, caller: Caller) -> EnvRecord:
        record = self.registry.pop(instance_id, caller)
        log.info("closed env %s (%s)", record.instance_id, record.env_id)
        return record

    def close_matching(self, caller: Caller, selector: dict[str, str]) -> int:
        """Close the caller's envs on this worker whose labels match `selector` (never empty: that is every env)."""
        labels.check_bulk(selector)
        closed = 0
        for record in self.list(caller, selector):
            with suppress(UnknownInstance):  # closed meanwhile by its client or the reaper
                self.close(record.instance_id, caller)
                closed += 1
        return closed

    def close_all(self, reason: str = "shutdown") -> int:
        return self.registry.close_all(reason)

    # --- the rules every new env passes ---

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
        if verb != "adopted":  # an adopted env was counted when it was made
            metrics.CREATED.labels(record.env_id).inc(record.weight)
        log.info("%s env %s (%s%s)", verb, record.instance_id, record.env_id, _vector_note(record))
        return record

    def check_room(self, weight: int) -> None:
        """A new env of `weight` may be made here: not draining, and the replica has room (503 otherwise)."""
        if self.draining.is_set():
            raise Draining(
                "this server is draining for shutdown and takes no new envs; retry on another",
                retry_after=self.settings.retry_after_seconds,
            )
        # Other workers count without a shared lock (a worker killed holding one would stall them all),
        # so the replica limit can be overshot by at most one create per worker racing this check.
        held = self.placement.replica_envs()
        if held + weight > self.settings.max_envs:
            raise CapacityExceeded(
                f"this replica holds {held} of its maximum of {self.settings.max_envs} envs "
                f"and cannot take {weight} more; close some or retry later",
                retry_after=self.settings.retry_after_seconds,
                details={"limit": self.settings.max_envs},
            )

    def _admitted(
        self, tenant: Tenant, weight: int, make: Callable[[], EnvRecord], moving_in: bool = False
    ) -> EnvRecord:
        """`make()` with room for `weight` envs held on this worker and in the tenant's farm-wide quota (429), where
        the tenant's parked envs count too; an env moving in (adopted) takes room, and is counted but not checked."""
        self.check_room(weight)
        with self.registry.reserve(weight):
            moves = self.moves if tenant.max_envs is not None and not moving_in else None
            parked = moves.store.count_of(tenant.name) if moves is not None else 0
            self.quotas.admit(tenant, weight, parked, moving_in)
            try:
                return make()
            except BaseException:
                self.quotas.release(tenant.name, weight)
                raise

    def _record_from(
        self, state: copies.EnvState, ttl: float, new_labels: dict[str, str] | None, tenant: Tenant
    ) -> EnvRecord:
        """A new record for an env copied or restored (its place already reserved); labels: the state's unless given."""
        record = copies.record_of(state, self.ids.mint(), ttl, new_labels, tenant.name)
        self.registry.add(record)
        return record

    def _create(self, spec: CreateRequest, ttl: float, tenant: Tenant) -> EnvRecord:
        if self.draining.is_set():
            self.check_room(spec.weight)  # the draining answer comes before any check of the request
        self.factory.check_env_id(spec.env_id)
        self.factory.check_vector(spec)

        def made() -> EnvRecord:
            record = EnvRecord(
                instance_id=self.ids.mint(),
                env_id=spec.env_id,
                env=self._make_within_bounds(spec),
                ttl=ttl,
                num_envs=spec.num_envs,
                auto_reset=bool(spec.auto_reset),
                autoreset_mode=(spec.autoreset_mode or DEFAULT_AUTORESET) if spec.num_envs else None,
                labels=dict(spec.labels or {}),
                tenant=tenant.name,
            )
            self.registry.add(record)
            return record

        return self._admitted(tenant, spec.weight, made)

    def _make_within_bounds(self, spec: CreateRequest) -> Any:
        """The env, unless making it took over GYMSERVE_MAX_ENV_BYTES of memory, or one answer of it would exceed
        GYMSERVE_MAX_ANSWER_BYTES (422 at create).

        A vector env is weighed on one sub-env made first: building all of them to find out would be the
        very allocation the limits are there to prevent (AddRenderObservation renders each one at make).
        """
        limit, memory = self.settings.max_answer_bytes, self.settings.max_env_bytes
        wrappers = spec.wrappers or ()
        renders = (spec.kwargs or {}).get("render_mode") == "rgb_array" and "AddRenderObservation" not in wrappers
        if spec.num_envs is not None:
            single = msgspec.structs.replace(spec, num_envs=None, autoreset_mode=None)
            if spec.env_id not in self._made_ids:  # its first make loads modules: a cost paid once, not per sub-env
                self.factory.make(single).close()
                self._made_ids.add(spec.env_id)
            before = cost.resident_bytes()
            probe = self.factory.make(single)
            try:
                made = cost.resident_bytes() - before
                cost.check(probe, spec.num_envs, limit, renders)
                cost.check_memory(made, spec.num_envs, memory)
            finally:
                probe.close()
        before = cost.resident_bytes()
        env = self.factory.make(spec)
        self._made_ids.add(spec.env_id)
        try:
            if spec.num_envs is None:
                made = cost.resident_bytes() - before
                cost.check(env, 1, limit, renders=False)
                cost.check_memory(made, 1, memory)
            cost.check_spaces(env, limit)
        except GymServeError:
            env.close()
            raise
        return env

    def _closed(self, record: EnvRecord, reason: str) -> None:
        """Every env closed (client, ttl, shutdown) or moved out (parked, lost) gives its places back to its tenant's
        quota, and its key; a closed env that had moved here is forgotten by the park store."""
        self.quotas.release(record.tenant, record.weight)
        _count_closed(record, reason)
        self.keys.forget_env(record.instance_id)
        if self.moves is not None and reason not in ("parked", "lost"):
            self.moves.forget(record)


@contextmanager
def _watched(registry: Registry, record: EnvRecord, wait: float, caller: Caller) -> Iterator[EnvRecord | None]:
    with registry.watch(record, wait, caller) as locked:
        yield record if locked else None


def _vector_note(record: EnvRecord) -> str:
    return f" x{record.num_envs}, autoreset {record.autoreset_mode}" if record.num_envs else ""


def _count_closed(record: EnvRecord, reason: str) -> None:
    """Closed envs are counted like live ones: a vector env as its sub-envs."""
    if record.meters is not None:
        record.meters.live.dec(record.weight)
    metrics.CLOSED.labels(record.env_id, reason).inc(record.weight)
    if reason == "ttl":
        metrics.REAPED.labels(record.env_id).inc(record.weight)
