"""Prometheus metrics: definitions, the exposition of all workers summed, and dead-worker bookkeeping.

Under gunicorn, `gymserve serve` points PROMETHEUS_MULTIPROC_DIR at a wiped directory before any
worker starts; every process writes its own files there and /metrics sums them per request.
https://prometheus.github.io/client_python/multiprocess/
Labels are bounded: env ids come from the allowlist, routes are URL rule templates; never an
instance id, a seed or a kwarg.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import platform
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

from . import __version__
from .settings import MULTIPROC_ENV

# A CartPole step takes ~10 us in Gymnasium and ~1 ms over HTTP; MuJoCo and rendering take far longer.
STEP_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
REQUEST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

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
    "Versions of this build; always 1.",
    ["version", "gymnasium_version", "python_version"],
    multiprocess_mode="max",
)
# Per worker slot (a few: GYMSERVE_WORKERS), so that the dashboard shows how evenly placement spreads envs.
WORKER_ENVS = Gauge(
    "gymserve_worker_envs",
    "Live envs of each worker slot (sub-envs and creates in progress counted), as placement sees them.",
    ["slot"],
    multiprocess_mode="livesum",
)

OTHER_ENV = "other"  # the label for an env id that is not on the allowlist (bounded cardinality)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_timer(route: str, method: str, status: int) -> Any:
    """The request-duration child for one route, method and status (a client's odd method is OTHER)."""
    return _request_timer(route, method if method in _METHODS else "OTHER", status)


@functools.cache
def _request_timer(route: str, method: str, status: int) -> Any:
    return REQUEST_SECONDS.labels(route, method, str(status))


def publish_static(max_envs_per_worker: int, max_envs: int) -> None:
    CAPACITY.labels("worker").set(max_envs_per_worker)
    CAPACITY.labels("replica").set(max_envs)
    BUILD_INFO.labels(__version__, gymnasium.__version__, platform.python_version()).set(1)


def exposition() -> bytes:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class EnvMeters:
    """The labelled children of one env's metrics, looked up once at create, not on every step."""

    __slots__ = ("episodes", "live", "resets", "step_seconds", "steps")

    def __init__(self, env_id: str) -> None:
        self.step_seconds = STEP_SECONDS.labels(env_id)
        self.steps = STEPS.labels(env_id)
        self.resets = RESETS.labels(env_id)
        self.episodes = EPISODES.labels(env_id)
        self.live = LIVE_ENVS.labels(env_id)
        # Export these at 0 from the first create, so that rate()/increase() see their first event.
        REAPED.labels(env_id)
        LOST.labels(env_id)


def worker_died(pid: int) -> None:
    """In the master, after a worker died: count its envs as lost, then drop its live gauges."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for env_id, count in _live_envs_of(directory, pid).items():
        if count > 0:
            LOST.labels(env_id).inc(count)
    multiprocess.mark_process_dead(pid, directory)


def _live_envs_of(directory: str, pid: int) -> dict[str, float]:
    """The dead worker's last `gymserve_envs` values, read from its livesum file."""
    from prometheus_client.mmap_dict import MmapedDict

    found: dict[str, float] = {}
    for path in glob.glob(os.path.join(directory, f"gauge_livesum_{pid}.db")):
        try:
            values = MmapedDict.read_all_values_from_file(path)
        except (OSError, ValueError):
            return found
        for key, value, *_ in values:
            name, _sample, labels, *_rest = json.loads(key)
            if name == "gymserve_envs":
                env_id = labels.get("env_id", OTHER_ENV)
                found[env_id] = found.get(env_id, 0) + value
    return found


def label_for(env_id: Any, allowed: frozenset[str]) -> str:
    return env_id if isinstance(env_id, str) and env_id in allowed else OTHER_ENV
