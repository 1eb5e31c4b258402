"""Batch stepping: many envs of one replica stepped in one request, each item answered (or failed) on its own.

Items are grouped by the worker that owns their env. This worker steps its own envs under their
locks while each sibling's group is forwarded to it once, as one sub-batch over the peer sockets
(in parallel), and the answers are merged back in request order. An item that names an env of
another replica fails alone (`wrong_replica`): a batch is never forwarded across replicas.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

import msgspec
import orjson

from ..codec import values
from ..errors import GymServeError, InstanceLost, Internal, InvalidValue, UnknownInstance, WrongReplica, error_body
from ..pipeline import handler
from ..pipeline.models import BatchItem
from ..routing.resolve import Where, resolve
from ..worker import Worker

log = logging.getLogger(__name__)

PATH = "/v2/batch/step"
Result = dict[str, Any]


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


def step_batch(w: Worker, items: list[BatchItem], forwarded: bool, tenant: str) -> list[Result]:
    """Every item's answer or error, in request order. `forwarded`: a sibling sent this, so none goes further.

    Each sibling's items are forwarded for `tenant`; here, Registry.get hides other tenants' envs.
    """
    results: list[Result | None] = [None] * len(items)
    local: list[int] = []
    groups: dict[int, list[int]] = {}  # sibling slot -> indexes of its items
    can_forward = w.forwarder is not None and not forwarded
    for i, item in enumerate(items):
        where, owner = resolve(w.owner, item.id, can_forward)
        if where is Where.LOCAL:
            local.append(i)
        elif where is Where.SIBLING and owner is not None:
            groups.setdefault(owner.slot, []).append(i)
        elif where is Where.ELSEWHERE and owner is not None:
            results[i] = error_result(WrongReplica(item.id, owner.node, w.owner.node))
        elif where is Where.LOST:
            results[i] = error_result(InstanceLost(item.id))
        else:
            results[i] = error_result(UnknownInstance(item.id[:100]))
    # Siblings work on their groups while this worker steps its own; with nothing local, one group runs here.
    inline = next(iter(groups)) if groups and not local else None
    pending: dict[int, Future[list[Result]]] = {
        slot: w.peer_pool.submit(_forward_group, w, slot, [items[i] for i in idx], tenant)
        for slot, idx in groups.items()
        if slot != inline
    }
    for i in local:
        results[i] = _step_local(w, items[i])
    answers = {slot: future.result() for slot, future in pending.items()}
    if inline is not None:
        answers[inline] = _forward_group(w, inline, [items[i] for i in groups[inline]], tenant)
    for slot, idx in groups.items():
        for i, result in zip(idx, answers[slot], strict=True):
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


def _forward_group(w: Worker, slot: int, items: list[BatchItem], tenant: str) -> list[Result]:
    """One sibling's items as one sub-batch over its socket; if it cannot answer, each item says why."""
    assert w.forwarder is not None
    body = values.dumps({"items": [msgspec.structs.asdict(item) for item in items]}, values.MSGPACK)
    headers = {"Content-Type": values.MSGPACK, "Accept": values.MSGPACK}
    try:
        answer = w.forwarder.send(slot, "POST", PATH, "", headers, body, items[0].id, tenant=tenant)
    except InstanceLost:
        return [error_result(InstanceLost(item.id)) for item in items]
    except GymServeError as err:
        return [error_result(err)] * len(items)
    if answer.status == 200:
        results: list[Result] = values.loads(answer.body, values.MSGPACK)["results"]
        return results
    try:  # the sibling refused the whole sub-batch (e.g. 413): every item carries its error
        refusal: Result = {"error": orjson.loads(answer.body)["error"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        refusal = error_result(Internal())
    return [refusal] * len(items)
