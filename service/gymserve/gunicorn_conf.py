"""gunicorn's configuration for gymserve: the worker model and its hooks, all derived from Settings.

Use it as `gunicorn -c python:gymserve.gunicorn_conf 'gymserve.app:create_app()'`;
`gymserve serve` does exactly that. Docs: https://docs.gunicorn.org/en/stable/settings.html
"""

from __future__ import annotations

import os

from gymserve.settings import Settings

_settings = Settings.from_env()

# --- Server socket ---
bind = [f"{_settings.host}:{_settings.port}"]
backlog = 2048

# --- Worker processes ---
# gthread: one process per core holds envs; threads let requests on different envs overlap while
# one env's requests serialize on its lock. Envs live in worker memory, so never preload the app
# and never recycle workers by request count (max_requests would drop every env of the worker).
worker_class = "gthread"
workers = _settings.workers
threads = _settings.threads
max_requests = 0
# Agents hold keep-alive connections between steps; an idle agent must not lose its connection fast.
keepalive = 75
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
