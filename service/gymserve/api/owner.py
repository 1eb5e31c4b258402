"""What Flask views need of routing: the env a request names (resolved once, by the lean path), and siblings."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, request

from ..errors import GymServeError, InstanceLost, UnknownInstance
from ..pipeline.lean import resolution
from ..routing import peers
from ..routing.forward import FORWARDED_HEADER, REQUEST_HEADERS
from ..routing.resolve import Where
from ..worker import Worker
from .common import worker


def local_id(instance_id: str) -> str:
    """`instance_id` if this worker holds it; else the error its resolution calls for.

    The lean path has already forwarded a sibling's env; "another replica's" reads exactly like
    "unknown", and text that is not an id never reaches anything else.
    """
    where = resolution(worker(), request.environ, instance_id).where
    if where is Where.LOCAL:
        return instance_id
    if where is Where.LOST:
        raise InstanceLost(instance_id)
    raise UnknownInstance(instance_id[:100])


def place_create(weight: int = 1) -> Response | None:
    """A create goes to the sibling that Worker.placement_for picks (this worker is full, or holds more than the
    placement tolerance above the least loaded one; a vector env weighs its sub-envs); None: create here, which
    answers 503 if the replica is full.

    The cost: a keep-alive client whose create was forwarded has its steps forwarded too (one Unix-socket hop).
    Through the router that changes nothing (its pooled connections land on any worker anyway), and to a replica
    directly balance is worth more: a SIGKILLed worker loses its share, not 60 % of the envs.
    """
    w = worker()
    # Draining: this worker refuses the create itself (503 draining), as every sibling would.
    if w.forwarder is None or request.headers.get(FORWARDED_HEADER) or w.draining.is_set():
        return None
    slot = w.placement_for(weight)
    if slot is None:
        return None
    try:
        return forward_to(w, slot, "")
    except InstanceLost:
        return None  # that sibling just went away (its socket is gone): create here after all


def farm_answers(path: str, accept: str) -> Iterator[bytes]:
    """Every other live worker's answer to GET `path`, then every replica's when GYMSERVE_PEERS_DNS is set: the
    rest of a farm-wide list (the views merge by instance id: a replica may answer for this one too).

    No replica is asked when another replica asked (routing.peers), no worker when a sibling did.
    """
    w = worker()
    if not request.headers.get(FORWARDED_HEADER) and not request.headers.get(peers.FANOUT_HEADER):
        yield from peers.get_from_all(w.settings, path, {"Accept": accept})
    yield from _sibling_answers(w, path, accept)


def _sibling_answers(w: Worker, path: str, accept: str) -> Iterator[bytes]:
    """Every other live worker's answer to GET `path`: the rest of a replica-wide list.

    Nothing when this request was itself forwarded (the asking worker collects) or the worker stands alone.
    """
    if w.forwarder is None or w.replica is None or request.headers.get(FORWARDED_HEADER):
        return
    for slot in w.replica.live_slots():
        if slot == w.owner.slot:
            continue
        try:
            answer = w.forwarder.send(slot, "GET", path, "", {"Accept": accept}, b"")
        except GymServeError:
            continue  # that worker just died: its envs are gone, nothing to list
        if answer.status == 200:
            yield answer.body


def forward_to(w: Worker, slot: int, instance_id: str) -> Response:
    assert w.forwarder is not None
    headers = {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    query = request.query_string.decode("latin-1")
    answer = w.forwarder.send(
        slot, request.method, request.path, query, headers, request.get_data(cache=False), instance_id
    )
    # Tell the client (and benchmarks) that this answer took a hop: keep-alive clients should not see it.
    return Response(answer.body, status=answer.status, headers={**answer.headers, FORWARDED_HEADER: "1"})
