"""Batch stepping: many envs of one replica stepped in one request, each item answered (or failed) on its own.

Items are grouped by the worker that owns their env. This worker steps its own envs under their
locks while each sibling's group is forwarded to it once, as one sub-batch over the peer sockets
(in parallel), and the answers are merged back in request order. An item that names an env of
another replica fails alone (`wrong_replica`): a batch is never forwarded across replicas.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from .. import ids
from ..codec import native
from ..errors import GymServeError, InstanceLost, InvalidValue, MissingParameter, UnknownInstance, WrongReplica
from ..worker import Worker
from . import calls

log = logging.getLogger(__name__)

PATH = "/v2/batch/step"
ITEM_FIELDS = frozenset({"id", "action", "seq"})
Result = dict[str, Any]


@dataclass(frozen=True)
class Item:
    instance_id: str
    action: Any  # the decoded native value
    seq: int | None

    def digest(self) -> bytes:
        """What a resend of this item must repeat (only numbered items can be resent)."""
        return b"" if self.seq is None else calls.digest(b"step", native.dumps(self.action, native.MSGPACK))

    def wire(self) -> dict[str, Any]:
        item = {"id": self.instance_id, "action": self.action}
        return item if self.seq is None else {**item, "seq": self.seq}


def parse_items(value: Any, limit: int) -> list[Item]:
    """The items of a batch; a malformed one fails the whole request with a 4xx naming it (`items[3].seq`)."""
    if not isinstance(value, list) or not value:
        raise InvalidValue("items", "expected a non-empty list of {id, action, seq}")
    if len(value) > limit:
        raise InvalidValue("items", f"{len(value)} items, but a batch takes at most {limit} (GYMSERVE_MAX_BATCH_SIZE)")
    items: list[Item] = []
    seen: set[str] = set()
    for i, raw in enumerate(value):
        field = f"items[{i}]"
        if not isinstance(raw, dict):
            raise InvalidValue(field, "expected a map with id, action and (optional) seq")
        unknown = sorted(set(raw) - ITEM_FIELDS)
        if unknown:
            raise InvalidValue(f"{field}.{unknown[0]}", "unknown field; an item takes id, action and seq")
        instance_id, seq = raw.get("id"), raw.get("seq")
        if instance_id is None or raw.get("action") is None:
            raise MissingParameter(f"{field}.{'id' if instance_id is None else 'action'}")
        if not isinstance(instance_id, str):
            raise InvalidValue(f"{field}.id", "expected an instance id (a string)")
        if instance_id in seen:
            raise InvalidValue(f"{field}.id", "this env is already in the batch: step each env once per batch")
        if seq is not None and not calls.is_seq(seq):
            raise InvalidValue(f"{field}.seq", f"expected {calls.SEQ_EXPECTED}, got {seq!r}")
        seen.add(instance_id)
        items.append(Item(instance_id, raw["action"], seq))
    return items


def error_result(err: GymServeError) -> Result:
    return {"error": {"code": err.code, "message": err.message, "details": err.details}}


def step_batch(w: Worker, items: list[Item], forwarded: bool) -> list[Result]:
    """Every item's answer or error, in request order. `forwarded`: a sibling sent this, so none goes further."""
    results: list[Result | None] = [None] * len(items)
    local: list[int] = []
    groups: dict[int, list[int]] = {}  # sibling slot -> indexes of its items
    for i, item in enumerate(items):
        where = ids.parse(item.instance_id)
        if where is None:
            results[i] = error_result(UnknownInstance(item.instance_id[:100]))
        elif where.node != w.owner.node:
            results[i] = error_result(WrongReplica(item.instance_id, where.node, w.owner.node))
        elif where == w.owner:
            local.append(i)
        elif where.slot == w.owner.slot or forwarded or w.forwarder is None:
            results[i] = error_result(InstanceLost(item.instance_id))  # an older generation of a slot: it died
        else:
            groups.setdefault(where.slot, []).append(i)
    # Siblings work on their groups while this worker steps its own; with nothing local, one group runs here.
    inline = next(iter(groups)) if groups and not local else None
    pending: dict[int, Future[list[Result]]] = {
        slot: w.peer_pool.submit(_forward_group, w, slot, [items[i] for i in idx])
        for slot, idx in groups.items()
        if slot != inline
    }
    for i in local:
        results[i] = _step_local(w, items[i])
    answers = {slot: future.result() for slot, future in pending.items()}
    if inline is not None:
        answers[inline] = _forward_group(w, inline, [items[i] for i in groups[inline]])
    for slot, idx in groups.items():
        for i, result in zip(idx, answers[slot], strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _step_local(w: Worker, item: Item) -> Result:
    try:
        with w.registry.use(item.instance_id) as record:
            run = partial(calls.step_payload, record, item.action)
            return calls.answer_payload(record, item.seq, item.digest(), run)
    except GymServeError as err:
        return error_result(err)
    except Exception:  # a bug in one item must not fail the others
        log.exception("batch item on %s failed", item.instance_id)
        return {"error": {"code": "internal", "message": "internal server error", "details": {}}}


def _forward_group(w: Worker, slot: int, items: list[Item]) -> list[Result]:
    """One sibling's items as one sub-batch over its socket; if it cannot answer, each item says why."""
    assert w.forwarder is not None
    body = native.dumps({"items": [item.wire() for item in items]}, native.MSGPACK)
    headers = {"Content-Type": native.MSGPACK, "Accept": native.MSGPACK}
    try:
        answer = w.forwarder.send(slot, "POST", PATH, "", headers, body, items[0].instance_id)
    except InstanceLost:
        return [error_result(InstanceLost(item.instance_id)) for item in items]
    except GymServeError as err:
        return [error_result(err)] * len(items)
    if answer.status == 200:
        results: list[Result] = native.loads(answer.body, native.MSGPACK)["results"]
        return results
    try:  # the sibling refused the whole sub-batch (e.g. 413): every item carries its error
        error = orjson.loads(answer.body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = {"code": "internal", "message": f"the owning worker answered {answer.status}", "details": {}}
    return [{"error": error}] * len(items)
