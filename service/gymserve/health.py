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
    reasons = []
    if w.draining.is_set():
        reasons.append("draining")
    if w.registry.full:
        reasons.append("full")
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "envs": len(w.registry),
        "capacity": w.settings.max_envs_per_worker,
    }
    return json_response(body, 503 if reasons else 200)
