"""What Flask views need of routing: the env a request names (resolved once, by the lean path), and siblings."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, request

from ..errors import GymServeError, InstanceLost, Unavailable, UnknownInstance
from ..lifecycle import idempotency
from ..lifecycle.envs import Worker
from ..pipeline.front import forwarded, resolution, tenant_of
from ..routing import peers
from ..routing.forward import FORWARDED_HEADER, REQUEST_HEADERS
from ..routing.resolve import Where
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

    The cost: a keep-alive client of the replica's shared port whose create was forwarded has its steps forwarded
    too (one Unix-socket hop). Through the router there is none (it reaches each env's worker on that worker's own
    port), and balance is worth the hop anyway: a SIGKILLed worker loses its share, not 60 % of the envs.
    """
    w = worker()
    # Draining: this worker refuses the create itself (503 draining), as every sibling would.
    if w.forwarder is None or forwarded(request.environ) or w.draining.is_set():
        return None
    slot = w.placement_for(weight)
    if slot is None:
        return None
    request.get_data(cache=True)  # kept, so that this worker can still make the env if the forward fails
    try:
        return forward_to(w, slot, "")
    except InstanceLost:
        return None  # that sibling just went away (its socket is gone): create here after all


def _home_of(key: str) -> int:
    """The worker slot an idempotency key belongs to, among the live ones (this one included)."""
    w = worker()
    assert w.replica is not None
    return idempotency.slot_of(key, sorted({*w.replica.live_slots(), w.owner.slot}))


def create_where_key_lives(key: str) -> Response | None:
    """A create with an Idempotency-Key goes to the worker its key hashes to, which alone remembers the key;
    None: that is this worker (or it stands alone, or the request was forwarded, or that worker just stopped:
    its keys went with it, so this worker makes the env)."""
    w = worker()
    if w.replica is None or w.forwarder is None or forwarded(request.environ):
        return None
    slot = _home_of(key)
    if slot == w.owner.slot:
        return None
    request.get_data(cache=True)  # kept, so that this worker can still make the env if the forward fails
    try:
        return forward_to(w, slot, "")
    except GymServeError:
        return None


def pass_keyed_create_on(key: str, weight: int) -> int | None:
    """The sibling that takes a keyed create its key's worker (this one) has no room for, and keeps the key;
    None: create here (room, no sibling with room, or this worker is itself the one it was passed on to)."""
    w = worker()
    if w.registry.has_room(weight) or w.forwarder is None or w.replica is None or _home_of(key) != w.owner.slot:
        return None
    return w.roomiest_sibling(weight)


def forward_create(slot: int) -> Response:
    """A keyed create to the sibling that holds (or will hold) its key: a second hop when it came forwarded."""
    w = worker()
    try:
        return forward_to(w, slot, "")
    except GymServeError:
        raise Unavailable(
            "the worker chosen for this create stopped; send it again", retry_after=w.settings.retry_after_seconds
        ) from None


def farm_answers(path: str, accept: str, query: str = "", method: str = "GET") -> Iterator[bytes]:
    """Every replica's answer to `method path?query` when GYMSERVE_PEERS_DNS is set, then every other live
    worker's: the rest of a farm-wide list or bulk delete (a list merges by instance id: a replica may answer for
    this one too; a delete counts each env once, since an env closed already is not closed again).

    No replica is asked when another replica asked (routing.peers), no worker when a sibling did. Another
    replica is asked with the caller's own key, so it lists (or deletes) that tenant's envs and no one else's.
    """
    w = worker()
    if not forwarded(request.environ) and not request.headers.get(peers.FANOUT_HEADER):
        headers = {"Accept": accept}
        if (key := request.headers.get("Authorization")) is not None:
            headers["Authorization"] = key
        yield from peers.ask_all(w.settings, path + (f"?{query}" if query else ""), headers, method)
    yield from sibling_answers(path, accept, method, query)


def sibling_answers(path: str, accept: str, method: str = "GET", query: str = "") -> Iterator[bytes]:
    """Every other live worker's answer to `method path?query`: the rest of a replica-wide list (or bulk delete).

    Nothing when this request was itself forwarded (the asking worker collects) or the worker stands alone.
    """
    w = worker()
    if w.forwarder is None or w.replica is None or forwarded(request.environ):
        return
    for slot in w.replica.live_slots():
        if slot == w.owner.slot:
            continue
        try:
            answer = w.forwarder.send(
                slot, method, path, query, {"Accept": accept}, b"", tenant=tenant_of(request.environ).name
            )
        except GymServeError:
            continue  # that worker just died: its envs are gone, nothing to list
        if answer.status == 200:
            yield answer.body


def forward_to(w: Worker, slot: int, instance_id: str) -> Response:
    assert w.forwarder is not None
    headers = {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    query = request.query_string.decode("latin-1")
    answer = w.forwarder.send(
        slot,
        request.method,
        request.path,
        query,
        headers,
        request.get_data(cache=False),
        instance_id,
        tenant=tenant_of(request.environ).name,
    )
    # Tell the client (and benchmarks) that this answer took a hop: keep-alive clients should not see it.
    return Response(answer.body, status=answer.status, headers={**answer.headers, FORWARDED_HEADER: "1"})
