"""A quota store that restarts empty (a real Redis, flushed): creates wait with 503 quota_store_unavailable until
every live worker's heartbeat wrote its counts again, so a tenant at its quota never gets envs past it meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from gymserve.errors import QuotaExceeded, StoreUnavailable
from gymserve.tenancy.quotas import Quotas
from gymserve.tenancy.store import RedisStore
from gymserve.tenancy.tenants import Tenant
from stores import redis_server

TEAM = Tenant("team", max_envs=4)
BEAT = 0.2  # seconds: the warm-up after an empty restart is 1.5 beats


def test_after_an_empty_restart_creates_wait_until_the_counts_are_back(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        workers = [Quotas(RedisStore(url), f"w{i}", BEAT, retry_after=1) for i in range(2)]
        try:
            for worker in workers:
                worker.admit(TEAM, 2)  # a fresh store: no wait at the farm's first start
            with pytest.raises(QuotaExceeded):
                workers[0].admit(TEAM, 1)
            redis.Redis.from_url(url).flushall()  # the store restarts empty: the 4 envs are not counted there
            with pytest.raises(StoreUnavailable) as waited:
                workers[0].admit(TEAM, 1)
            assert waited.value.code == "quota_store_unavailable" and waited.value.headers["Retry-After"] == "1"
            with pytest.raises(StoreUnavailable):  # another worker waits too: the store says so, not the worker
                workers[1].admit(TEAM, 1)
            time.sleep(1.5 * BEAT + 0.3)  # each worker's heartbeat (started at its first admit) wrote its count back
            with pytest.raises(QuotaExceeded):  # the quota holds again: never 4 more envs
                workers[1].admit(TEAM, 1)
        finally:
            for worker in workers:
                worker.stop()
