"""gunicorn's configuration for gymserve: the worker model and its hooks, all derived from Settings.

Use it as `gunicorn -c python:gymserve.gunicorn_conf 'gymserve.app:create_app()'`;
`gymserve serve` does exactly that. Docs: https://docs.gunicorn.org/en/stable/settings.html
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from typing import Any

from gymserve import metrics
from gymserve.headless import headless_sdl
from gymserve.lifecycle.reaper import Reaper
from gymserve.routing import replica as routing
from gymserve.routing.peer_server import start_peer_server
from gymserve.settings import Settings
from gymserve.tallies import TALLIES, Flusher, Marks

_settings = Settings.from_env()
_REPLACEMENT_SECONDS = 60.0  # how long a worker's own exit waits for the stuck-call replacement to park its envs
if not os.environ.get(metrics.MULTIPROC_ENV):
    # Without it each worker would export only its own numbers. `gymserve serve` sets it up.
    raise SystemExit(f"gymserve: {metrics.MULTIPROC_ENV} is not set; start the server with `gymserve serve`")

# --- Server socket ---
bind = [f"{_settings.host}:{_settings.port}"]
if _settings.metrics_port:  # every worker accepts there too; the app answers only /metrics on it (app.py)
    bind.append(f"{_settings.host}:{_settings.metrics_port}")
backlog = 2048

# --- Worker processes ---
# gthread: one process per core holds envs; threads let requests on different envs overlap while
# one env's requests serialize on its lock. Envs live in worker memory, so never preload the app
# and never recycle workers by request count (max_requests would drop every env of the worker).
# gymserve's gthread (gunicorn_worker.py): a request takes a thread only once it has all arrived, so slow
# clients hold none, and a thread answers a client's tight keep-alive loop without the poller in between.
worker_class = "gymserve.gunicorn_worker.GymserveWorker"
workers = _settings.workers
threads = _settings.threads
max_requests = 0
# Agents hold keep-alive connections between steps; an idle agent must not lose its connection fast.
keepalive = 75
# The longest request line gunicorn allows (a list's label selectors fit); the worker answers a longer one 414.
limit_request_line = 8190
# A single env call that takes longer than this is treated as a hung worker.
timeout = 120
# SIGTERM: the drain window plus time to close envs (Settings.graceful_timeout_seconds).
graceful_timeout = int(_settings.graceful_timeout_seconds)
# The heartbeat file lives in memory when /dev/shm exists (containers: a disk-backed /tmp can stall it).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# --- Logging ---
loglevel = _settings.log_level
errorlog = "-"
accesslog = None  # one line per step would cost more than the step; use the metrics instead
proc_name = "gymserve"
# gunicorn 25+ opens a control socket in $HOME by default; a server of shared envs needs none.
control_socket_disable = True


# --- Server hooks: sticky routing, TTL reaper and graceful drain ---
# Hooks run in the master (on_starting, pre_fork, child_exit, on_exit) or in a worker (post_fork,
# post_worker_init, worker_exit). https://docs.gunicorn.org/en/stable/settings.html#server-hooks

_replica: routing.Replica | None = None
_made_runtime_dir = not _settings.runtime_dir


def on_starting(server: Any) -> None:
    """Master, before any fork: the socket directory and the shared live-env counts."""
    global _replica
    _replica = routing.make_replica(_settings.runtime_dir, slots=_settings.worker_slots)
    server.log.info("gymserve: node %s, worker sockets in %s", _settings.node_id, _replica.runtime_dir)


_slots_used: set[int] = set()
_generations_used: set[int] = set()


def _fresh_generation() -> int:
    while (generation := secrets.randbelow(999_999_999) + 1) in _generations_used:
        pass
    _generations_used.add(generation)
    return generation


def pre_fork(server: Any, worker: Any) -> None:
    """Master: give the new worker the lowest free slot and a fresh random generation.

    Random rather than gunicorn's worker age (which restarts at 1 with the master): after a restart of
    the whole replica (same host name, same node id), an old id must still read as lost, not as ours.
    """
    assert _replica is not None
    taken = {getattr(w, "gymserve_slot", -1) for w in server.WORKERS.values()}
    free = [slot for slot in range(_replica.slots) if slot not in taken]
    if not free:
        raise RuntimeError(f"no free worker slot: at most {_replica.slots} workers per replica")
    worker.gymserve_slot = free[0]
    worker.gymserve_generation = _fresh_generation()
    if free[0] in _slots_used:  # the slot had a worker before: this one replaces a worker that died
        metrics.WORKER_RESTARTS.inc()
    _slots_used.add(free[0])


def post_fork(server: Any, worker: Any) -> None:
    """Worker, before its app loads: SDL headless (before any render), and its slot adopted."""
    headless_sdl()
    assert _replica is not None
    routing.adopt(routing.WorkerSlot(_replica, worker.gymserve_slot, worker.gymserve_generation))
    server.log.info(
        "gymserve: worker pid %d has slot %d generation %d",
        worker.pid,
        worker.gymserve_slot,
        worker.gymserve_generation,
    )


def post_worker_init(worker: Any) -> None:
    """Worker, app loaded: open the private socket, start the reaper, and make SIGTERM drain."""
    assert _replica is not None
    core = worker.wsgi.extensions["gymserve"].envs
    worker.gymserve_peer = start_peer_server(worker.wsgi, _replica.socket_path(worker.gymserve_slot))
    moves = core.moves
    hibernate = (
        (lambda record: moves.hibernate(record, core.keys)) if moves and _settings.idle_action == "park" else None
    )
    on_pass = moves.tick if moves else None
    worker.gymserve_reaper = Reaper(core.registry, _settings.reaper_interval_seconds, hibernate, on_pass)
    worker.gymserve_reaper.start()
    worker.gymserve_tallies = Flusher(Marks(os.environ[metrics.MULTIPROC_ENV]))
    worker.gymserve_tallies.start()

    def drain(sig: int, frame: Any) -> None:
        if core.draining.is_set():
            return
        core.draining.set()  # /readyz fails and creates are refused from now on
        metrics.DRAINING.set(1)
        worker.log.info("gymserve: draining %d envs for up to %.0fs", len(core.registry), _settings.drain_seconds)
        threading.Thread(target=_exit_after_drain, args=(worker, core), daemon=True).start()

    signal.signal(signal.SIGTERM, drain)

    deadlines = core.deadlines
    deadlines.spares = worker.spare_threads
    deadlines.slow_threads = worker.stream_loop_stuck
    deadlines.too_many_stuck = lambda: _replace_stuck(worker, core)
    deadlines.start()


def _replace_stuck(worker: Any, core: Any) -> None:
    """More calls stuck for good than GYMSERVE_MAX_STUCK_THREADS: stop taking requests, park every other env (its
    successor adopts them), and exit at once. A graceful exit would wait for the stuck threads forever."""
    worker.log.error("gymserve: too many stuck env calls; this worker parks its envs and is replaced")
    core.draining.set()
    worker.gymserve_replacing = True  # the exit gthread's loop now takes leaves the envs to this thread
    worker.alive = False  # gthread's loop stops accepting
    parked, lost = core.park_all()
    worker.log.info("gymserve: parked %d envs (%d lost) before the replacement", parked, lost)
    TALLIES.flush()
    logging.shutdown()
    os._exit(0)


def _exit_after_drain(worker: Any, core: Any) -> None:
    """Park every env (each once its call in flight is answered) and exit; without a park store, wait for the
    clients to close their envs within the drain window, as a server that cannot park must."""
    if core.moves is not None:
        started = time.monotonic()
        parked, lost = core.park_all()
        worker.log.info("gymserve: parked %d envs (%d lost) in %.2fs", parked, lost, time.monotonic() - started)
    worker.end_streams(1012, "moved")  # their clients reconnect, and resend what was not answered
    deadline = time.monotonic() + _settings.drain_seconds
    while len(core.registry) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.handle_exit(signal.SIGTERM, None)  # gunicorn's own graceful exit: finish in-flight requests


def worker_exit(server: Any, worker: Any) -> None:
    """Worker, on its way out: close every env it still holds."""
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "extensions"):
        return
    reaper = getattr(worker, "gymserve_reaper", None)
    if reaper is not None:
        reaper.stop()
    tallies = getattr(worker, "gymserve_tallies", None)
    if tallies is not None:
        tallies.stop()  # its last counts written before it goes
    if getattr(worker, "gymserve_replacing", False):
        # _replace_stuck parks every env and ends the process itself: closing them here (gthread's loop ends at
        # once when no connection is its own) would race the parking and lose the envs it had not parked yet.
        time.sleep(_REPLACEMENT_SECONDS)
    closed = app.extensions["gymserve"].envs.close_all()
    server.log.info("gymserve: worker exiting, closed %d envs", closed)


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker died for any reason: free its slot; its envs are gone. One killed for a stopped
    heartbeat (gunicorn's `timeout`: a call holding the GIL for good) leaves its envs' ids saying worker_stuck."""
    if _replica is None or not hasattr(worker, "gymserve_slot"):
        return
    if getattr(worker, "aborted", False):
        _replica.mark_stuck(worker.gymserve_generation)
        metrics.WORKERS_REPLACED.labels("worker_stuck").inc()
    _replica.set_count(worker.gymserve_slot, 0)
    metrics.worker_died(worker.pid)  # its live envs count as lost; its live gauges go
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_replica.socket_path(worker.gymserve_slot))


def on_exit(server: Any) -> None:
    if _replica is not None and _made_runtime_dir:
        shutil.rmtree(_replica.runtime_dir, ignore_errors=True)
