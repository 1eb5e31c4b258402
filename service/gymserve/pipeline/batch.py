"""Batch stepping: many envs of one replica stepped in one request, each item answered (or failed) on its own.

Items are grouped by the worker that owns their env. Each sibling's group is sent to it once, as one
sub-batch over the peer sockets, then this worker steps its own envs under their locks while the
siblings step theirs, and the answers are merged back in request order. Items of another replica go to it
as one sub-batch per replica (per worker, to its own port, with GYMSERVE_WORKER_PORT_BASE) when
GYMSERVE_PEER_NODE_PATTERN admits its name (routing.peers), once: a sub-batch from a replica goes no further;
otherwise such an item fails alone (`wrong_replica`).
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
import orjson

from ..codec import values
from ..errors import (
    GymServeError,
    InstanceLost,
    Internal,
    InvalidValue,
    OwnerTimeout,
    Unavailable,
    UnknownInstance,
    WrongReplica,
    error_body,
)
from ..lifecycle.envs import Worker
from ..routing import peers
from ..routing.resolve import Where, resolve
from . import handler
from .models import BatchItem

log = logging.getLogger(__name__)

PATH = "/v2/batch/step"
Result = dict[str, Any] | values.Wire  # an answer made here, or one relayed from another worker as it came


def checked_items(items: list[BatchItem], limit: int) -> list[BatchItem]:
    """The items of a batch, within the server's size limit and each env at most once (else a 422 naming it)."""
    if len(items) > limit:
        raise InvalidValue("items", f"{len(items)} items, but a batch takes at most {limit} (GYMSERVE_MAX_BATCH_SIZE)")
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.id in seen:
            raise InvalidValue(f"items[{i}].id", "this env is already in the batch: step each env once per batch")
        seen.add(item.id)
    return items


def error_result(err: GymServeError) -> Result:
    return error_body(err, native=True)


