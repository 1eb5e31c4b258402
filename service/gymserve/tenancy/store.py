"""Where the farm-wide counts live: Redis/Valkey when configured, else a SQLite file the workers of one
server share, else (a lone process, no replica) this process's memory.

Each worker keeps, per tenant, its own count of live envs in a hash (field: the worker) next to a
hash of deadlines the worker renews with a heartbeat. Readers sum only the fields whose worker is
still alive, so the envs of a worker or replica that died stop counting once its deadline passes,
without anyone having to notice the death. The check and the add run as one Lua script: two
replicas cannot both take the last place. Every key of one tenant shares a hash tag, so the script
touches one cluster slot. The create rate is a sliding window: a sorted set of create times.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol, TypeVar

from .. import secret

T = TypeVar("T")


class Admission(NamedTuple):
    verdict: str  # "ok", "quota" (value: envs in use) or "rate" (value: ms until a create is allowed)
    value: int


class Store(Protocol):
    def admit(
        self, tenant: str, worker: str, weight: int, max_envs: int | None, rate: int | None, life_ms: int
    ) -> Admission: ...

    def release(self, tenant: str, worker: str, weight: int) -> None: ...

    def beat(self, tenant: str, worker: str, count: int, life_ms: int) -> None: ...

    def usage(self, tenant: str) -> int: ...


WINDOW_MS = 60_000  # creates_per_minute: the window of the rate

# The store's epoch per tenant ("<id>:<warm until, ms>"): a worker that saw an epoch and finds none has met a store
# that restarted empty. Creates then wait (warming) until every live worker's heartbeat has written its counts
# again, instead of being admitted against counts that are not there yet. A farm's first start has no such wait:
# no worker saw an epoch before.
_EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The tenant's epoch id and how long it still warms (ms): made at the first call, warming when `known` (the epoch
-- the caller saw before) says the store lost it.
local function epoch_of(key, known, warm_ms, fresh_id)
  local epoch = redis.call('GET', key)
  if not epoch then
    local warm_until = 0
    if known ~= '' then warm_until = now + tonumber(warm_ms) end
    epoch = fresh_id .. ':' .. warm_until
    redis.call('SET', key, epoch)
  end
  local sep = string.find(epoch, ':', 1, true)
  return string.sub(epoch, 1, sep - 1), tonumber(string.sub(epoch, sep + 1)) - now
end
"""

_ADMIT = (
    _EPOCH
    + """
local epoch_id, warm_left = epoch_of(KEYS[4], ARGV[8], ARGV[9], ARGV[10])
if warm_left > 0 then return {'warming', warm_left, epoch_id} end
local me, weight, max_envs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rate, window, life = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rate >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'rate', tonumber(oldest[2]) + window - now, epoch_id}
  end
end
local deadlines = redis.call('HGETALL', KEYS[2])
for i = 1, #deadlines, 2 do
  if tonumber(deadlines[i + 1]) < now then
    redis.call('HDEL', KEYS[2], deadlines[i])
    redis.call('HDEL', KEYS[1], deadlines[i])
  end
end
local used = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if redis.call('HEXISTS', KEYS[2], counts[i]) == 1 then
    used = used + tonumber(counts[i + 1])
  else
    redis.call('HDEL', KEYS[1], counts[i])
  end
end
if max_envs >= 0 and used + weight > max_envs then
  return {'quota', used, epoch_id}
end
redis.call('HINCRBY', KEYS[1], me, weight)
redis.call('HSET', KEYS[2], me, now + life)
if rate >= 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[3], window)
end
return {'ok', used + weight, epoch_id}
"""
)

_BEAT = (
    _EPOCH
    + """
local epoch_id = epoch_of(KEYS[3], ARGV[4], ARGV[5], ARGV[6])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[3]))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return epoch_id
"""
)

_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  local deadline = redis.call('HGET', KEYS[2], counts[i])
  if deadline and tonumber(deadline) >= now then used = used + tonumber(counts[i + 1]) end
