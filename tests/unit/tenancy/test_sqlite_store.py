"""The counts of a server without a store: one SQLite file in the replica's runtime directory, shared by its workers."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gymserve.errors import QuotaExceeded
from gymserve.tenancy.quotas import QUOTAS_FILE, Quotas
from gymserve.tenancy.store import MemoryStore, SqliteStore
from gymserve.tenancy.tenants import Tenant
from quota_scenarios import the_create_rate_holds_across_workers, two_workers_share_one_quota

TEAM = Tenant("team-a", max_envs=5, creates_per_minute=1000)


def worker(path: Path, name: str, heartbeat: float = 10.0) -> Quotas:
    return Quotas(SqliteStore(str(path)), name, heartbeat, retry_after=5)  # its own connection, as another worker


def test_two_workers_of_one_server_share_one_quota(tmp_path: Path) -> None:
    here, there = worker(tmp_path / QUOTAS_FILE, "w0"), worker(tmp_path / QUOTAS_FILE, "w1")
    two_workers_share_one_quota(here, there)


def test_the_create_rate_holds_across_workers_with_a_retry_after(tmp_path: Path) -> None:
    here, there = worker(tmp_path / QUOTAS_FILE, "w0"), worker(tmp_path / QUOTAS_FILE, "w1")
    the_create_rate_holds_across_workers(here, there)


def test_the_envs_of_a_worker_that_stopped_beating_stop_counting(tmp_path: Path) -> None:
    dead, alive = worker(tmp_path / QUOTAS_FILE, "gone", 0.5), worker(tmp_path / QUOTAS_FILE, "alive", 0.5)
    try:
        dead.admit(TEAM, 4)
        alive.admit(TEAM, 1)
        dead.stop()  # its process died: no more heartbeats, and nobody released its envs
        with pytest.raises(QuotaExceeded):
            alive.admit(TEAM, 3)
        time.sleep(1.6)  # three missed beats of 0.5 s
        alive.beat()
        alive.admit(TEAM, 3)
        assert alive.store is not None and alive.store.usage("team-a") == 4
    finally:
        dead.stop()
        alive.stop()


def test_a_heartbeat_writes_absolute_counts(tmp_path: Path) -> None:
    one = worker(tmp_path / QUOTAS_FILE, "w")
    one.admit(TEAM, 4)
    one.held["team-a"] = 2  # as if a release was not recorded
    one.beat()
    assert one.store is not None and one.store.usage("team-a") == 2


def _admit_many(path: str, name: str, tries: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    quotas = Quotas(SqliteStore(path), name, 10.0, retry_after=5)
    got = 0
    for _ in range(tries):
        try:
            quotas.admit(TEAM, 1)
            got += 1
        except QuotaExceeded:
            pass
    out.put(got)


def test_concurrent_processes_never_overshoot_the_quota(tmp_path: Path) -> None:
    path = str(tmp_path / QUOTAS_FILE)
    SqliteStore(path)  # the schema, before the race
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_admit_many, args=(path, f"p{i}", 10, out)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert sum(out.get(timeout=5) for _ in procs) == 5


def test_the_store_is_the_replicas_file_and_memory_only_without_a_replica(tmp_path: Path) -> None:
    shared = Quotas.build("", "w", 10.0, 5, runtime_dir=str(tmp_path))
    assert isinstance(shared.store, SqliteStore) and (tmp_path / QUOTAS_FILE).exists()
    assert isinstance(Quotas.build("", "w", 10.0, 5).store, MemoryStore)


def test_a_worker_opening_the_file_while_another_makes_it_waits_for_it_instead_of_failing_to_boot(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "quotas.sqlite3")
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")  # a sibling worker's first connection, making the file: the write lock
    first.execute("CREATE TABLE made_first (x)")
    releases = threading.Timer(0.3, lambda: first.execute("COMMIT"))
    releases.start()
    try:
        store = SqliteStore(path)  # SQLite answers "database is locked" at once here, whatever its timeout
        assert store.admit("team-a", "w1", 1, 5, None, 10_000).verdict == "ok"
    finally:
        releases.join()
        first.close()
