"""Operational endpoints: /healthz (the process answers), /readyz (it takes new envs), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics
from .api.common import envs, json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    # The node name lets the router map this replica's address to the ids it mints (its connection pools), and the
    # workers' own ports (GYMSERVE_WORKER_PORT_BASE) to the slots in those ids.
    core = envs()
    body: dict[str, object] = {"status": "ok", "node": core.owner.node}
    if core.settings.worker_port_base:
        body["worker_ports"] = {str(slot): core.settings.worker_port(slot) for slot in core.placement.live_slots()}
    return json_response(body)


@bp.get("/readyz")
def readyz() -> Response:
    ready = envs().readiness()
    return json_response(
        {"status": "not ready" if ready["reasons"] else "ready", **ready}, 503 if ready["reasons"] else 200
    )


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition: the sum over every worker of this replica."""
    return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
