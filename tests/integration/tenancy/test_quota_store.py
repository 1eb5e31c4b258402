"""The farm-wide counts in a real Redis: one check-and-add for every replica, and no usage left by the dead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gymserve.errors import QuotaExceeded, StoreUnavailable
from gymserve.tenancy.quotas import Quotas
from gymserve.tenancy.store import RedisStore
from gymserve.tenancy.tenants import Tenant
from quota_scenarios import the_create_rate_holds_across_workers, two_workers_share_one_quota
from stores import redis_server

TEAM = Tenant("team-a", max_envs=5, creates_per_minute=1000)


STARTED: list[Quotas] = []


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url
        while STARTED:  # their heartbeat threads, before the store they beat to goes away
            STARTED.pop().stop()


def quotas(url: str, worker: str, heartbeat: float = 10.0) -> Quotas:
    made = Quotas(RedisStore(url), worker, heartbeat, retry_after=5)
    STARTED.append(made)
    return made


def test_workers_of_different_replicas_share_one_quota(url: str) -> None:
    here, there = quotas(url, "replica-0.w0"), quotas(url, "replica-1.w0")
    two_workers_share_one_quota(here, there)


def test_concurrent_creates_never_overshoot_the_quota(url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    workers = [quotas(url, f"replica-{i}") for i in range(4)]

    def try_admit(i: int) -> bool:
        try:
            workers[i % 4].admit(TEAM, 1)
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(try_admit, range(40)))
    assert admitted == 5


def test_the_envs_of_a_worker_that_stopped_beating_stop_counting(url: str) -> None:
    dead, alive = quotas(url, "gone", heartbeat=0.5), quotas(url, "alive", heartbeat=0.5)
    dead.admit(TEAM, 4)
    alive.admit(TEAM, 1)
    dead.stop()  # its process died: no more heartbeats, and nobody released its envs
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive.beat()
        try:
            alive.admit(TEAM, 3)
            break
        except QuotaExceeded:
            time.sleep(0.2)
    else:
        pytest.fail("the dead worker's envs still count after three missed heartbeats")
    assert alive.store is not None and alive.store.usage("team-a") == 4


def test_a_heartbeat_repairs_a_store_that_lost_its_data(url: str) -> None:
    worker = quotas(url, "w")
    worker.admit(TEAM, 4)
    assert worker.store is not None
    worker.store.client.flushall()  # type: ignore[attr-defined]
    assert worker.store.usage("team-a") == 0
    worker.beat()
    assert worker.store.usage("team-a") == 4


def test_the_create_rate_holds_across_replicas_with_a_retry_after(url: str) -> None:
    here, there = quotas(url, "r0"), quotas(url, "r1")
    the_create_rate_holds_across_workers(here, there)


def test_an_unreachable_store_refuses_creates_with_503(url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    broken = Quotas(RedisStore(f"redis://127.0.0.1:{int(port) + 1}/0", timeout=0.5), "w", 10.0, retry_after=7)
    with pytest.raises(StoreUnavailable) as err:
        broken.admit(TEAM, 1)
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "7"