end
return used
"""


def _keys(tenant: str) -> list[str]:
    tag = "{gymserve:" + tenant + "}"
    return [f"{tag}:envs", f"{tag}:alive", f"{tag}:creates", f"{tag}:epoch"]


PASSWORD_VARIABLE = "GYMSERVE_STORE_PASSWORD"


def connect(url: str, timeout: float, **options: Any) -> Any:
    """A client of the farm's Redis or Valkey at `url`, with its password (GYMSERVE_STORE_PASSWORD or its _FILE, a
    secret: never in the URL that settings print)."""
    import redis

    password = secret.read(PASSWORD_VARIABLE) or None
    return redis.Redis.from_url(
        url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


class RedisStore:
    """The counts in Redis or Valkey (any server that runs Lua scripts: both do, and both are packaged everywhere)."""

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        import redis  # only with a tenants file and a store: the open server never imports it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        # No retries inside a call: one timeout is the longest a create waits, and the breaker decides when to retry.
        self.client: Any = connect(url, timeout, retry=Retry(NoBackoff(), 0))
        self._admit = self.client.register_script(_ADMIT)
        self._beat = self.client.register_script(_BEAT)
        self._usage = self.client.register_script(_USAGE)
        self._serial = 0
        self._serial_lock = threading.Lock()
        self.epochs: dict[str, str] = {}  # tenant -> the store's epoch this worker saw last (see _EPOCH)

    def admit(
        self, tenant: str, worker: str, weight: int, max_envs: int | None, rate: int | None, life_ms: int
    ) -> Admission:
        with self._serial_lock:
            self._serial += 1
            member = f"{worker}:{self._serial}"
        limit, per_window = -1 if max_envs is None else max_envs, -1 if rate is None else rate
        args = [worker, weight, limit, per_window, WINDOW_MS, life_ms, member, *self._epoch_args(tenant, life_ms)]
        verdict, value, seen = self._admit(_keys(tenant), args)
        self._saw(tenant, seen)
        return Admission(verdict.decode() if isinstance(verdict, bytes) else verdict, int(value))

    def release(self, tenant: str, worker: str, weight: int) -> None:
        self.client.hincrby(_keys(tenant)[0], worker, -weight)

    def beat(self, tenant: str, worker: str, count: int, life_ms: int) -> None:
        keys = _keys(tenant)
        seen = self._beat([keys[0], keys[1], keys[3]], [worker, count, life_ms, *self._epoch_args(tenant, life_ms)])
        self._saw(tenant, seen)

    def _epoch_args(self, tenant: str, life_ms: int) -> list[str | int]:
        """The epoch this worker saw, how long a store that lost it warms (1.5 beats), and an id for a new one."""
        return [self.epochs.get(tenant, ""), life_ms // 2, secrets.token_hex(8)]

    def _saw(self, tenant: str, epoch_id: Any) -> None:
        self.epochs[tenant] = epoch_id.decode() if isinstance(epoch_id, bytes) else str(epoch_id)

    def usage(self, tenant: str) -> int:
        return int(self._usage(_keys(tenant)[:2]))


class MemoryStore:
    """The same counts in this process: without a store, quotas hold per worker (the log says so at start)."""

    errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._envs: dict[str, int] = {}
        self._creates: dict[str, list[float]] = {}

    def admit(
        self, tenant: str, worker: str, weight: int, max_envs: int | None, rate: int | None, life_ms: int
    ) -> Admission:
        now = time.monotonic() * 1000
        with self._lock:
            times = [t for t in self._creates.get(tenant, []) if t > now - WINDOW_MS]
            self._creates[tenant] = times
            if rate is not None and len(times) >= rate:
                return Admission("rate", int(times[0] + WINDOW_MS - now))
            used = self._envs.get(tenant, 0)
            if max_envs is not None and used + weight > max_envs:
                return Admission("quota", used)
            self._envs[tenant] = used + weight
            if rate is not None:
                times.append(now)
            return Admission("ok", used + weight)

    def release(self, tenant: str, worker: str, weight: int) -> None:
        with self._lock:
            self._envs[tenant] = max(0, self._envs.get(tenant, 0) - weight)

    def beat(self, tenant: str, worker: str, count: int, life_ms: int) -> None:
        pass  # one process: nothing outlives it

    def usage(self, tenant: str) -> int:
        return self._envs.get(tenant, 0)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS envs (
  tenant TEXT NOT NULL, worker TEXT NOT NULL, count INTEGER NOT NULL, deadline INTEGER NOT NULL,
  PRIMARY KEY (tenant, worker)
);
CREATE TABLE IF NOT EXISTS creates (tenant TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS creates_by_tenant ON creates (tenant, at);
"""


