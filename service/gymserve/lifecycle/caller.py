"""Who a request acts for: built once per request by the front controller and passed to every verb on envs."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..errors import GymServeError
from ..routing.resolve import Resolution
from ..tenancy.tenants import ANONYMOUS, Tenant


class Caller(NamedTuple):
    """The tenant a request authenticated as, and how far it may still travel (a NamedTuple: made on every request,
    it costs a quarter of a frozen dataclass's microsecond).

    `forwarded`: a sibling worker sent it over its private socket (the peer server says so, never a header), so it
    goes no further. `fanned_out`: another replica sent it as part of a farm-wide list, delete or batch, so it
    reaches no other replica. `authorization`: the caller's own key, with which other replicas are asked.
    `resolution`: where the env that the path names lives, decided once (None when the path names none).
    `answer_late`: how the deadline watchdog answers this request itself when its env call is stuck (writes the
    error to its connection, which is then closed); None where nobody can (a test client).
    """

    tenant: Tenant = ANONYMOUS
    forwarded: bool = False
    fanned_out: bool = False
    authorization: str | None = None
    resolution: Resolution | None = None
    answer_late: Callable[[GymServeError], None] | None = None

    @property
    def may_forward(self) -> bool:
        """Whether this request may still take its one hop to a sibling worker."""
        return not self.forwarded

    @property
    def may_fan_out(self) -> bool:
        """Whether this request may still reach other workers and replicas (a list, bulk delete or batch)."""
        return not self.forwarded and not self.fanned_out


ANYONE = Caller()  # the open server's caller, and tests'
