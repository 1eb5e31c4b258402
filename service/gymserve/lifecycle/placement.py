"""Where a new env goes inside a replica: this worker, or the least loaded sibling with room."""

from __future__ import annotations

import os

from ..routing.ids import Owner
from ..routing.replica import Replica
from ..settings import Settings
from .registry import Registry


class Placement:
    """Reads the replica's table of env counts (written by every worker, read without a lock) and this worker's
    registry. Without a replica (tests, a plain WSGI server) the worker stands alone and places everything here."""

    def __init__(self, settings: Settings, me: Owner, replica: Replica | None, registry: Registry) -> None:
        self.settings = settings
        self.me = me
        self.replica = replica
        self.registry = registry

    def is_live(self, slot: int) -> bool:
        """Whether a worker holds `slot` now (its socket is up): one stat, cheaper than listing them all."""
        return self.replica is not None and os.path.exists(self.replica.socket_path(slot))

    def replica_envs(self) -> int:
        return self.replica.total_envs() if self.replica else len(self.registry)

    def live_slots(self) -> list[int]:
        return self.replica.live_slots() if self.replica else [self.me.slot]

    def some_worker_has_room(self, weight: int = 1) -> bool:
        if self.registry.has_room(weight):
            return True
        if self.replica is None:
            return False
        limit = self.settings.max_envs_per_worker
        return any(self.replica.counts[slot] + weight <= limit for slot in self.replica.live_slots())

    def roomiest_sibling(self, weight: int) -> int | None:
        """The live sibling slot with the fewest envs that can take `weight` more, if the replica has room."""
        if self.replica is None or self.replica_envs() + weight > self.settings.max_envs:
            return None
        counts = {s: self.replica.counts[s] for s in self.replica.live_slots() if s != self.me.slot}
        roomy = [s for s, n in counts.items() if n + weight <= self.settings.max_envs_per_worker]
        return min(roomy, key=counts.__getitem__) if roomy else None

    def slot_for(self, weight: int) -> int | None:
        """Where a create of `weight` (sub-)envs goes: None for this worker, else the sibling slot that takes it.

        The sibling with the fewest envs, when this worker has no room or holds more than that sibling plus the
        placement tolerance: creates spread by load, not by which worker won the accept race. (The counts are
        read without a lock, so racing creates may overshoot by one each.)
        """
        if self.replica is None:
            return None
        sibling = self.roomiest_sibling(weight)
        if sibling is None or not self.registry.has_room(weight):
            return sibling
        mine = self.replica.counts[self.me.slot]
        return sibling if mine - self.replica.counts[sibling] > self.settings.placement_tolerance else None
