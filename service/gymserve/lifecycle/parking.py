"""The park store: where each moved env is now (parked, moving, held by a named worker, or lost), and the parked
envs' signed records.

A lone server parks in a directory (GYMSERVE_STATE_DIR, one per port); a farm parks in the Redis or Valkey it
names with GYMSERVE_STORE_URL, which every replica reaches. Either way the one claim of a parked env is atomic:
a rename of its file, or a Lua script. Records are signed and bound to their id and tenant by the caller
(copies.Sealer); the store only keeps bytes and the plain facts a list needs (tenant, env id, labels).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from ..tenancy import store

State = Literal["parked", "moving", "held", "lost"]
# A claim older than this whose adopter never settled it (it died adopting) reads as lost, not as moving forever.
STALE_CLAIM_SECONDS = 60.0


@dataclass(frozen=True)
class Parked:
    """A parked env: what a list shows of it, and its signed record."""

    tenant: str
    env_id: str
    labels: dict[str, str] = field(default_factory=dict)
    expires_at: float = 0.0  # wall clock; 0: never (no idle TTL)
    blob: bytes = b""
    weight: int = 1  # what it counts against capacity (a vector env: its sub-envs)
    summary: dict[str, Any] = field(default_factory=dict)  # what a list shows of it (its state: "parked")

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires_at) and (time.time() if now is None else now) > self.expires_at


@dataclass(frozen=True)
class Whereabouts:
    state: State
    holder: str = ""  # held: "<node>.<slot>-<generation>" of the worker that adopted it
    reason: str = ""  # lost: why
    parked: Parked | None = None  # parked: its facts (no blob)


class ParkStore(Protocol):
    def put(self, instance_id: str, parked: Parked) -> None: ...

    def claim(self, instance_id: str) -> Parked | None:
        """The parked env, now moving to the caller, or None if it was not parked (or another claim won)."""

    def settle(self, instance_id: str, holder: str) -> None:
        """The claimed env lives in `holder` now."""

    def unclaim(self, instance_id: str, parked: Parked) -> None:
        """The claimer could not take it (full): parked again, as it was."""

    def lose(self, instance_id: str, reason: str) -> None: ...

    def forget(self, instance_id: str) -> None:
        """The env is closed: no record of it stays."""

    def where(self, instance_id: str) -> Whereabouts | None: ...

    def parked(self, tenant: str) -> list[tuple[str, Parked]]:
        """The tenant's parked envs (without their blobs), unexpired."""

    def count(self) -> int:
        """How many envs are parked (for the gauge)."""

    def sweep(self) -> list[str]:
        """Drop the parked envs whose idle TTL ran out while parked; their ids."""

    def count_of(self, tenant: str) -> int:
        """How many (sub-)envs the tenant has parked: they count against its max_envs."""

    def beat(self, holder: str, seconds: float) -> None:
        """`holder` (a worker that adopted envs) is alive for `seconds` more."""

    def alive(self, holder: str) -> bool:
        """Whether `holder` beat lately: a holder that did not crashed with the envs it held."""


# --- a directory, for one server ----------------------------------------------------------------------------------


