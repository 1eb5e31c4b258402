"""The TTL reaper of one worker: what expires, never waiting behind a locked env, and what it counts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.envs import Envs
from gymserve.lifecycle.reaper import Reaper
from gymserve.lifecycle.registry import EnvRecord
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings


@pytest.fixture
def worker() -> Iterator[Envs]:
    core = Envs(Settings.from_env({}, node_id="test", reaper_interval_seconds=0.05))
    yield core
    core.registry.close_all()


def create(worker: Envs, ttl: float, num_envs: int | None = None) -> EnvRecord:
    return worker.create(CreateRequest("CartPole-v1", num_envs=num_envs, ttl=ttl), ANYONE)


def reaper_of(worker: Envs) -> Reaper:
    return Reaper(worker.registry, worker.settings.reaper_interval_seconds)


def idle_for(record: EnvRecord, seconds: float) -> None:
    """Make the env look idle for `seconds` (its last use moved back) instead of sleeping that long."""
    record.last_used = time.monotonic() - seconds


def spy_on_close(record: EnvRecord) -> list[EnvRecord]:
    """A list that gets the record when its gymnasium env is closed."""
    closed: list[EnvRecord] = []
    close = record.env.close

    def recording_close() -> None:
        closed.append(record)
        close()

    record.env.close = recording_close
    return closed


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"env_id": "CartPole-v1", **labels}) or 0.0


def test_only_envs_idle_past_their_ttl_are_closed(worker: Envs) -> None:
    stale, fresh, forever = create(worker, ttl=10), create(worker, ttl=10), create(worker, ttl=0)
    idle_for(stale, 11)
    idle_for(fresh, 9)
    idle_for(forever, 10**6)  # a TTL of 0 never expires
    closed_stale, closed_fresh = spy_on_close(stale), spy_on_close(fresh)
    reaped = reaper_of(worker).run_once()
    assert reaped == [stale] and stale.closed and closed_stale == [stale] and closed_fresh == []
    assert worker.registry.find(stale.instance_id) is None
    assert {r.instance_id for r in worker.registry.snapshot()} == {fresh.instance_id, forever.instance_id}
    assert len(worker.registry) == 2
    assert reaper_of(worker).run_once() == []  # nothing more to do


def test_a_use_between_the_scan_and_the_close_keeps_the_env(worker: Envs, monkeypatch: pytest.MonkeyPatch) -> None:
    record = create(worker, ttl=10)
    idle_for(record, 11)
    scan = worker.registry.expired

    def scan_then_a_request_lands(now: float | None = None) -> list[EnvRecord]:
        found = scan(now)
        with worker.registry.use(record.instance_id, ANYONE):
            pass
        return found

    monkeypatch.setattr(worker.registry, "expired", scan_then_a_request_lands)
    assert reaper_of(worker).run_once() == [] and not record.closed
    assert worker.registry.find(record.instance_id) is record


def test_the_reaper_never_waits_behind_an_env_in_use(worker: Envs) -> None:
    busy, idle = create(worker, ttl=1), create(worker, ttl=1)
    idle_for(busy, 5)
    idle_for(idle, 5)
    in_request = threading.Event()
    release = threading.Event()

    def long_step() -> None:  # a request holding the env's lock (a slow step)
        with busy.lock:
            in_request.set()
            release.wait(10)

    holder = threading.Thread(target=long_step)
    holder.start()
    try:
        assert in_request.wait(5)
        started = time.monotonic()
        assert reaper_of(worker).run_once() == [idle]  # the idle one goes; the busy one is skipped, not waited for
        assert time.monotonic() - started < 0.5
        assert not busy.closed
    finally:
        release.set()
        holder.join(10)
    # Once the request is over the env counts as idle from its last use: still expired here, so it goes now.
    assert reaper_of(worker).run_once() == [busy]


def test_reaped_envs_are_counted_by_sub_env_and_logged(worker: Envs, caplog: pytest.LogCaptureFixture) -> None:
    before = {
        "reaped": sample("gymserve_envs_reaped_total"),
        "closed": sample("gymserve_envs_closed_total", reason="ttl"),
        "live": sample("gymserve_envs"),
    }
    single, vector = create(worker, ttl=2), create(worker, ttl=2, num_envs=3)
    assert sample("gymserve_envs") == before["live"] + 4
    idle_for(single, 3)
    idle_for(vector, 3)
    with caplog.at_level(logging.INFO, logger="gymserve.lifecycle.reaper"):
        reaped = reaper_of(worker).run_once()
    assert {r.instance_id for r in reaped} == {single.instance_id, vector.instance_id}
    assert sample("gymserve_envs_reaped_total") == before["reaped"] + 4  # a vector env counts its 3 sub-envs
    assert sample("gymserve_envs_closed_total", reason="ttl") == before["closed"] + 4
    assert sample("gymserve_envs") == before["live"]
    logged = caplog.text
    assert single.instance_id in logged and vector.instance_id in logged and "(ttl 2s)" in logged


def test_the_thread_reaps_on_its_interval_until_stopped(worker: Envs) -> None:
    reaper = reaper_of(worker)
    record = create(worker, ttl=0.1)
    reaper.start()
    try:
        deadline = time.monotonic() + 5
        while not record.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert record.closed, "the reaper thread did not close an expired env"
    finally:
        reaper.stop()
    assert reaper._thread is not None
    reaper._thread.join(1)
    assert not reaper._thread.is_alive()
    late = create(worker, ttl=0.05)
    time.sleep(0.2)
    assert not late.closed  # stopped: nothing reaps any more


def test_a_failing_pass_does_not_stop_the_thread(worker: Envs, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(now: float | None = None) -> list[EnvRecord]:
        calls.append(now)
        raise RuntimeError("a bad env")

    monkeypatch.setattr(worker.registry, "expired", broken)
    reaper = reaper_of(worker)
    reaper.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reaper.stop()
    assert len(calls) >= 3  # it went on after the first failure
