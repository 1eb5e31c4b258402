"""Prometheus metrics: definitions, the exposition of all workers summed, and dead-worker bookkeeping.

Under gunicorn, `gymserve serve` points PROMETHEUS_MULTIPROC_DIR at a wiped directory before any
worker starts; every process writes its own files there and /metrics sums them per request.
https://prometheus.github.io/client_python/multiprocess/
Labels are bounded: env ids come from the allowlist, routes are URL rule templates; never an
instance id, a seed or a kwarg.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import platform
import threading
import time
from collections.abc import Iterator
from typing import Any

import gymnasium
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

from . import __version__
from .settings import MULTIPROC_ENV, Settings
from .tallies import TALLIES, Flushing, Marks, counted, observed

# The step path's counts are deferred (tallies.py): reading the registry flushes them first, and so does an exit.
REGISTRY.register(Flushing())
atexit.register(TALLIES.flush)

# A CartPole step takes ~10 us in Gymnasium and ~1 ms over HTTP; MuJoCo and rendering take far longer. Steps reach
# down to 10 us, requests up to 10 s; both share the 1-2.5-5 series between.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP_BUCKETS = (0.00001, 0.000025, 0.00005, *_LATENCY_BUCKETS)
REQUEST_BUCKETS = (*_LATENCY_BUCKETS, 10.0)

STEP_SECONDS = Histogram(
    "gymserve_step_duration_seconds", "Time inside env.step, by env id.", ["env_id"], buckets=STEP_BUCKETS
)
STEPS = Counter("gymserve_steps_total", "Env steps taken, by env id.", ["env_id"])
RESETS = Counter("gymserve_resets_total", "Env resets, by env id.", ["env_id"])
EPISODES = Counter("gymserve_episodes_total", "Episodes finished (terminated or truncated), by env id.", ["env_id"])
LIVE_ENVS = Gauge(
    "gymserve_envs", "Live envs, by env id (dead workers excluded).", ["env_id"], multiprocess_mode="livesum"
)
CREATED = Counter("gymserve_envs_created_total", "Envs created, by env id.", ["env_id"])
CLOSED = Counter(
    "gymserve_envs_closed_total", "Envs closed, by env id and reason (client, ttl, shutdown).", ["env_id", "reason"]
)
REAPED = Counter("gymserve_envs_reaped_total", "Envs closed by the TTL reaper after idling, by env id.", ["env_id"])
LOST = Counter("gymserve_envs_lost_total", "Envs lost because their worker died, by env id.", ["env_id"])
FAILED = Counter(
    "gymserve_envs_failed_total", "Creates that failed, by env id and reason (the error code).", ["env_id", "reason"]
)
REQUEST_SECONDS = Histogram(
    "gymserve_http_request_duration_seconds",
    "HTTP request duration, by route template, method and status.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
FORWARDS = Counter(
    "gymserve_forwarded_requests_total",
    "Requests forwarded to the worker that owns the env, by outcome (ok, lost, timeout).",
    ["outcome"],
)
CAPACITY = Gauge(
    "gymserve_capacity_envs", "Most live envs allowed, by scope (worker, replica).", ["scope"], multiprocess_mode="max"
)
WORKER_RESTARTS = Counter("gymserve_worker_restarts_total", "Workers that died and were replaced.")
DRAINING = Gauge("gymserve_draining", "1 while this replica drains for shutdown.", multiprocess_mode="max")
BUILD_INFO = Gauge(
    "gymserve_build_info",
    "Versions of this build, and the replica's node name (the one in its instance ids); always 1.",
    ["version", "gymnasium_version", "python_version", "node"],
    multiprocess_mode="max",
)
# By tenant: new series rather than a label added to the ones above, whose every series (and every
# dashboard and rule reading them) would change. Tenant names come from the tenants file: bounded.
STEPS_BY_TENANT = Counter("gymserve_tenant_steps_total", "Env steps taken, by tenant.", ["tenant"])
LIVE_BY_TENANT = Gauge(
    "gymserve_tenant_envs", "Live envs, by tenant (dead workers excluded).", ["tenant"], multiprocess_mode="livesum"
)
REFUSED_BY_TENANT = Counter(
    "gymserve_tenant_refusals_total",
    "Creates refused, by tenant and error code (quota_exceeded, rate_limited, ...); "
    "requests without a valid key count as tenant 'unauthenticated', code 'unauthorized'.",
    ["tenant", "code"],
)
TENANT_MAX_ENVS = Gauge(
    "gymserve_tenant_max_envs", "A tenant's farm-wide max_envs (absent: no quota).", ["tenant"], multiprocess_mode="max"
)
# Per worker slot (a few: GYMSERVE_WORKERS), so that the dashboard shows how evenly placement spreads envs.
WORKER_ENVS = Gauge(
    "gymserve_worker_envs",
    "Live envs of each worker slot (sub-envs and creates in progress counted), as placement sees them.",
    ["slot"],
    multiprocess_mode="livesum",
)

# Park and adopt (lifecycle/moves.py): envs that outlive their worker, replica or pod.
ENVS_PARKED = Counter("gymserve_envs_parked_total", "Envs parked (a drain, or hibernated when idle), sub-envs counted.")
ENVS_ADOPTED = Counter(
    "gymserve_envs_adopted_total", "Parked envs adopted by a worker under their id, sub-envs counted."
)
ENV_ADOPT_FAILURES = Counter(
    "gymserve_env_adopt_failures_total",
    "Envs that could not move, by reason (not_movable, bad_record, capacity_exceeded, quota_exceeded, ...).",
    ["reason"],
)
for _reason in ("not_movable", "bad_record", "capacity_exceeded", "quota_exceeded"):
    ENV_ADOPT_FAILURES.labels(_reason)  # every reason a series from the start: a dashboard shows 0, not "no data"
ENV_CALL_TIMEOUTS = Counter(
    "gymserve_env_call_timeouts_total",
    "Env calls that ran past their deadline (GYMSERVE_STEP_TIMEOUT_SECONDS), by Gymnasium env id and tenant.",
    ["env_id", "tenant"],
)
ENVS_QUARANTINED = Counter(
    "gymserve_envs_quarantined_total", "Envs quarantined after a call past its deadline.", ["env_id", "tenant"]
)
WORKERS_REPLACED = Counter(
    "gymserve_workers_replaced_total",
    "Workers replaced because of stuck env calls: stuck_calls (it parked its envs first), worker_stuck (killed by "
    "gunicorn's master: its envs were lost).",
    ["reason"],
)
for _reason in ("stuck_calls", "worker_stuck"):
    WORKERS_REPLACED.labels(_reason)
_MOVE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
PARK_SECONDS = Histogram("gymserve_park_duration_seconds", "Time to park one env.", buckets=_MOVE_BUCKETS)
ADOPT_SECONDS = Histogram("gymserve_adopt_duration_seconds", "Time to adopt one env.", buckets=_MOVE_BUCKETS)
PARKED_ENVS = Gauge(
    "gymserve_parked_envs", "Envs parked in this server's park store now.", multiprocess_mode="livemostrecent"
)

OTHER_ENV = "other"  # the label for an env id that is not on the allowlist (bounded cardinality)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_timer(route: str, method: str, status: int) -> Any:
    """The request-duration child for one route, method and status (a client's odd method is OTHER)."""
    return _request_timer(route, method if method in _METHODS else "OTHER", status)


@functools.cache
def _request_timer(route: str, method: str, status: int) -> Any:
    return observed(REQUEST_SECONDS.labels(route, method, str(status)))


def publish_static(max_envs_per_worker: int, max_envs: int, node: str) -> None:
    CAPACITY.labels("worker").set(max_envs_per_worker)
    CAPACITY.labels("replica").set(max_envs)
    # The node on a series of the replica's own: compose's Prometheus finds replicas by address (Docker's DNS has no
    # names to give it), so dashboards join this series on `instance` to name a replica as its ids do.
    BUILD_INFO.labels(__version__, gymnasium.__version__, platform.python_version(), node).set(1)


def exposition() -> bytes:
    """Every count made before this call began: this worker's flushed now, and each sibling's flush that began since."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        began = time.monotonic()
        TALLIES.flush()
        Marks(directory).wait_for_others(began)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class EnvMeters:
    """The labelled children of one env's metrics, looked up once at create, not on every step."""

    __slots__ = ("episode_length", "episode_return", "episodes", "live", "resets", "step_seconds", "steps")

    def __init__(self, env_id: str, settings: Settings | None = None, tenant: str = "anonymous") -> None:
        # What every step or reset moves is deferred (tallies.py); the live gauges move at create and close.
        self.step_seconds = observed(STEP_SECONDS.labels(env_id))
        self.steps = counted(STEPS.labels(env_id), STEPS_BY_TENANT.labels(tenant))
        self.resets = counted(RESETS.labels(env_id))
        self.episodes = counted(EPISODES.labels(env_id))
        self.live = _Both(LIVE_ENVS.labels(env_id), LIVE_BY_TENANT.labels(tenant))
        settings = settings or Settings()
        self.episode_return = observed(EPISODE_RETURN.labels(env_id, settings.episode_buckets("return", env_id)))
        self.episode_length = observed(EPISODE_LENGTH.labels(env_id, settings.episode_buckets("length", env_id)))
        # Export these at 0 from the first create, so that rate()/increase() see their first event.
        REAPED.labels(env_id)
        LOST.labels(env_id)


class _Both:
    """A gauge kept by env id and by tenant at once: create and close move both with one call."""

    __slots__ = ("by_env", "by_tenant")

    def __init__(self, by_env: Any, by_tenant: Any) -> None:
        self.by_env, self.by_tenant = by_env, by_tenant

    def inc(self, amount: float = 1) -> None:
        self.by_env.inc(amount)
        self.by_tenant.inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.by_env.dec(amount)
        self.by_tenant.dec(amount)


def worker_died(pid: int) -> None:
    """In the master, after a worker died: count its envs as lost, then drop its live gauges."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for env_id, count in _live_envs_of(directory, pid).items():
        if count > 0:
            LOST.labels(env_id).inc(count)
    multiprocess.mark_process_dead(pid, directory)
    Marks(directory).remove(pid)  # no scrape waits for its flushes


def _live_envs_of(directory: str, pid: int) -> dict[str, float]:
    """The dead worker's last `gymserve_envs` values, read from its livesum file (the one mark_process_dead removes)
    with prometheus_client's public merge."""
    found: dict[str, float] = {}
    files = glob.glob(os.path.join(directory, f"gauge_livesum_{pid}.db"))
    try:
        merged = multiprocess.MultiProcessCollector.merge(files, accumulate=False)
    except (OSError, ValueError):
        return found
    for metric in merged:
        for sample in metric.samples if metric.name == "gymserve_envs" else ():
            env_id = sample.labels.get("env_id", OTHER_ENV)
            found[env_id] = found.get(env_id, 0) + sample.value
    return found


def label_for(env_id: Any, allowed: frozenset[str]) -> str:
    return env_id if isinstance(env_id, str) and env_id in allowed else OTHER_ENV


class BucketedByEnv:
    """One histogram name whose buckets are chosen per env id (GYMSERVE_EPISODE_*_BUCKETS).

    prometheus_client fixes a Histogram's buckets when it is defined, so there is one unregistered
    Histogram per bucket set, all of the same name. Under gunicorn every one of them writes to the
    multiprocess files, which the exposition merges by name, so each env id's series carries its own `le`
    set; in a single process this collector (registered once) merges them the same way.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self._by_buckets: dict[tuple[float, ...], Histogram] = {}
        self._lock = threading.Lock()

    def labels(self, env_id: str, buckets: tuple[float, ...]) -> Any:
        with self._lock:
            histogram = self._by_buckets.get(buckets)
            if histogram is None:
                histogram = Histogram(self.name, self.documentation, ["env_id"], buckets=buckets, registry=None)
                self._by_buckets[buckets] = histogram
        return histogram.labels(env_id)

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "histogram")

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        with self._lock:
            histograms = list(self._by_buckets.values())
        for histogram in histograms:
            for metric in histogram.collect():
                family.samples.extend(metric.samples)
        yield family


EPISODE_RETURN = BucketedByEnv(
    "gymserve_episode_return", "Return (sum of rewards) of each finished episode, by env id."
)
EPISODE_LENGTH = BucketedByEnv("gymserve_episode_length", "Length in steps of each finished episode, by env id.")
REGISTRY.register(EPISODE_RETURN)
REGISTRY.register(EPISODE_LENGTH)
