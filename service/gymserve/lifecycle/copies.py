"""An env's state copied: in memory for a fork (deepcopy), or sealed into an authenticated blob for a snapshot."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from gymnasium.vector import SyncVectorEnv

from .. import secret
from ..errors import InvalidSnapshot, InvalidValue, NotSupported
from ..settings import SettingsError
from . import pickling
from .registry import EnvRecord

if TYPE_CHECKING:
    from ..pipeline.models import CreateRequest


def copy_env(env: Any) -> Any:
    """A copy of `env` (random generators included, pickling.py's rules), or a 422 not_supported that says what
    could not be copied."""
    try:
        return pickling.copied(_portable(env))
    except Exception as exc:  # whatever an env holds that cannot be copied (a pygame clock, a socket, a lock)
        raise _not_copyable(exc) from None


def _not_copyable(exc: Exception) -> NotSupported:
    return NotSupported(
        f"this env cannot be copied: {type(exc).__name__}: {str(exc)[:200]} (an env holding a renderer's window or "
        "clock, a socket or a lock cannot be forked or snapshotted; one created without render_mode often can)",
        details={"field": "instance_id"},
    )


# --- snapshots: the env's state pickled, then sealed with HMAC-SHA256 under the farm's key --------------------

KEY_VARIABLE = "GYMSERVE_SNAPSHOT_KEY"
MIN_KEY_LENGTH = 32
# A signed record (a snapshot, a parked env): magic, a 32-byte MAC, when it expires (8 bytes, unix seconds, 0: never),
# the pickle. The MAC covers all of it and the record's binding (its tenant; a parked env's id too), which is not
# carried: a record opens only for the binding it was sealed for, and never after it expired.
_MAGIC = b"GSR2"
_EXPIRY_SIZE = 8
_MAC_SIZE = hashlib.sha256().digest_size


@dataclass(frozen=True)
class EnvState:
    """What a snapshot holds: the env and what the server knows about it (not its id, counters or TTL)."""

    env_id: str
    env: Any
    num_envs: int | None
    autoreset_mode: str | None
    auto_reset: bool
    seed: int | None
    episode_over: bool
    labels: dict[str, str]
    # The running episode as operations.py keeps it: an auto_reset env's pending reset changes what its next
    # step does; the running return and length (a vector env's tally) carry on in the copy's statistics.
    autoreset_pending: bool = False
    episode_return: float = 0.0
    episode_length: int = 0
    vector_tally: Any = None

    @property
    def weight(self) -> int:
        return self.num_envs or 1


class Sealer:
    """Seals env states into blobs and opens them again, only if this farm's key made them.

    The key is a secret: it comes from the environment (GYMSERVE_SNAPSHOT_KEY, at least 32 characters, the
    same on every replica of the farm), never from Settings, so it is never printed or logged. Without it,
    snapshots are off: a random key per process would make blobs that the other workers cannot open.
    """

    def __init__(self, key: bytes | None, max_bytes: int) -> None:
        self._key = key
        self.max_bytes = max_bytes

    @classmethod
    def from_environ(cls, max_bytes: int, environ: Mapping[str, str] | None = None) -> Sealer:
        """The farm's key from GYMSERVE_SNAPSHOT_KEY, or from the file GYMSERVE_SNAPSHOT_KEY_FILE names (a mounted
        secret, or a volume that compose's key service wrote once)."""
        raw = secret.read(KEY_VARIABLE, environ)
        if raw and len(raw) < MIN_KEY_LENGTH:
            raise SettingsError(f"{KEY_VARIABLE}: use at least {MIN_KEY_LENGTH} characters (a random secret)")
        return cls(raw.encode() or None, max_bytes)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, state: Any, bound: bytes = b"", expires_at: float = 0.0) -> bytes:
        """`state` pickled and signed for `bound` (what it belongs to) until `expires_at` (0: never). Pickling stops
        as soon as the record would pass the limit, so an env too large is never held in memory twice."""
        key = self._checked_key()
        expiry = int(expires_at).to_bytes(_EXPIRY_SIZE, "big")
        room = self.max_bytes - len(_MAGIC) - _MAC_SIZE - _EXPIRY_SIZE
        try:
            payload = pickling.dumps(picklable(state) if isinstance(state, EnvState) else state, room)
        except pickling.TooLarge:
            raise NotSupported(
                f"this env's snapshot would be over the server's limit of {self.max_bytes} bytes "
                "(GYMSERVE_MAX_SNAPSHOT_BYTES)",
                details={"field": "snapshot", "limit": self.max_bytes},
            ) from None
        except Exception as exc:
            raise _not_copyable(exc) from None
        return _MAGIC + _mac(key, expiry + payload, bound) + expiry + payload

    def open(self, blob: bytes, bound: bytes = b"", kind: type = EnvState) -> Any:
        """The state sealed in `blob` for `bound`; a 422 for anything this farm's key did not seal for it, or that
        expired, which is never unpickled."""
        key = self._checked_key()
        if len(blob) > self.max_bytes:
            raise InvalidSnapshot(f"the snapshot exceeds the server's limit of {self.max_bytes} bytes")
        start = len(_MAGIC) + _MAC_SIZE
        if not blob.startswith(_MAGIC) or len(blob) <= start + _EXPIRY_SIZE:
            raise InvalidSnapshot(
                "this is not a gymserve snapshot of this version (GET /v2/envs/<id>/snapshot makes them)"
            )
        mac, signed = blob[len(_MAGIC) : start], blob[start:]
        if not hmac.compare_digest(mac, _mac(key, signed, bound)):
            raise InvalidSnapshot(
                "the snapshot was altered, made for another tenant, or made by a farm with another "
                "GYMSERVE_SNAPSHOT_KEY; it was not opened"
            )
        expires_at = int.from_bytes(signed[:_EXPIRY_SIZE], "big")
        if expires_at and expires_at < time.time():
            raise InvalidSnapshot("the snapshot expired (GYMSERVE_SNAPSHOT_TTL_SECONDS); make a new one")
        try:  # authenticated: this farm made it. It can still fail where the code differs (another gymnasium).
            state = pickle.loads(signed[_EXPIRY_SIZE:])
        except Exception as exc:
            raise InvalidSnapshot(
                f"the snapshot could not be restored here: {type(exc).__name__}: {exc}"[:300]
            ) from None
        if not isinstance(state, kind):
            raise InvalidSnapshot("the snapshot holds no env state")
        return state

    def _checked_key(self) -> bytes:
        if self._key is None:
            raise NotSupported(
                f"snapshots are off on this server: set {KEY_VARIABLE} (a secret of at least {MIN_KEY_LENGTH} "
                "characters, the same on every replica of the farm) to turn them on",
                details={"field": "snapshot"},
            )
        return self._key


