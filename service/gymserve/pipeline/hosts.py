"""Which Host headers this server answers to (GYMSERVE_ALLOWED_HOSTS), so that no web page reaches it by DNS rebinding.

A page on evil.example whose name is made to resolve to 127.0.0.1 talks to a local server as its own origin, and
reads every answer; its requests still carry `Host: evil.example`. Refusing every Host the server is not known by
closes that door. An IP address in the Host cannot come from a rebound name, so networks (CIDR) are safe items
for the peers of a farm, which reach each other by address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::[0-9]{1,5})?")


def network(item: str) -> IPNetwork | None:
    """The network an item names: an IP address (its own /32 or /128), bracketed or not, or a CIDR network; None
    for a name. ValueError for a CIDR network that is none."""
    bare = item.strip("[]")
    if "/" in item:
        return ipaddress.ip_network(bare, strict=False)
    try:
        return ipaddress.ip_network(bare)
    except ValueError:
        return None


def host_of(header: str) -> str | None:
    """The host of a Host header, lowercase, without its port, brackets or final dot; None when it is no host."""
    match = _HOST.fullmatch(header.strip())
    return match["host"].strip("[]").lower().rstrip(".") if match else None


# Decisions kept per Host header: a server sees a handful of them, and deciding one parses an IP address (about
# 10 us, on every request). Bounded, since the header is the client's: past the bound the memo starts over.
_MEMO_SIZE = 1024


class AllowedHosts:
    """The items of GYMSERVE_ALLOWED_HOSTS: names, '.domain' suffixes, IP addresses and networks, or '*'."""

    def __init__(self, items: Iterable[str]) -> None:
        self._memo: dict[str, bool] = {}
        self.every = False
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[IPNetwork] = []
        for item in items:
            if item == "*":
                self.every = True
            elif (net := network(item)) is not None:
                self.networks.append(net)
            elif item.startswith("."):
                self.suffixes.append(item.lower().rstrip("."))
            else:
                self.names.add(item.lower().rstrip("."))

    def admits(self, header: str | None) -> bool:
        """Whether a request with this Host header may be answered (one without a Host is no browser's)."""
        if self.every or header is None:
            return True
        known = self._memo.get(header)
        if known is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            known = self._memo[header] = self._decide(header)
        return known

    def _decide(self, header: str) -> bool:
        host = host_of(header)
        if host is None:
            return False
        if host in self.names or any(host.endswith(s) or host == s[1:] for s in self.suffixes):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)
