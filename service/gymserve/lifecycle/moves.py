"""Park and adopt: an env outlives its worker, its replica and its pod, under the same instance id.

A worker that stops (SIGTERM: a drain, a restart, an upgrade, a scale-down) parks each env once its call in
flight has been answered: the env's whole state, signed and bound to its id and tenant, goes to the park store.
The next request for it, in whichever process it lands, adopts it (the claim is atomic: exactly one process
gets it) and the store records who holds it now, so that any other process forwards to that one. While an env
moves, requests for it get `503 unavailable` with `details.reason: "moving"`; an env that could not be copied is
lost with a reason (`not_movable`), and a record that fails its signature is never unpickled.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import metrics
from ..errors import GymServeError, InstanceLost, InvalidSnapshot, Moving, UnknownInstance
from ..pipeline import answers
from ..routing.ids import Owner
from ..settings import Settings
from . import copies
from . import labels as label_rules
from .caller import Caller
from .parking import DirStore, Parked, ParkStore, RedisStore, Whereabouts
from .registry import EnvRecord, Registry

log = logging.getLogger(__name__)

KEY_FILE = "park.key"  # a lone server's signing key, made on its first start (mode 0600)
MAX_RECORD_BYTES = 1 << 30  # a parked env is as large as it is; this only bounds a corrupted length


@dataclass
class ParkedEnv:
    """Everything an env's next call needs, so that its trajectory goes on exactly where it was."""

    state: copies.EnvState
    ttl: float
    idle_seconds: float  # idle when parked; the TTL keeps running while parked, unless hibernated
    parked_at: float  # wall clock
    hibernated: bool
    created_at: float
    steps: int
    episodes: int
    seq: int
    last_answer: Any
    recent_episodes: list[tuple[float, int]] = field(default_factory=list)
    key: tuple[str, bytes, Any] | None = None  # the idempotency key that made it: (key, digest, answer)


def _bound(instance_id: str, tenant: str) -> bytes:
    return f"parked\0{instance_id}\0{tenant}".encode()


def holder_name(owner: Owner) -> str:
    return f"{owner.node}.{owner.slot}-{owner.generation}"


def holder_owner(holder: str) -> Owner | None:
    node, _, rest = holder.rpartition(".")
    slot, _, generation = rest.partition("-")
    return Owner(node, int(slot), int(generation)) if node and slot.isdigit() and generation.isdigit() else None


