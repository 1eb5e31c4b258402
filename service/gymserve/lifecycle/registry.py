"""The envs this worker owns: lookup, per-env locks, idle TTL and capacity."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from ..errors import CallInFlight, CapacityExceeded, EnvQuarantined, Moving, UnknownInstance
from ..settings import Settings
from . import labels as label_rules
from .caller import Caller

if TYPE_CHECKING:  # imported at run time by Envs: metrics must not load before `gymserve serve` makes its directory
    from .deadlines import Deadlines

log = logging.getLogger(__name__)


@dataclass(eq=False)
class EnvRecord:
    """One live env and what the server knows about it."""

    instance_id: str
    env_id: str
    env: Any  # a gym.Env, or a gym.vector.VectorEnv when num_envs is set
    ttl: float
    num_envs: int | None = None  # a server-side vector env of this many sub-envs; None: a single env
    autoreset_mode: str | None = None  # a vector env's Gymnasium AutoresetMode value
    auto_reset: bool = False  # a single env wrapped in Autoreset: its episodes never need a reset
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: int = 0
    episodes: int = 0
    closed: bool = False
    meters: Any = None  # metrics.EnvMeters: this env's labelled metrics, looked up once
    seed: int | None = None  # the seed of the last reset that was given one
    episode_over: bool = False  # the last step ended the episode: /v2 needs a reset before the next step
    seq: int = 0  # /v2: how many resets and steps the env has answered (the last sequence number)
    last_answer: Any = None  # /v2: the last sequenced answer, for a resend of its sequence number
    # Episode statistics (operations.py keeps them): a single env's running episode, a vector env's per sub-env.
    episode_return: float = 0.0
    episode_length: int = 0
    autoreset_pending: bool = False  # an auto_reset env's next step is the Autoreset wrapper's reset, not a step
    vector_tally: Any = None  # operations.VectorTally of a vector env, made at its first reset or step
    recent_episodes: deque[tuple[float, int]] = field(default_factory=deque)  # (return, length), oldest first
    frame_cache: Any = None  # frames.Frame: the last frame a viewer got, and the env state it shows
    tenant: str = "anonymous"  # who created it: only that tenant's requests see it
    labels: dict[str, str] = field(default_factory=dict)  # the client's, given at create (lifecycle.labels.Labels)
    moving: bool = False  # being parked: requests that waited for its lock are told to retry (503 moving)
    adopted: bool = False  # it came from the park store, which forgets it when it closes
    movable: bool | None = None  # whether its state can be copied (copies.movable), once asked
    quarantined: bool = False  # a call ran past its deadline: no more calls (409 env_quarantined); it can be deleted
    step_seconds: float = 0.0  # how long its last step took (the stream loop answers only quick envs itself)
    running_seq: int | None = None  # the seq of the call running now: its resend is told so at once, holding no thread

    @property
    def weight(self) -> int:
        """What this env counts against capacity: one, or one per sub-env of a vector env."""
        return self.num_envs or 1

    def idle_seconds(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last_used

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and now - self.last_used > self.ttl

    def matches(self, selector: dict[str, str]) -> bool:
        return label_rules.matches(self.labels, selector)


Records = list[EnvRecord]  # named once: inside Registry, `list` is its verb


class Registry:
    """Thread-safe map of instance id to EnvRecord, bounded by weight (a vector env weighs its sub-envs)."""

    def __init__(
        self,
        settings: Settings,
        on_count: Callable[[int], None] | None = None,
        on_closed: Callable[[EnvRecord, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_count = on_count  # told the number of live and reserved envs after every change
        self.on_closed = on_closed  # told of every env closed, with why: client, ttl, shutdown
        self._records: dict[str, EnvRecord] = {}
        self._weight = 0  # the records' weights, summed
        self._reserved = 0
        self._lock = threading.Lock()
        self.deadlines: Deadlines | None = None  # every env call's deadline (None: calls run unbounded, in tests)

    def __len__(self) -> int:
        """Live envs, each sub-env of a vector env counted (readiness, drain and capacity all see this)."""
        return self._weight

    @property
    def load(self) -> int:
        """Live and reserved envs, each sub-env of a vector env counted: what capacity is measured in."""
        return self._weight + self._reserved

    @property
    def full(self) -> bool:
        return not self.has_room(1)

    def has_room(self, weight: int) -> bool:
        return self.load + weight <= self.settings.max_envs_per_worker

    @contextmanager
    def reserve(self, weight: int = 1) -> Iterator[None]:
        """Hold places for an env being created, so that concurrent creates cannot overshoot capacity."""
        with self._lock:
            if not self.has_room(weight):
                raise CapacityExceeded(
                    f"this worker holds {self.load} of its maximum of {self.settings.max_envs_per_worker} envs "
                    f"and cannot take {weight} more; close some or retry later",
                    retry_after=self.settings.retry_after_seconds,
                    details={"limit": self.settings.max_envs_per_worker},
                )
            self._reserved += weight
            self._publish()
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= weight
                self._publish()

    def add(self, record: EnvRecord) -> None:
        record.recent_episodes = deque(record.recent_episodes, maxlen=self.settings.episode_history)
        with self._lock:
            self._records[record.instance_id] = record
            self._weight += record.weight

    def find(self, instance_id: str) -> EnvRecord | None:
        return self._records.get(instance_id)

    # The visibility rule, here and nowhere else: a caller sees only its own tenant's envs, and another tenant's
    # env is refused exactly as an id that does not exist, at the very point where that is refused (whatever a
    # route checks first, its body say, the two read alike).

    def get(self, instance_id: str, caller: Caller) -> EnvRecord:
        record = self._records.get(instance_id)
        if record is None or record.tenant != caller.tenant.name:
            raise UnknownInstance(instance_id)
        return record

    def list(self, caller: Caller, selector: dict[str, str] | None = None) -> Records:
        """The caller's envs on this worker whose labels match every one of `selector` (none: all of them)."""
        tenant = caller.tenant.name
        return [r for r in self.snapshot() if r.tenant == tenant and r.matches(selector or {})]

    def touch(self, instance_id: str, caller: Caller) -> EnvRecord:
        """The record of a read that needs no lock (space descriptions, transitions): it still counts as a use."""
        record = self.get(instance_id, caller)
        record.last_used = time.monotonic()
        return record

    def use(self, instance_id: str, caller: Caller, seq: int | None = None) -> _Use:
        """The record, locked for this request alone under its deadline, its idle clock restarted (a context manager).
        A resend of the call running now (its `seq`) is answered at once (409 call_in_flight), never waits for the
        lock."""
        return _Use(self, instance_id, caller, seq)

    def _deadline(self, record: EnvRecord, caller: Caller) -> Any:
        if self.deadlines is None:
            return nullcontext()
        return self.deadlines.call(record.instance_id, record.env_id, record.tenant, caller.answer_late)

    @contextmanager
    def watch(self, record: EnvRecord, wait: float, caller: Caller) -> Iterator[bool]:
        """The env's lock for a viewer's read (a render), under its deadline: its idle clock is left alone, since
        watching is not using.

        Yields False, without the lock, when another request held it for longer than `wait` seconds.
        """
        if not record.lock.acquire(timeout=wait):
            yield False
            return
        try:
            if record.closed:
                raise _gone(record)
            if record.quarantined:
                raise EnvQuarantined(record.instance_id)
            with self._deadline(record, caller):
                yield True
        finally:
            record.lock.release()

    def quarantine(self, instance_id: str) -> None:
        """Mark an env whose call ran past its deadline (the watchdog's): every later call is refused."""
        record = self._records.get(instance_id)
        if record is not None:
            record.quarantined = True

    def pop(self, instance_id: str, caller: Caller, reason: str = "client") -> EnvRecord:
        """Remove and close an env; waits for a request in flight on it to finish."""
        return self._pop(self.get(instance_id, caller), reason)

    def _pop(self, record: EnvRecord, reason: str) -> EnvRecord:
        if not _wait_for(record):  # its lock may be held for good by a stuck call: removed without it
            self._close(record, reason, close_env=False)
            return record
        try:
            if record.closed:
                raise _gone(record)
            self._close(record, reason, close_env=not record.quarantined)
        finally:
            record.lock.release()
        return record

    def drop(self, record: EnvRecord, reason: str) -> None:
        """Remove and close an env whose lock the caller holds, or that is quarantined (parked or lost: `reason`
        says which)."""
        self._close(record, reason, close_env=not record.quarantined)

    @contextmanager
    def held(self, record: EnvRecord) -> Iterator[bool]:
        """The env's lock once its call in flight is answered (True); False, without it, when that call ran past its
        deadline and may never come back (the env is quarantined)."""
        if not _wait_for(record):
            yield False
            return
        try:
            yield True
        finally:
            record.lock.release()

    def pop_if_expired(self, instance_id: str) -> bool:
        """Close the env only if it is still idle past its TTL once its lock is ours."""
        record = self._records.get(instance_id)
        if record is None:
            return False
        if not record.lock.acquire(blocking=False):
            return False  # in use right now, so not idle: never wait behind a long request
        try:
            if record.closed or not record.expired(time.monotonic()):
                return False
            self._close(record, "ttl")
        finally:
            record.lock.release()
        return True

    def _close(self, record: EnvRecord, reason: str, close_env: bool = True) -> None:
        """Remove the env and close it; a quarantined one is only removed (a stuck call may still be inside it)."""
        with self._lock:
            if self._records.pop(record.instance_id, None) is not None:
                self._weight -= record.weight
            self._publish()
        record.closed = True
        if close_env:
            _close_quietly(record.env)
        if self.on_closed is not None:
            self.on_closed(record, reason)

    def _publish(self) -> None:
        if self.on_count is not None:
            self.on_count(self.load)

    def snapshot(self) -> Records:
        with self._lock:
            return list(self._records.values())

    def expired(self, now: float | None = None) -> Records:
        now = time.monotonic() if now is None else now
        return [r for r in self.snapshot() if r.expired(now)]

    def close_all(self, reason: str = "shutdown") -> int:
        records = self.snapshot()
        for record in records:
            with suppress(UnknownInstance):
                self._pop(record, reason)
        return len(records)