def movable(record: EnvRecord) -> bool:
    """Whether the env's state can be copied (asked once per env: what it holds does not change kind)."""
    if record.movable is None:
        try:
            pickling.dumps(_portable(record.env))
            record.movable = True
        except Exception:  # whatever pickle refuses (a lock, a socket, a native handle)
            record.movable = False
    return record.movable


def picklable(state: EnvState) -> EnvState:
    return dataclasses.replace(state, env=_portable(state.env))


def _portable(env: Any) -> Any:
    """A vector env keeps the closures that made its sub-envs (`env_fns`, local functions that cannot be pickled)
    and never calls them again: a shallow copy without them pickles its sub-envs, which hold all of its state."""
    if isinstance(env, SyncVectorEnv):
        env = copy.copy(env)
        env.env_fns = ()
    return env


def _mac(key: bytes, signed: bytes, bound: bytes) -> bytes:
    return hmac.new(key, _MAGIC + len(bound).to_bytes(4, "big") + bound + signed, hashlib.sha256).digest()


def snapshot_binding(tenant: str) -> bytes:
    """What a snapshot is bound to: its tenant (the farm is its key). Another tenant's restore reads as invalid."""
    return b"snapshot\0" + tenant.encode()


# --- what a fork, snapshot or restore carries of an env ----------------------------------------------------------


def _carried(source: EnvRecord | EnvState) -> dict[str, Any]:
    """Every field of EnvState, which EnvRecord has under the same names (labels and the vector tally are the
    callers' to copy)."""
    return {f.name: getattr(source, f.name) for f in fields(EnvState) if f.name != "labels"}


def state_of(record: EnvRecord, env: object) -> EnvState:
    """`record`'s state with `env` (the record's own env for a snapshot, a deep copy of it for a fork)."""
    carried = _carried(record)
    carried.update(env=env, vector_tally=copy.deepcopy(record.vector_tally))
    return EnvState(**carried, labels=dict(record.labels))


def record_of(state: EnvState, instance_id: str, ttl: float, labels: dict[str, str] | None, tenant: str) -> EnvRecord:
    """A new env's record in `state`, under a new id: labels are the state's unless given."""
    return EnvRecord(
        **_carried(state),
        instance_id=instance_id,
        ttl=ttl,
        labels=dict(state.labels if labels is None else labels),
        tenant=tenant,
    )


# What a restore takes from its snapshot, never from the body.
_MADE_BY_SNAPSHOT = ("kwargs", "max_episode_steps", "auto_reset", "disable_env_checker", "wrappers")


def check_restore(spec: CreateRequest) -> None:
    """A restore names only env_id, ttl and labels (and, to check them, num_envs and autoreset_mode)."""
    for name in _MADE_BY_SNAPSHOT:
        if getattr(spec, name):
            raise InvalidValue(name, "a restore takes the env from its snapshot: give only env_id, ttl and labels")


def opened(sealer: Sealer, spec: CreateRequest, tenant: str) -> EnvState:
    """The state in `spec.snapshot`, if this farm sealed it for `tenant` and it is of the env `spec` names."""
    assert spec.snapshot is not None
    state: EnvState = sealer.open(spec.snapshot, snapshot_binding(tenant))
    for name, given, held in (
        ("env_id", spec.env_id, state.env_id),
        ("num_envs", spec.num_envs, state.num_envs),
        ("autoreset_mode", spec.autoreset_mode, state.autoreset_mode),
    ):
        if given is not None and given != held:
            raise InvalidValue(name, f"the snapshot's is {held!r}, not {given!r}")
    return state


def made_with(env: Any) -> dict[str, Any]:
    """The constructor arguments an env (a vector env: its sub-envs) was made with, as its spec says."""
    one = env.envs[0] if isinstance(env, SyncVectorEnv) and env.envs else env
    spec = getattr(one, "spec", None)
    return dict(spec.kwargs) if spec is not None else {}
