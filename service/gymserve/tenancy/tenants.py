"""The tenants file: a TOML file of tenants, each with the sha256 digests of its keys and its limits."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ANONYMOUS_NAME = "anonymous"
# Tenant names become metric labels and travel between workers: short, plain, bounded.
NAME_PATTERN = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_LIMITS = {"max_envs": int, "max_ttl_seconds": float, "creates_per_minute": int}


class TenantsFileError(ValueError):
    """The tenants file cannot be used; the message names the file and what is wrong in it."""


@dataclass(frozen=True)
class Tenant:
    """One tenant and its limits (None: no limit of its own beyond the server's)."""

    name: str
    digests: tuple[bytes, ...] = ()
    max_envs: int | None = None
    max_ttl_seconds: float | None = None
    creates_per_minute: int | None = None


ANONYMOUS = Tenant(ANONYMOUS_NAME)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse(text: str, source: str) -> dict[str, Tenant]:
    """The tenants of a file's text, by name; TenantsFileError names `source` and the faulty entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TenantsFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"tenants"}
    if unknown or not isinstance(data.get("tenants", {}), dict):
        raise TenantsFileError(f"{source}: expected only [tenants.<name>] tables, found {sorted(unknown)}")
    tenants: dict[str, Tenant] = {}
    owners: dict[bytes, str] = {}
    for name, entry in data.get("tenants", {}).items():
        tenant = _tenant(name, entry, f"{source}: [tenants.{name}]")
        for digest in tenant.digests:
            if digest in owners:
                raise TenantsFileError(
                    f"{source}: a key digest of [tenants.{name}] is also [tenants.{owners[digest]}]'s"
                )
            owners[digest] = name
        tenants[name] = tenant
    return tenants


def _tenant(name: str, entry: Any, where: str) -> Tenant:
    if not re.fullmatch(NAME_PATTERN, name) or name == ANONYMOUS_NAME:
        raise TenantsFileError(f"{where}: a name of lowercase letters, digits, '-' and '_' (not '{ANONYMOUS_NAME}')")
    if not isinstance(entry, dict):
        raise TenantsFileError(f"{where}: expected a table")
    unknown = set(entry) - {"key_sha256", *_LIMITS}
    if unknown:
        raise TenantsFileError(f"{where}: unknown keys {sorted(unknown)}")
    keys = entry.get("key_sha256", [])
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and _DIGEST.fullmatch(k) for k in keys):
        raise TenantsFileError(f"{where}: key_sha256 must be a list of lowercase hex sha256 digests (64 characters)")
    limits: dict[str, Any] = {}
    for field, kind in _LIMITS.items():
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value % 1):
            raise TenantsFileError(f"{where}: {field} must be a positive {'integer' if kind is int else 'number'}")
        limits[field] = kind(value)
    return Tenant(name, tuple(bytes.fromhex(k) for k in keys), **limits)


def load(path: str) -> dict[str, Tenant]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise TenantsFileError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse(text, path)


class Directory:
    """Who a key belongs to. Without a file everyone is the anonymous tenant (the open server of old).

    With a file, it is read again when its mtime changes (looked at most every `reload_seconds`):
    a bad file keeps the last good one and says why in the log.
    """

    def __init__(self, path: str = "", reload_seconds: float = 5.0) -> None:
        self.path = path
        self.reload_seconds = reload_seconds
        self._lock = threading.Lock()
        self._tenants: dict[str, Tenant] = load(path) if path else {}
        self._mtime = _mtime(path) if path else None
        self._checked = time.monotonic()

    @property
    def open(self) -> bool:
        return not self.path

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant of an `Authorization: Bearer <key>` header, or None for a missing or unknown key."""
        if self.open:
            return ANONYMOUS
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = digest_of(key.strip())
        found = None
        for tenant in self._current().values():
            for known in tenant.digests:
                # Compare every digest, found or not: the time taken says nothing about which one matched.
                if hmac.compare_digest(known, digest):
                    found = tenant
        return found

    def by_name(self, name: str) -> Tenant | None:
        """A tenant named by a sibling worker that authenticated the request."""
        if self.open:
            return ANONYMOUS if name == ANONYMOUS_NAME else None
        return self._current().get(name)

    def names(self) -> list[str]:
        return [ANONYMOUS_NAME] if self.open else sorted(self._current())

    def _current(self) -> dict[str, Tenant]:
        now = time.monotonic()
        if now - self._checked >= self.reload_seconds:
            with self._lock:
                if now - self._checked >= self.reload_seconds:
                    self._checked = now
                    self._reload_if_changed()
        return self._tenants

    def _reload_if_changed(self) -> None:
        mtime = _mtime(self.path)
        if mtime == self._mtime:
            return
        try:
            self._tenants = load(self.path)
        except TenantsFileError as exc:
            log.error("tenants file not reloaded, keeping the last good one: %s", exc)
        else:
            log.info("tenants file reloaded: %d tenants", len(self._tenants))
        self._mtime = mtime  # a bad version is reported once, not on every check


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None