class _Use:
    """Registry.use's context manager (a class, not a generator: every step enters one)."""

    __slots__ = ("caller", "held", "instance_id", "record", "registry", "seq")

    def __init__(self, registry: Registry, instance_id: str, caller: Caller, seq: int | None) -> None:
        self.registry, self.instance_id, self.caller, self.seq = registry, instance_id, caller, seq

    def __enter__(self) -> EnvRecord:
        record = self.registry.get(self.instance_id, self.caller)
        if not record.lock.acquire(blocking=False):
            if self.seq is not None and record.running_seq == self.seq:
                raise CallInFlight(record.instance_id, self.seq)
            if not _wait_for(record):
                raise EnvQuarantined(record.instance_id)
        try:
            if record.closed:
                raise _gone(record)
            if record.quarantined:
                raise EnvQuarantined(record.instance_id)
            record.last_used = time.monotonic()
            record.running_seq = self.seq
            held = self.registry._deadline(record, self.caller)
            held.__enter__()
        except BaseException:
            record.running_seq = None
            record.lock.release()
            raise
        self.record, self.held = record, held
        return record

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        record = self.record
        try:
            suppressed = bool(self.held.__exit__(kind, exc, tb))
            if kind is None or suppressed:
                record.last_used = time.monotonic()
        finally:
            record.running_seq = None
            record.lock.release()
        return suppressed


def _wait_for(record: EnvRecord) -> bool:
    """Take the env's lock, held by a call in flight (True). That call ends within its deadline, or the env is
    quarantined then, and the wait ends too, without the lock (False)."""
    while not record.lock.acquire(timeout=0.25):
        if record.quarantined:
            return False
    return True


def _gone(record: EnvRecord) -> UnknownInstance | Moving:
    """What a request that waited for a closed env's lock is told: it moved (retry), or it is gone."""
    return Moving(record.instance_id) if record.moving else UnknownInstance(record.instance_id)


def _close_quietly(env: gym.Env[Any, Any] | gym.vector.VectorEnv[Any, Any, Any]) -> None:
    try:
        env.close()
    except Exception:  # an env that fails to close must not keep the others alive or crash a worker
        log.exception("closing an env failed")