class DirStore:
    """One file per id in a subdirectory per state; a claim is a rename from parked/ to moving/, which only one
    process can win. Entries are written to a temporary name and renamed, so no reader sees half a record."""

    STATES: tuple[State, ...] = ("parked", "moving", "held", "lost")

    def __init__(self, path: str) -> None:
        self.path = path
        for state in self.STATES:
            os.makedirs(os.path.join(path, state), mode=0o700, exist_ok=True)

    def _file(self, state: State, instance_id: str) -> str:
        return os.path.join(self.path, state, instance_id)

    def _write(self, state: State, instance_id: str, head: dict[str, Any], blob: bytes = b"") -> None:
        target = self._file(state, instance_id)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "wb") as out:
            out.write(orjson.dumps(head) + b"\n" + blob)
        os.replace(temporary, target)

    def _read(self, state: State, instance_id: str) -> tuple[dict[str, Any], bytes] | None:
        try:
            with open(self._file(state, instance_id), "rb") as source:
                head, _, blob = source.read().partition(b"\n")
        except FileNotFoundError:
            return None
        return orjson.loads(head), blob

    def _drop(self, *states: State, instance_id: str) -> None:
        for state in states:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(state, instance_id))

    def put(self, instance_id: str, parked: Parked) -> None:
        self._write("parked", instance_id, _head(parked), parked.blob)
        self._drop("moving", "held", "lost", instance_id=instance_id)

    def claim(self, instance_id: str) -> Parked | None:
        try:
            os.rename(self._file("parked", instance_id), self._file("moving", instance_id))
        except FileNotFoundError:
            return None  # not parked, or another process claimed it first
        os.utime(self._file("moving", instance_id))  # the claim's age: see STALE_CLAIM_SECONDS
        found = self._read("moving", instance_id)
        return None if found is None else _parked(*found)

    def settle(self, instance_id: str, holder: str) -> None:
        self._write("held", instance_id, {"holder": holder})
        self._drop("moving", instance_id=instance_id)

    def unclaim(self, instance_id: str, parked: Parked) -> None:
        self.put(instance_id, parked)

    def lose(self, instance_id: str, reason: str) -> None:
        self._write("lost", instance_id, {"reason": reason})
        self._drop("parked", "moving", "held", instance_id=instance_id)

    def forget(self, instance_id: str) -> None:
        self._drop(*self.STATES, instance_id=instance_id)

    def where(self, instance_id: str) -> Whereabouts | None:
        parked = self._read("parked", instance_id)
        if parked is not None:
            return Whereabouts("parked", parked=_parked(parked[0], b""))
        try:
            age = time.time() - os.stat(self._file("moving", instance_id)).st_mtime
        except FileNotFoundError:
            pass
        else:
            return Whereabouts("lost", reason="adopt_failed") if age > STALE_CLAIM_SECONDS else Whereabouts("moving")
        for state in ("held", "lost"):
            found = self._read(state, instance_id)
            if found is not None:
                return Whereabouts(state, holder=found[0].get("holder", ""), reason=found[0].get("reason", ""))
        return None

    def parked(self, tenant: str) -> list[tuple[str, Parked]]:
        found = []
        for name in os.listdir(os.path.join(self.path, "parked")):
            entry = self._read("parked", name) if not name.endswith(".tmp") else None
            if entry is not None and entry[0].get("tenant") == tenant:
                parked = _parked(entry[0], b"")
                if not parked.expired():
                    found.append((name, parked))
        return found

    def count(self) -> int:
        return sum(not name.endswith(".tmp") for name in os.listdir(os.path.join(self.path, "parked")))

    def count_of(self, tenant: str) -> int:
        return sum(parked.weight for _, parked in self.parked(tenant))

    def beat(self, holder: str, seconds: float) -> None:
        pass  # one server: its holders are siblings, whose sockets say whether they live

    def alive(self, holder: str) -> bool:
        return True

    def sweep(self) -> list[str]:
        gone = []
        for name in os.listdir(os.path.join(self.path, "parked")):
            entry = self._read("parked", name) if not name.endswith(".tmp") else None
            if entry is not None and _parked(entry[0], b"").expired():
                self._drop("parked", instance_id=name)
                gone.append(name)
        return gone


def _head(parked: Parked) -> dict[str, Any]:
    return {
        "tenant": parked.tenant,
        "env_id": parked.env_id,
        "labels": parked.labels,
        "expires_at": parked.expires_at,
        "weight": parked.weight,
        "summary": parked.summary,
    }


def _parked(head: dict[str, Any], blob: bytes) -> Parked:
    labels, weight = dict(head.get("labels") or {}), int(head.get("weight", 1))
    return Parked(
        head["tenant"], head["env_id"], labels, float(head["expires_at"]), blob, weight, head.get("summary", {})
    )


# --- Redis or Valkey, for a farm -----------------------------------------------------------------------------------

_CLAIM = """
if redis.call('HGET', KEYS[1], 'state') ~= 'parked' then return false end
redis.call('HSET', KEYS[1], 'state', 'moving', 'since', redis.call('TIME')[1])
redis.call('PERSIST', KEYS[1])
return redis.call('HMGET', KEYS[1], 'tenant', 'env_id', 'labels', 'expires_at', 'blob', 'weight', 'summary')
"""
_FIELDS = ("state", "holder", "reason", "since", "tenant", "env_id", "labels", "expires_at", "weight", "summary")
_ALL_PARKED = "gymserve:parked"  # every parked id, for the gauge (claims and sweeps take theirs out)
KEEP_SETTLED_SECONDS = 7 * 86_400  # a held or lost record outlives any env that could still ask for it