def step_batch(
    w: Worker,
    items: list[BatchItem],
    forwarded: bool,
    tenant: str,
    authorization: str | None = None,
    across_replicas: bool = False,
    media_type: str = values.MSGPACK,
) -> list[Result]:
    """Every item's answer or error, in request order. `forwarded`: a sibling sent this, so none goes further;
    `across_replicas`: items of other replicas may go to them (a client's batch, not another replica's).

    Each sibling's items are forwarded for `tenant`, another replica's with the caller's `authorization`;
    here, Registry.get hides other tenants' envs. Their answers are asked in `media_type`, the one this answer
    will be written in, and relayed as they are (values.Wire).
    """
    results: list[Result | None] = [None] * len(items)
    local: list[int] = []
    groups: dict[int, list[int]] = {}  # sibling slot -> indexes of its items
    # (other replica's node, its worker's slot when workers have ports of their own) -> indexes of its items
    remote: dict[tuple[str, int | None], list[int]] = {}
    by_worker = bool(w.settings.worker_port_base)
    can_forward = w.forwarder is not None and not forwarded
    for i, item in enumerate(items):
        where, owner = resolve(w.owner, item.id, can_forward)
        if where is Where.LOCAL:
            local.append(i)
        elif where is Where.SIBLING and owner is not None:
            groups.setdefault(owner.slot, []).append(i)
        elif where is Where.ELSEWHERE and owner is not None:
            if across_replicas and not forwarded and peers.reachable(w.settings, owner.node):
                remote.setdefault((owner.node, owner.slot if by_worker else None), []).append(i)
            else:
                results[i] = error_result(WrongReplica(item.id, owner.node, w.owner.node))
        elif where is Where.LOST:
            results[i] = error_result(InstanceLost(item.id))
        else:
            results[i] = error_result(UnknownInstance(item.id[:100]))
    # Every sub-batch is sent from this thread before it steps its own items, and read after: sent from a thread
    # of a pool, it waited for the GIL this thread holds while it steps, and the workers took turns (measured:
    # a batch over two replicas took as long as both halves one after the other).
    elsewhere = {
        to: _begin_replica(w, *to, [items[i] for i in idx], authorization, media_type) for to, idx in remote.items()
    }
    pending = {slot: _begin_group(w, slot, [items[i] for i in idx], tenant, media_type) for slot, idx in groups.items()}
    for i in local:
        results[i] = _step_local(w, items[i])
    for finish, idx in [
        *((pending[slot], groups[slot]) for slot in groups),
        *((elsewhere[to], remote[to]) for to in remote),
    ]:
        for i, result in zip(idx, finish(), strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _step_local(w: Worker, item: BatchItem) -> Result:
    try:
        return handler.step_item(w, item)
    except GymServeError as err:
        return error_result(err)
    except Exception:  # a bug in one item must not fail the others
        log.exception("batch item on %s failed", item.id)
        return error_result(Internal())


def _sub_batch(items: list[BatchItem]) -> bytes:
    return values.dumps({"items": [msgspec.structs.asdict(item) for item in items]}, values.MSGPACK)


def _begin_replica(
    w: Worker, node: str, slot: int | None, items: list[BatchItem], authorization: str | None, media_type: str
) -> Callable[[], list[Result]]:
    """Another replica's items (of its worker in `slot`, or any) as one sub-batch to it, sent now; the call returned
    reads each item's answer (in `media_type`), or says why there is none."""
    body = _sub_batch(items)
    answer = peers.begin_batch(w.settings, node, body, values.MSGPACK, media_type, authorization, slot)

    def results() -> list[Result]:
        try:
            status, body = answer()
        except socket.gaierror:
            # Its name does not resolve: the replica is gone, and its envs with it (the router's rule too).
            return [error_result(InstanceLost(item.id)) for item in items]
        except TimeoutError:
            timeout = OwnerTimeout(f"replica {node}, which holds this env, did not answer in time")
            return [error_result(timeout)] * len(items)
        except (OSError, http.client.HTTPException) as err:
            # It exists but refused or dropped the connection: its items may be retried (a numbered step safely).
            log.warning("batch: replica %s did not answer for %d items: %s", node, len(items), err)
            unavailable = Unavailable(
                f"replica {node}, which holds this env, did not answer; retry later",
                retry_after=w.settings.retry_after_seconds,
            )
            return [error_result(unavailable)] * len(items)
        return _sub_batch_results(status, body, len(items), media_type)

    return results


def _sub_batch_results(status: int, body: bytes, count: int, media_type: str) -> list[Result]:
    """The per-item results of a sub-batch's answer (wire trees of `media_type`), or its refusal as every item's
    error."""
    if status == 200:
        binary = values.is_msgpack(media_type)
        tree = msgpack.unpackb(body, raw=False) if binary else orjson.loads(body)
        return [values.Wire(result, binary) for result in tree["results"]]
    try:  # the other side refused the whole sub-batch (e.g. 413): every item carries its error
        refusal: Result = {"error": orjson.loads(body)["error"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        refusal = error_result(Internal())
    return [refusal] * count


def _begin_group(
    w: Worker, slot: int, items: list[BatchItem], tenant: str, media_type: str
) -> Callable[[], list[Result]]:
    """One sibling's items as one sub-batch over its socket, sent now; the call returned reads each item's answer
    (in `media_type`), or says why there is none."""
    assert w.forwarder is not None
    headers = {"Content-Type": values.MSGPACK, "Accept": media_type}
    answer = w.forwarder.begin_post(slot, PATH, headers, _sub_batch(items), items[0].id, tenant=tenant)

    def results() -> list[Result]:
        try:
            got = answer()
        except InstanceLost:
            return [error_result(InstanceLost(item.id)) for item in items]
        except GymServeError as err:
            return [error_result(err)] * len(items)
        return _sub_batch_results(got.status, got.body, len(items), media_type)

    return results
