"""Sends each request for an instance id to the worker that owns it, once; answers for owners that are gone."""

from __future__ import annotations

from flask import Flask, Response, request

from .. import ids
from ..errors import InstanceLost
from ..routing import FORWARDED_HEADER, REQUEST_HEADERS
from ..worker import Worker
from .common import worker


def route_to_owner() -> Response | None:
    """before_request: None lets this worker's view answer; a Response is the owner's answer."""
    instance_id = (request.view_args or {}).get("instance_id")
    if instance_id is None:
        return None
    w = worker()
    owner = ids.parse(instance_id)
    if owner is None or owner == w.owner or owner.node != w.owner.node:
        return None  # ours, or not of this replica: the view answers (it may say "unknown")
    if owner.slot == w.owner.slot or w.forwarder is None or request.headers.get(FORWARDED_HEADER):
        # Our slot in an older generation, or a slot that cannot be reached: that worker died.
        raise InstanceLost(instance_id)
    return _forward(w, owner.slot, instance_id)


def create_elsewhere_if_full() -> Response | None:
    """A create on a full worker goes to the sibling with the fewest envs, if the replica has room."""
    w = worker()
    if not w.registry.full or w.forwarder is None or w.replica is None or request.headers.get(FORWARDED_HEADER):
        return None
    counts = {slot: w.replica.counts[slot] for slot in w.replica.live_slots() if slot != w.owner.slot}
    roomy = [s for s, n in counts.items() if n < w.settings.max_envs_per_worker]
    if not roomy or w.replica_envs() >= w.settings.max_envs:
        return None  # the local create answers 503
    return _forward(w, min(roomy, key=counts.__getitem__), "")


def _forward(w: Worker, slot: int, instance_id: str) -> Response:
    assert w.forwarder is not None
    headers = {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    answer = w.forwarder.send(
        slot, request.method, request.full_path.rstrip("?"), headers, request.get_data(cache=False), instance_id
    )
    # Tell the client (and benchmarks) that this answer took a hop: keep-alive clients should not see it.
    return Response(answer.body, status=answer.status, headers={**answer.headers, FORWARDED_HEADER: "1"})


def install(app: Flask) -> None:
    app.before_request(route_to_owner)