class SqliteStore:
    """The same counts in a SQLite file that every worker of one replica shares (its runtime directory).

    SQLite is the standard library's embedded database: no extra service, and `BEGIN IMMEDIATE` takes the
    file's write lock, so the check and the add are one transaction for all the replica's workers. Rows carry
    the same deadlines as in Redis: a worker that died stops counting after three missed heartbeats. Times are
    wall-clock milliseconds (the workers share the clock; a runtime directory may outlive a reboot).
    """

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        self._local = threading.local()  # one connection per thread, opened in the worker (after the fork)
        self._while_locked(lambda: self._db().executescript(_SCHEMA))

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = self._while_locked(self._connect)
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            db.execute("PRAGMA synchronous=OFF")  # counts, not records: heartbeats rebuild them
        except BaseException:
            db.close()
            raise
        return db

    def _while_locked(self, setup: Callable[[], T]) -> T:
        """`setup` tried again while the file is locked, for up to `timeout`: the workers of a replica open a new
        file at once at boot, and SQLite answers a switch to WAL (or a schema read it must upgrade to a write)
        "database is locked" at once, not after its timeout, when another connection holds the write lock."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return setup()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")  # the write lock now: no other worker reads between our check and add
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def admit(
        self, tenant: str, worker: str, weight: int, max_envs: int | None, rate: int | None, life_ms: int
    ) -> Admission:
        now = int(time.time() * 1000)
        with self._transaction() as db:
            if rate is not None:
                db.execute("DELETE FROM creates WHERE tenant = ? AND at <= ?", (tenant, now - WINDOW_MS))
                made, oldest = db.execute(
                    "SELECT COUNT(*), MIN(at) FROM creates WHERE tenant = ?", (tenant,)
                ).fetchone()
                if made >= rate:
                    return Admission("rate", int(oldest) + WINDOW_MS - now)
            db.execute("DELETE FROM envs WHERE tenant = ? AND deadline < ?", (tenant, now))
            (used,) = db.execute("SELECT COALESCE(SUM(count), 0) FROM envs WHERE tenant = ?", (tenant,)).fetchone()
            if max_envs is not None and used + weight > max_envs:
                return Admission("quota", int(used))
            db.execute(
                "INSERT INTO envs VALUES (?, ?, ?, ?) ON CONFLICT (tenant, worker)"
                " DO UPDATE SET count = count + excluded.count, deadline = excluded.deadline",
                (tenant, worker, weight, now + life_ms),
            )
            if rate is not None:
                db.execute("INSERT INTO creates VALUES (?, ?)", (tenant, now))
            return Admission("ok", int(used) + weight)

    def release(self, tenant: str, worker: str, weight: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE envs SET count = MAX(0, count - ?) WHERE tenant = ? AND worker = ?", (weight, tenant, worker)
            )

    def beat(self, tenant: str, worker: str, count: int, life_ms: int) -> None:
        now = int(time.time() * 1000)
        with self._transaction() as db:
            if count > 0:
                db.execute(
                    "INSERT INTO envs VALUES (?, ?, ?, ?) ON CONFLICT (tenant, worker)"
                    " DO UPDATE SET count = excluded.count, deadline = excluded.deadline",
                    (tenant, worker, count, now + life_ms),
                )
            else:
                db.execute("DELETE FROM envs WHERE tenant = ? AND worker = ?", (tenant, worker))

    def usage(self, tenant: str) -> int:
        now = int(time.time() * 1000)
        row = (
            self._db()
            .execute("SELECT COALESCE(SUM(count), 0) FROM envs WHERE tenant = ? AND deadline >= ?", (tenant, now))
            .fetchone()
        )
        return int(row[0])