class Moves:
    """This worker's side of parking: park its envs, adopt others', and say where a moved id is now."""

    def __init__(
        self, settings: Settings, store: ParkStore, sealer: copies.Sealer, registry: Registry, owner: Owner
    ) -> None:
        self.settings = settings
        self.store = store
        self.sealer = sealer
        self.registry = registry
        self.owner = owner
        self.me = holder_name(owner)
        # A holder that missed three reaper passes (and 5 s more) crashed: the envs it held are lost.
        self.beat_seconds = 3 * settings.reaper_interval_seconds + 5

    @classmethod
    def build(
        cls, settings: Settings, registry: Registry, owner: Owner, under_gunicorn: bool, environ: Any = None
    ) -> Moves | None:
        """A farm parks in its store (GYMSERVE_STORE_URL) under the farm's key (GYMSERVE_SNAPSHOT_KEY, the same on
        every replica); a lone server in GYMSERVE_STATE_DIR/<port> under a key it makes there. A bare WSGI app
        (tests, no gunicorn) parks only where GYMSERVE_STATE_DIR says."""
        environ = os.environ if environ is None else environ
        if settings.store_url:
            sealer = copies.Sealer.from_environ(MAX_RECORD_BYTES, environ)
            if not sealer.enabled:
                log.error(
                    "GYMSERVE_STORE_URL without %s: envs cannot be parked and are lost at a drain", copies.KEY_VARIABLE
                )
                return None
            return cls(settings, RedisStore(settings.store_url), sealer, registry, owner)
        if not (under_gunicorn or settings.state_dir):
            return None
        path = os.path.join(settings.parking_dir, str(settings.port))
        try:
            store = DirStore(path)
            key = _own_key(os.path.join(path, KEY_FILE))
        except OSError as exc:
            log.error("cannot park in %s (%s): envs are lost at a restart", path, exc)
            return None
        return cls(settings, store, copies.Sealer(key, MAX_RECORD_BYTES), registry, owner)

    # --- parking ---

    def park(self, record: EnvRecord, keys: Any) -> bool:
        """Park `record` once its call in flight has been answered (True), or lose it with a reason (False)."""
        with record.lock:
            return not record.closed and self._park_locked(record, keys, hibernate=False)

    def hibernate(self, record: EnvRecord, keys: Any) -> bool:
        """Park an env idle past its TTL for GYMSERVE_PARK_TTL_SECONDS (its idleness checked again under its lock,
        which is never waited for: a call holding it means the env is in use)."""
        if not record.lock.acquire(blocking=False):
            return False
        try:
            return not record.closed and record.expired(time.monotonic()) and self._park_locked(record, keys, True)
        finally:
            record.lock.release()

    def _park_locked(self, record: EnvRecord, keys: Any, hibernate: bool) -> bool:
        started = time.perf_counter()
        record.moving = True
        try:
            moved = self._parked_env(record, keys, hibernate)
            blob = self.sealer.seal(moved, _bound(record.instance_id, record.tenant))
        except GymServeError as err:  # not_supported: its state cannot be copied
            log.warning("env %s (%s) cannot be parked: %s", record.instance_id, record.env_id, err.message)
            self.store.lose(record.instance_id, "not_movable")
            metrics.ENV_ADOPT_FAILURES.labels("not_movable").inc()
            self.registry.drop(record, "lost")
            return False
        ttl_left = self.settings.park_ttl_seconds if hibernate else record.ttl - record.idle_seconds()
        expires_at = time.time() + ttl_left if (hibernate or record.ttl > 0) else 0.0
        summary = {**msgspec.to_builtins(answers.summary(record)), "state": "parked"}
        facts = Parked(record.tenant, record.env_id, dict(record.labels), expires_at, blob, record.weight, summary)
        self.store.put(record.instance_id, facts)
        self.registry.drop(record, "parked")
        metrics.ENVS_PARKED.inc(record.weight)
        metrics.PARK_SECONDS.observe(time.perf_counter() - started)
        return True

    def tick(self) -> None:
        """Each reaper pass: this worker beats (other replicas know it still holds what it adopted), parked envs
        whose TTL ran out are dropped, and the gauge says how many are left."""
        self.store.beat(self.me, self.beat_seconds)
        self.store.sweep()
        metrics.PARKED_ENVS.set(self.store.count())

    def park_all(self, keys: Any) -> tuple[int, int]:
        """Every env of this worker parked (a drain): how many were parked, and how many lost."""
        parked = lost_count = 0
        for record in self.registry.snapshot():
            try:
                moved = self.park(record, keys)
            except Exception:  # the store failed: this env is lost, the others may still move
                log.exception("parking env %s failed", record.instance_id)
                moved = False
            parked, lost_count = parked + moved, lost_count + (not moved)
        return parked, lost_count

    def _parked_env(self, record: EnvRecord, keys: Any, hibernated: bool) -> ParkedEnv:
        return ParkedEnv(
            state=copies.picklable(copies.state_of(record, record.env)),
            ttl=record.ttl,
            idle_seconds=record.idle_seconds(),
            parked_at=time.time(),
            hibernated=hibernated,
            created_at=record.created_at,
            steps=record.steps,
            episodes=record.episodes,
            seq=record.seq,
            last_answer=record.last_answer,
            recent_episodes=list(record.recent_episodes),
            key=keys.entry_of(record.instance_id),
        )

    # --- finding and adopting ---

    def where(self, instance_id: str, caller: Caller) -> Whereabouts | None:
        """Where the store says a moved id is, as this caller may know it (another tenant's reads as nothing)."""
        found = self.store.where(instance_id)
        if found is not None and found.parked is not None and found.parked.tenant != caller.tenant.name:
            return None
        return found

    def adopt(
        self,
        instance_id: str,
        parked_facts: Parked,
        admit: Callable[[str, int, Callable[[], EnvRecord]], EnvRecord],
        keys: Any,
    ) -> EnvRecord:
        """The parked env `instance_id` (what `where` found of it), adopted by this worker under its id.
        `admit(env_id, weight, make)` runs `make` with room held for it (503 capacity_exceeded otherwise, and the
        env stays parked); a claim lost to another process is a 503 moving."""
        started = time.perf_counter()

        def made() -> EnvRecord:
            parked = self.store.claim(instance_id)
            if parked is None:
                raise Moving(instance_id)
            try:
                moved = self.sealer.open(parked.blob, _bound(instance_id, parked.tenant), ParkedEnv)
            except InvalidSnapshot as err:  # altered, foreign or from other code: never unpickled, never retried
                log.error("parked env %s cannot be adopted: %s", instance_id, err.message)
                self.store.lose(instance_id, "bad_record")
                metrics.ENV_ADOPT_FAILURES.labels("bad_record").inc()
                raise InstanceLost(instance_id, "bad_record") from None
            record = _record_of(moved, instance_id, parked.tenant)
            self.registry.add(record)
            self.store.beat(self.me, self.beat_seconds)  # alive before anyone is told it holds the env
            self.store.settle(instance_id, self.me)
            if moved.key is not None:
                keys.restore(*moved.key, instance_id)
            return record

        try:
            record = admit(parked_facts.env_id, parked_facts.weight, made)
        except Moving:
            raise
        except GymServeError as err:
            if err.status == 503 or err.status == 429:  # full: it stays parked (it was never claimed)
                metrics.ENV_ADOPT_FAILURES.labels(err.code).inc()
            raise
        metrics.ENVS_ADOPTED.inc(record.weight)
        metrics.ADOPT_SECONDS.observe(time.perf_counter() - started)
        return record

    def listed(self, caller: Caller, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The caller's parked envs whose labels match `selector`, as a list shows them."""
        return [
            {**parked.summary, "instance_id": instance_id}
            for instance_id, parked in self.store.parked(caller.tenant.name)
            if parked.summary and label_rules.matches(parked.labels, selector)
        ]

    def close_parked(self, caller: Caller, selector: dict[str, str]) -> int:
        """Delete the caller's parked envs whose labels match `selector` (never opened: a claim, then forgotten)."""
        closed = 0
        for instance_id, parked in self.store.parked(caller.tenant.name):
            if label_rules.matches(parked.labels, selector) and self.store.claim(instance_id) is not None:
                self.store.forget(instance_id)
                closed += 1
        return closed

    def forget(self, record: EnvRecord) -> None:
        """A moved env was closed: the store forgets where it was."""
        if record.adopted:
            self.store.forget(record.instance_id)

    def error_for(self, instance_id: str, found: Whereabouts | None, fallback: GymServeError) -> GymServeError:
        """The answer for an id this worker neither holds nor adopts: moving, lost with its reason, or `fallback`."""
        if found is None:
            return fallback
        if found.state == "moving":
            return Moving(instance_id)
        if found.state == "lost":
            return InstanceLost(instance_id, found.reason or "lost")
        return fallback if isinstance(fallback, UnknownInstance) else InstanceLost(instance_id, "holder_gone")


def _record_of(moved: ParkedEnv, instance_id: str, tenant: str) -> EnvRecord:
    record = copies.record_of(moved.state, instance_id, moved.ttl, None, tenant)
    idle = 0.0 if moved.hibernated else moved.idle_seconds + max(0.0, time.time() - moved.parked_at)
    record.last_used = time.monotonic() - idle
    record.created_at = moved.created_at
    record.steps, record.episodes, record.seq = moved.steps, moved.episodes, moved.seq
    record.last_answer = moved.last_answer
    record.recent_episodes.extend(moved.recent_episodes)
    record.adopted = True
    return record


def _own_key(path: str) -> bytes:
    """This server's signing key: made once (0600) where it parks, read by every later start and worker."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker is writing it this very moment
            with open(path, "rb") as source:
                key = source.read()
            if len(key) >= copies.MIN_KEY_LENGTH:
                return key
            time.sleep(0.02)
        raise OSError(f"{path} holds no key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_hex(32).encode())
    with open(path, "rb") as source:
        return source.read()
