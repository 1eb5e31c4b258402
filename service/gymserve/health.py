"""Liveness (/healthz: the process answers) and readiness (/readyz: it takes new envs)."""

from __future__ import annotations

from flask import Blueprint, Response

from .api.common import json_response, worker

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    w = worker()
    reasons = w.not_ready_reasons()
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "worker_envs": len(w.registry),
        "worker_capacity": w.settings.max_envs_per_worker,
        "replica_envs": w.replica_envs(),
        "replica_capacity": w.settings.max_envs,
        "workers": len(w.replica.live_slots()) if w.replica else 1,
    }
    return json_response(body, 503 if reasons else 200)
