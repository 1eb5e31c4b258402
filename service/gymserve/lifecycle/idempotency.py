"""Idempotent creates: an `Idempotency-Key` names one create, whose env is answered again to a resend of it.

Each worker keeps the keys of the creates it made (one worker per key: the create view sends a keyed create
to the worker its key hashes to). A key lives as long as its env and is forgotten with it (closed, reaped,
lost), so memory is bounded by the envs a worker may hold plus the creates in flight. A full worker passes a
keyed create on to a sibling and remembers where, for the env's TTL, within a bound (MAX_PASSED_ON).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import IdempotencyInFlight, IdempotencyMismatch, InvalidValue, Reply

HEADER = "Idempotency-Key"
# Visible ASCII, like any header value a client would make (a UUID, a hash, "run-7/env-3/attempt-0").
_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def checked_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise InvalidValue(HEADER, "expected 1 to 200 visible ASCII characters (a UUID, say)")
    return value


def slot_of(key: str, slots: list[int]) -> int:
    """The worker slot (of the live `slots`) that makes and remembers the creates of `key`: the same in every
    worker. Rendezvous hashing, so that a worker coming or going moves only the keys that were or become its own."""
    return max(slots, key=lambda slot: hashlib.sha256(f"{slot}:{key}".encode()).digest())


def digest(content_type: str | None, body: bytes) -> bytes:
    """What a resend must repeat: the same body, byte for byte, in the same encoding."""
    kind = (content_type or "").split(";")[0].strip().lower().encode()
    return hashlib.blake2b(kind + b"\n" + body, digest_size=16).digest()


# Most keys whose creates this worker passed on to a sibling (when it was full) that it keeps at once.
MAX_PASSED_ON = 10_000


@dataclass
class _Entry:
    digest: bytes
    instance_id: str | None = None  # None while the create runs
    answer: Any = None  # the create's answer (payload), sent again to a resend
    slot: int | None = None  # this worker was full: the sibling it passed the create on to, which keeps the key
    expires: float = 0.0  # when a passed-on entry is dropped (this worker cannot know when that env closes)


@dataclass(frozen=True)
class PassedOn:
    """A key whose create this worker passed on to a sibling: resends go there too."""

    slot: int


class Keys:
    """This worker's idempotency keys: in flight, or done with the env they made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._by_env: dict[str, str] = {}

    def claim(self, key: str, asked: bytes) -> Any:
        """The earlier answer of this key, PassedOn(slot) if a sibling made it, or None if this request is to run
        the create (then `done`, `pass_on` or `release`)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.slot is not None and entry.expires < time.monotonic():
                del self._entries[key]  # passed on long ago: the env it made is likely gone
                entry = None
            if entry is None:
                self._entries[key] = _Entry(asked)
                return None
        if entry.digest != asked:
            raise IdempotencyMismatch(
                f"{HEADER} {key[:100]!r} was used for a create with another body; use a new key for a new create",
                details={"field": HEADER},
            )
        if entry.slot is not None:
            return PassedOn(entry.slot)
        if entry.instance_id is None:
            raise IdempotencyInFlight(
                f"a create with {HEADER} {key[:100]!r} is still running; resend it when it has answered",
                details={"field": HEADER},
            )
        return entry.answer

    def done(self, key: str, instance_id: str, answer: Any) -> None:
        with self._lock:
            entry = self._entries[key]
            entry.instance_id, entry.answer = instance_id, answer
            self._by_env[instance_id] = key

    def pass_on(self, key: str, slot: int, keep_seconds: float) -> None:
        """This worker is full: the sibling `slot` makes the env and keeps the key; resends are sent there for
        `keep_seconds` (the env's TTL: a resend comes within seconds, and the env's life is unknown here)."""
        now = time.monotonic()
        with self._lock:
            passed = [k for k, e in self._entries.items() if e.slot is not None]
            expired = [k for k in passed if self._entries[k].expires < now]
            overflow = passed[: max(0, len(passed) - MAX_PASSED_ON + 1)]  # the oldest, beyond the bound
            for stale in {*expired, *overflow}:
                del self._entries[stale]
            entry = self._entries.get(key)
            if entry is not None:
                entry.slot, entry.expires = slot, now + keep_seconds

    def release(self, key: str) -> None:
        """The create failed: nothing was made, so the key may be used again."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.instance_id is None:
                del self._entries[key]

    def forget_env(self, instance_id: str) -> None:
        """The env is gone: its key goes with it (a resend after that makes a new env)."""
        with self._lock:
            key = self._by_env.pop(instance_id, None)
            if key is not None:
                self._entries.pop(key, None)

    def entry_of(self, instance_id: str) -> tuple[str, bytes, Any] | None:
        """The key that made this env, its body's digest and its answer: what a park carries to the adopter."""
        with self._lock:
            key = self._by_env.get(instance_id)
            entry = None if key is None else self._entries.get(key)
            return None if key is None or entry is None else (key, entry.digest, entry.answer)

    def restore(self, key: str, digest: bytes, answer: Any, instance_id: str) -> None:
        """An adopted env's key: a resend of its create is answered again here."""
        with self._lock:
            self._entries[key] = _Entry(digest, instance_id, answer)
            self._by_env[instance_id] = key

    def __len__(self) -> int:
        return len(self._entries)

    def create_once(self, key: str, asked: bytes, once: Once) -> tuple[str, Any]:
        """A create named by `key` on the worker the key belongs to: ("made", its answer), ("replayed", the first
        answer) for a resend of the same body, or ("passed", a sibling's answer) when a sibling makes or made it.

        Another body under the same key is a 422; a resend while the first create runs, a 409 (docs/lifecycle.md).
        """
        earlier = self.claim(key, asked)
        if isinstance(earlier, PassedOn):  # this worker was full: the sibling it chose has the key
            return "passed", once.forward(earlier.slot)
        if earlier is not None:  # a resend of a create that was made: its env, not a second one
            return "replayed", earlier
        try:
            sibling = once.sibling()
            if sibling is not None:  # full here, room there: it makes the env and keeps the key; resends follow
                self.pass_on(key, sibling, once.keep_seconds)
                answer = once.forward(sibling)
                if answer[0] >= 400:  # nothing was made there: the key is free again
                    self.release(key)
                return "passed", answer
            instance_id, made = once.make()
        except BaseException:
            self.release(key)
            raise
        self.done(key, instance_id, made)
        if not once.alive(instance_id):  # closed before its key was kept (a bulk delete): drop it
            self.forget_env(instance_id)
        return "made", made


@dataclass(frozen=True)
class Once:
    """What a keyed create needs of its worker: make the env here (its id and answer), pick the sibling that makes
    it instead (None: here), forward the create to a sibling, and whether an env still lives."""

    make: Callable[[], tuple[str, Any]]  # the new env's id, and the answer a resend gets again
    sibling: Callable[[], int | None]
    forward: Callable[[int], Reply]
    alive: Callable[[str], bool]
    keep_seconds: float
