"""Operational endpoints: /healthz (the process answers), /readyz (it takes new envs), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics
from .api.common import json_response, worker

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    # The node name lets the router map this replica's address to the ids it mints (its connection pools), and the
    # workers' own ports (GYMSERVE_WORKER_PORT_BASE) to the slots in those ids.
    w = worker()
    body: dict[str, object] = {"status": "ok", "node": w.owner.node}
    if w.settings.worker_port_base:
        slots = w.replica.live_slots() if w.replica else [w.owner.slot]
        body["worker_ports"] = {str(slot): w.settings.worker_port(slot) for slot in slots}
    return json_response(body)


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


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition: the sum over every worker of this replica."""
    return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
