"""Farm-wide lists and bulk deletes: this worker's answer, then every other worker's and replica's."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..codec import values
from ..errors import GymServeError, InvalidValue
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..routing import peers
from ..routing.forward import Forwarder
from .answers import EnvList


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

    def list_page(self, caller: Caller, query: str, page: Page, mine: Mapping[str, Any]) -> EnvList:
        """One page of the caller's envs on the whole farm: this worker's (`mine`, id -> summary, all after the
        cursor) merged with every other worker's and replica's own first page after it (the query goes along)."""
        found = dict(mine)
        more = False
        for body in self.answers(caller, "/v2/envs", values.MSGPACK, query):
            answer = values.loads(body, values.MSGPACK)
            found.update((env["instance_id"], env) for env in answer["envs"])
            more = more or answer.get("next_cursor") is not None
        return page.merged(found, more)

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


# --- pages of a farm-wide list ---

_LIMIT = re.compile(r"[0-9]{1,9}")
CURSOR = r"^[a-z0-9.-]{0,110}$"  # an instance id's characters and length; empty: the first page (the OpenAPI's too)
_CURSOR = re.compile(CURSOR)


@dataclass(frozen=True, slots=True)
class Page:
    """Which envs of the ordered list one answer holds: at most `limit` whose ids sort after `cursor`.

    The list is ordered by instance id, the one order every worker and replica agrees on without talking, so
    that a cursor (the last id of the previous page) pages the merged list stably: each answer holds its own
    first `limit` ids after the cursor, and the merged page is the first `limit` of their union.
    """

    limit: int
    cursor: str | None

    @classmethod
    def of(cls, limit: str | None, cursor: str | None, max_page: int) -> Page:
        """The page a query asks for (no limit: the largest page); a 422 naming `limit` or `cursor`."""
        if limit is None:
            size = max_page
        elif not _LIMIT.fullmatch(limit) or not 1 <= int(limit) <= max_page:
            raise InvalidValue(
                "limit", f"expected an integer from 1 to {max_page} (GYMSERVE_LIST_MAX_PAGE), got {limit[:20]!r}"
            )
        else:
            size = int(limit)
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            raise InvalidValue("cursor", "expected the next_cursor of the previous page")
        return cls(size, cursor or None)

    def after(self, instance_id: str) -> bool:
        return self.cursor is None or instance_id > self.cursor

    def merged(self, found: Mapping[str, Any], more: bool) -> EnvList:
        """The answer: the first `limit` of `found` (id -> summary, all after the cursor) in id order, and the cursor
        of the next page when there is more (`more`: an answer merged in said so)."""
        ids = sorted(found)
        page = ids[: self.limit]
        more = (more or len(ids) > self.limit) and bool(page)
        return EnvList([found[i] for i in page], page[-1] if more else None)
