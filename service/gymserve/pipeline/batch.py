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
from dataclasses import dataclass, field
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
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..routing import peers
from ..routing.forward import Forwarder
from ..routing.resolve import Where, resolve
from ..settings import Settings
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


class Batches:
    """Batch stepping for this worker: its own items stepped here, the rest sent to their workers and replicas."""

    def __init__(self, envs: Envs, forwarder: Forwarder | None) -> None:
        self.envs = envs
        self.forwarder = forwarder

    def step(self, items: list[BatchItem], caller: Caller, media_type: str = values.MSGPACK) -> list[Result]:
        """Every item's answer or error, in request order.

        Each sibling's items are forwarded for the caller's tenant, another replica's (only when the caller may fan
        out: a replica's sub-batch goes no further) with the caller's own key; here, the registry hides other
        tenants' envs. Their answers are asked in `media_type`, the one this answer will be written in, and relayed
        as they are (values.Wire).
        """
        plan = self._plan(items, caller)
        waits = bool(plan.remote or plan.groups)
        if waits:  # before anything is sent or stepped: a tenant over its share gets its 429 for the whole batch
            self.envs.deadlines.admit(caller.tenant.name)
        # Every sub-batch is sent from this thread before it steps its own items, and read after: sent from a
        # thread of a pool, it waited for the GIL this thread holds while it steps, and the workers took turns
        # (measured: a batch over two replicas took as long as both halves one after the other).
        pending = [
            *(
                (
                    _begin_replica(self.envs.settings, *to, [items[i] for i in idx], caller.authorization, media_type),
                    idx,
                )
                for to, idx in plan.remote.items()
            ),
            *(
                (self._begin_group(slot, [items[i] for i in idx], caller, media_type), idx)
                for slot, idx in plan.groups.items()
            ),
        ]
        for i in plan.local:
            plan.results[i] = self._step_local(items[i], caller)
        if waits:
            with self.envs.deadlines.waiting(items[0].id, caller.tenant.name, admitted=True):
                for finish, idx in pending:
                    for i, result in zip(idx, finish(), strict=True):
                        plan.results[i] = result
        return [r for r in plan.results if r is not None]

    def _plan(self, items: list[BatchItem], caller: Caller) -> _Plan:
        """Which items are stepped here, sent to a sibling, or to another replica; the others' errors, said now."""
        plan = _Plan([None] * len(items))
        settings, me = self.envs.settings, self.envs.owner
        by_worker = bool(settings.worker_port_base)
        can_forward = self.forwarder is not None and caller.may_forward
        for i, item in enumerate(items):
            where, owner = resolve(me, item.id, can_forward)
            if where is Where.LOCAL:
                plan.local.append(i)
            elif where is Where.SIBLING and owner is not None:
                plan.groups.setdefault(owner.slot, []).append(i)
            elif where is Where.ELSEWHERE and owner is not None:
                if caller.may_fan_out and peers.reachable(settings, owner.node):
                    plan.remote.setdefault((owner.node, owner.slot if by_worker else None), []).append(i)
                else:
                    plan.results[i] = error_result(WrongReplica(item.id, owner.node, me.node))
            elif where is Where.LOST:
                plan.results[i] = error_result(InstanceLost(item.id))
            else:
                plan.results[i] = error_result(UnknownInstance(item.id[:100]))
        return plan

    def _step_local(self, item: BatchItem, caller: Caller) -> Result:
        try:
            return handler.step_item(self.envs, item, caller)
        except GymServeError as err:
            return error_result(err)
        except Exception:  # a bug in one item must not fail the others
            log.exception("batch item on %s failed", item.id)
            return error_result(Internal())

    def _begin_group(
        self, slot: int, items: list[BatchItem], caller: Caller, media_type: str
    ) -> Callable[[], list[Result]]:
        """One sibling's items as one sub-batch over its socket, sent now; the call returned reads each item's
        answer (in `media_type`), or says why there is none."""
        assert self.forwarder is not None
        headers = {"Content-Type": values.MSGPACK, "Accept": media_type}
        answer = self.forwarder.begin_post(
            slot, PATH, headers, _sub_batch(items), items[0].id, tenant=caller.tenant.name
        )

        def results() -> list[Result]:
            try:
                got = answer()
            except InstanceLost:  # the sibling exited meanwhile: each item's env moving (parked first) or lost
                return [error_result(self.envs.hop_lost(caller, item.id)) for item in items]
            except GymServeError as err:
                return [error_result(err)] * len(items)
            return _sub_batch_results(got.status, got.body, len(items), media_type)

        return results


@dataclass
class _Plan:
    results: list[Result | None]
    local: list[int] = field(default_factory=list)
    groups: dict[int, list[int]] = field(default_factory=dict)  # sibling slot -> indexes of its items
    # (other replica's node, its worker's slot when workers have ports of their own) -> indexes of its items
    remote: dict[tuple[str, int | None], list[int]] = field(default_factory=dict)


def _sub_batch(items: list[BatchItem]) -> bytes:
    return values.dumps({"items": [msgspec.structs.asdict(item) for item in items]}, values.MSGPACK)


def _begin_replica(
    settings: Settings, node: str, slot: int | None, items: list[BatchItem], authorization: str | None, media_type: str
) -> Callable[[], list[Result]]:
    """Another replica's items (of its worker in `slot`, or any) as one sub-batch to it, sent now; the call returned
    reads each item's answer (in `media_type`), or says why there is none."""
    body = _sub_batch(items)
    answer = peers.begin_batch(settings, node, body, values.MSGPACK, media_type, authorization, slot)

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
                retry_after=settings.retry_after_seconds,
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
