"""The one ownership decision: where the env an instance id names lives, seen from this worker."""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from . import ids
from .ids import Owner


class Where(Enum):
    LOCAL = "local"  # this worker minted the id (the registry says whether the env still lives)
    SIBLING = "sibling"  # a live worker of this replica holds it: forward once
    LOST = "lost"  # its worker is gone (or cannot be reached from here): the env died with it
    ELSEWHERE = "elsewhere"  # another replica's id: the router sends those there; a worker never does
    REPLICA = "replica"  # the park store says another replica adopted it: sent there once
    UNKNOWN = "unknown"  # not an id of gymserve's shape at all


class Resolution(NamedTuple):
    where: Where
    owner: Owner | None


_UNKNOWN = Resolution(Where.UNKNOWN, None)


def resolve(me: Owner, instance_id: str, can_forward: bool) -> Resolution:
    """Computed once per request. `can_forward`: this worker has siblings and the request was not forwarded already.

    An older generation of this worker's own slot is a worker that died, and so is a sibling that cannot
    be reached (no siblings, or a request that already took its one hop): both read as lost, never as ours.
    """
    owner = ids.parse(instance_id)
    if owner is None:
        return _UNKNOWN
    if owner == me:
        return Resolution(Where.LOCAL, owner)
    if owner.node != me.node:
        return Resolution(Where.ELSEWHERE, owner)
    if owner.slot == me.slot or not can_forward:
        return Resolution(Where.LOST, owner)
    return Resolution(Where.SIBLING, owner)