class RedisStore:
    """A hash per moved id (its state, facts and blob) and a set of each tenant's parked ids, for lists."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        import redis  # only a farm with a store imports it

        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self.client: Any = store.connect(url, timeout)
        self._claim = self.client.register_script(_CLAIM)

    @staticmethod
    def _key(instance_id: str) -> str:
        return f"gymserve:park:{instance_id}"

    @staticmethod
    def _tenant_key(tenant: str) -> str:
        return f"gymserve:parked:{tenant}"

    def put(self, instance_id: str, parked: Parked) -> None:
        key = self._key(instance_id)
        head = _head(parked)
        with self.client.pipeline() as pipe:
            pipe.delete(key)
            texts = {name: json.dumps(head[name]) for name in ("labels", "summary")}
            pipe.hset(key, mapping={"state": "parked", **head, **texts, "blob": parked.blob})
            if parked.expires_at:
                pipe.pexpireat(key, int(parked.expires_at * 1000))
            pipe.sadd(self._tenant_key(parked.tenant), instance_id)
            pipe.sadd(_ALL_PARKED, instance_id)
            pipe.execute()

    def claim(self, instance_id: str) -> Parked | None:
        found = self._claim([self._key(instance_id)])
        if not found:
            return None
        tenant, env_id, labels, expires_at, blob, weight, summary = found
        self.client.srem(self._tenant_key(tenant.decode()), instance_id)
        self.client.srem(_ALL_PARKED, instance_id)
        facts = (json.loads(labels), float(expires_at), blob, int(weight or 1), json.loads(summary or b"{}"))
        return Parked(tenant.decode(), env_id.decode(), *facts)

    def _settled(self, instance_id: str, **fields: str) -> None:
        key = self._key(instance_id)
        with self.client.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, KEEP_SETTLED_SECONDS)
            pipe.execute()

    def settle(self, instance_id: str, holder: str) -> None:
        self._settled(instance_id, state="held", holder=holder)

    def unclaim(self, instance_id: str, parked: Parked) -> None:
        self.put(instance_id, parked)

    def lose(self, instance_id: str, reason: str) -> None:
        self._settled(instance_id, state="lost", reason=reason)

    def forget(self, instance_id: str) -> None:
        self.client.delete(self._key(instance_id))

    def where(self, instance_id: str) -> Whereabouts | None:
        values = self.client.hmget(self._key(instance_id), _FIELDS)
        got = _decoded(values)
        state = got["state"]
        if not state:
            return None
        if state == "moving" and time.time() - float(got["since"] or 0) > STALE_CLAIM_SECONDS:
            return Whereabouts("lost", reason="adopt_failed")
        parked = _from_fields(got) if state == "parked" else None
        return Whereabouts(state, holder=got["holder"], reason=got["reason"], parked=parked)  # type: ignore[arg-type]

    def parked(self, tenant: str) -> list[tuple[str, Parked]]:
        ids = sorted(member.decode() for member in self.client.smembers(self._tenant_key(tenant)))
        with self.client.pipeline() as pipe:
            for instance_id in ids:
                pipe.hmget(self._key(instance_id), _FIELDS)
            rows = pipe.execute()
        found, stale = [], []
        for instance_id, values in zip(ids, rows, strict=True):
            got = _decoded(values)
            if got["state"] == "parked" and got["tenant"] == tenant:
                found.append((instance_id, _from_fields(got)))
            else:
                stale.append(instance_id)  # claimed, expired or closed since
        if stale:
            self.client.srem(self._tenant_key(tenant), *stale)
        return found

    def sweep(self) -> list[str]:
        return []  # each parked record expires by itself (PEXPIREAT)

    def beat(self, holder: str, seconds: float) -> None:
        self.client.set(f"gymserve:alive:{holder}", 1, px=int(seconds * 1000))

    def alive(self, holder: str) -> bool:
        return bool(self.client.exists(f"gymserve:alive:{holder}"))

    def count_of(self, tenant: str) -> int:
        return sum(parked.weight for _, parked in self.parked(tenant))

    def count(self) -> int:
        """Parked ids, less those whose record expired (dropped from the set as they are found)."""
        ids = [member.decode() for member in self.client.smembers(_ALL_PARKED)]
        with self.client.pipeline() as pipe:
            for instance_id in ids:
                pipe.hget(self._key(instance_id), "state")
            states = pipe.execute()
        stale = [instance_id for instance_id, state in zip(ids, states, strict=True) if state != b"parked"]
        if stale:
            self.client.srem(_ALL_PARKED, *stale)
        return len(ids) - len(stale)


def _decoded(values: list[bytes | None]) -> dict[str, str]:
    return {name: (value.decode() if value is not None else "") for name, value in zip(_FIELDS, values, strict=True)}


def _from_fields(got: dict[str, str]) -> Parked:
    labels, summary = json.loads(got["labels"] or "{}"), json.loads(got["summary"] or "{}")
    weight = int(got["weight"] or 1)
    return Parked(got["tenant"], got["env_id"], labels, float(got["expires_at"] or 0), b"", weight, summary)
