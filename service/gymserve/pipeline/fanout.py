"""Farm-wide lists and bulk deletes: this worker's answer, then every other worker's and replica's."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import GymServeError
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..routing import peers
from ..routing.forward import Forwarder


class Fanout:
    """Asks the other workers of this replica (over their sockets) and, with GYMSERVE_PEERS_DNS, the other replicas."""

    def __init__(self, envs: Envs, forwarder: Forwarder | None) -> None:
        self.envs = envs
        self.forwarder = forwarder

    def answers(self, caller: Caller, path: str, accept: str, query: str = "", method: str = "GET") -> Iterator[bytes]:
        """Every replica's answer to `method path?query` when GYMSERVE_PEERS_DNS is set, then every other live
        worker's: the rest of a farm-wide list or bulk delete (a list merges by instance id: a replica may answer for
        this one too; a delete counts each env once, since an env closed already is not closed again).

        No replica is asked when another replica asked, no worker when a sibling did. Another replica is asked with
        the caller's own key, so it lists (or deletes) that tenant's envs and no one else's.
        """
        if caller.may_fan_out:
            headers = {"Accept": accept}
            if caller.authorization is not None:
                headers["Authorization"] = caller.authorization
            yield from peers.ask_all(self.envs.settings, path + (f"?{query}" if query else ""), headers, method)
        yield from self._siblings(caller, path, accept, method, query)

    def _siblings(self, caller: Caller, path: str, accept: str, method: str, query: str) -> Iterator[bytes]:
        """Every other live worker's answer: nothing when this request was itself forwarded (the asking worker
        collects) or the worker stands alone."""
        if self.forwarder is None or not caller.may_forward:
            return
        me = self.envs.owner.slot
        for slot in self.envs.placement.live_slots():
            if slot == me:
                continue
            try:
                answer = self.forwarder.send(
                    slot, method, path, query, {"Accept": accept}, b"", tenant=caller.tenant.name
                )
            except GymServeError:
                continue  # that worker just died: its envs are gone, nothing to list
            if answer.status == 200:
                yield answer.body
