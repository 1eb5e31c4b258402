"""Metrics off the hot path (gymserve.tallies): deferred counts are exact once flushed, whatever the threads do."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from gymserve.tallies import TALLIES, Counted, Marks, Observed, counted, observed


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counts_from_many_threads_are_all_written_while_flushes_run_beside_them() -> None:
    registry = CollectorRegistry()
    by_env = Counter("t_steps", "steps", ["env_id"], registry=registry).labels("a")
    by_tenant = Counter("t_tenant_steps", "steps", ["tenant"], registry=registry).labels("x")
    steps = Counted((by_env, by_tenant))
    stop = threading.Event()

    def flushing() -> None:
        while not stop.is_set():
            TALLIES.flush()

    def stepping() -> None:
        for _ in range(20_000):
            steps.inc()
        steps.inc(5)

    flusher = threading.Thread(target=flushing)
    flusher.start()
    workers = [threading.Thread(target=stepping) for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    flusher.join()
    TALLIES.flush()
    assert sample(registry, "t_steps_total", env_id="a") == 8 * 20_005
    assert sample(registry, "t_tenant_steps_total", tenant="x") == 8 * 20_005  # one count, both series


BOUNDS = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.00001, 0.000011, 0.0001, 0.0005, 0.001, 0.01, 0.1, 0.99, 1.0, 1.5, 1e9, math.inf, -1.0]


def test_a_deferred_histogram_writes_what_observing_directly_would() -> None:
    """prometheus_client's `le` semantics (a value on a bound counts in it), kept with its private attributes: this
    fails when a prometheus_client release renames `_upper_bounds`, `_buckets` or `_sum`."""
    direct_registry, deferred_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("t_seconds", "d", ["env_id"], buckets=BOUNDS, registry=direct_registry).labels("a")
    deferred = Observed(Histogram("t_seconds", "d", ["env_id"], buckets=BOUNDS, registry=deferred_registry).labels("a"))
    for i, v in enumerate(VALUES):
        direct.observe(v)
        deferred.observe(v)
        if i % 3 == 0:  # some flushes between the observations: their growths add up
            TALLIES.flush()
    TALLIES.flush()
    direct_samples = {(s.name, s.labels.get("le")): s.value for m in direct_registry.collect() for s in m.samples}
    deferred_samples = {(s.name, s.labels.get("le")): s.value for m in deferred_registry.collect() for s in m.samples}
    direct_samples = {k: v for k, v in direct_samples.items() if not k[0].endswith("_created")}
    deferred_samples = {k: v for k, v in deferred_samples.items() if not k[0].endswith("_created")}
    assert deferred_samples == direct_samples
    assert deferred_samples[("t_seconds_count", None)] == len(VALUES)


def test_nothing_is_written_before_a_flush_and_reading_the_default_registry_flushes() -> None:
    from prometheus_client import REGISTRY

    from gymserve import metrics  # registers the flush ahead of its metrics

    child = metrics.RESETS.labels("Tallies-Test-v0")
    deferred = counted(child)
    TALLIES.flush()
    before = child._value.get()
    deferred.inc(3)
    assert child._value.get() == before  # still in this thread's dict
    assert REGISTRY.get_sample_value("gymserve_resets_total", {"env_id": "Tallies-Test-v0"}) == before + 3


def test_one_deferred_metric_per_series_so_the_threads_dicts_stay_small() -> None:
    registry = CollectorRegistry()
    child = Histogram("t_one", "d", ["env_id"], registry=registry).labels("a")
    assert observed(child) is observed(child)
    counter = Counter("t_two", "d", ["env_id"], registry=registry).labels("a")
    assert counted(counter) is counted(counter)


def test_a_thread_that_ended_is_written_then_forgotten() -> None:
    registry = CollectorRegistry()
    child = Counter("t_ended", "d", registry=registry)
    done = Counted((child,))
    thread = threading.Thread(target=lambda: done.inc(7))
    thread.start()
    thread.join()
    TALLIES.flush()
    assert sample(registry, "t_ended_total") == 7
    assert all(own.thread is not thread for own in TALLIES._threads)


def test_a_scrape_waits_for_a_siblings_flush_that_began_after_it(tmp_path: Path) -> None:
    marks = Marks(str(tmp_path))
    sibling = os.open(marks.path(os.getpid() + 1), os.O_RDWR | os.O_CREAT, 0o600)
    marks.write(sibling, 0.0)  # its last flush began long ago
    began = time.monotonic()
    flushed = threading.Event()

    def sibling_flushes() -> None:
        time.sleep(0.2)
        flushed.set()
        marks.write(sibling, time.monotonic())

    threading.Thread(target=sibling_flushes).start()
    marks.wait_for_others(began, timeout=10)
    assert flushed.is_set()
    os.close(sibling)


def test_a_scrape_does_not_wait_for_a_worker_that_is_gone_or_for_itself(tmp_path: Path) -> None:
    marks = Marks(str(tmp_path))
    own = os.open(marks.path(os.getpid()), os.O_RDWR | os.O_CREAT, 0o600)
    marks.write(own, 0.0)  # this process flushes for itself before it reads
    gone = os.getpid() + 1
    os.close(os.open(marks.path(gone), os.O_RDWR | os.O_CREAT, 0o600))
    marks.remove(gone)  # its master removed its mark
    began = time.monotonic()
    marks.wait_for_others(began, timeout=10)
    assert time.monotonic() - began < 5
    os.close(own)


def test_a_sibling_that_never_flushes_delays_a_scrape_by_the_timeout_only(tmp_path: Path) -> None:
    stuck_for = 0.3
    marks = Marks(str(tmp_path))
    stuck = os.open(marks.path(os.getpid() + 1), os.O_RDWR | os.O_CREAT, 0o600)
    marks.write(stuck, 0.0)
    began = time.monotonic()
    marks.wait_for_others(began, timeout=stuck_for)
    assert stuck_for <= time.monotonic() - began < stuck_for + 5
    os.close(stuck)
