"""Which TCP flows a set of rendered NetworkPolicies admits, as a CNI that enforces them decides.

A flow (source pod, destination pod, port) passes when the source's egress and the destination's ingress both
admit it: a pod no policy of that direction selects is open in that direction. Named ports are resolved against
the destination's container ports. Enough of networking.k8s.io/v1 for the chart's policies: matchLabels,
matchExpressions (In, NotIn, Exists, DoesNotExist), namespaceSelector, ipBlock (external addresses), endPort.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ANY = "*"  # a table's source or destination that stands for every endpoint the policies do not govern


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace set) or an address outside the cluster (namespace None)."""

    name: str
    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return other.namespace is None  # pod addresses are taken to lie outside any ipBlock the chart writes
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], other.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, destination: Endpoint) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        want = p["port"]
        number = destination.ports.get(want) if isinstance(want, str) else want
        if number is not None and (number == port or number <= port <= p.get("endPort", number)):
            return True
    return False


def _side_admits(
    policies: list[dict[str, Any]], pod: Endpoint, other: Endpoint, port: int, destination: Endpoint, kind: str
) -> bool:
    """Whether the policies that select `pod` for `kind` (Ingress or Egress) admit its flow with `other`."""
    if pod.namespace is None:
        return True
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", pod.namespace) == pod.namespace
        and matches(p["spec"]["podSelector"], pod.labels)
        and kind in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    key, peers_key = kind.lower(), "from" if kind == "Ingress" else "to"
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", pod.namespace)
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, other, namespace) for peer in peers)) and _port_matches(
                rule.get("ports"), port, destination
            ):
                return True
    return False


def admitted(policies: list[dict[str, Any]], source: Endpoint, destination: Endpoint, port: int) -> bool:
    return _side_admits(policies, source, destination, port, destination, "Egress") and _side_admits(
        policies, destination, source, port, destination, "Ingress"
    )


def flows(
    policies: list[dict[str, Any]], endpoints: Iterable[Endpoint], ports: Iterable[int], governed: set[str]
) -> set[tuple[str, str, int]]:
    """Every (source, destination, port) the policies admit where either end is one of `governed` (the pods the
    policies are about; between two other pods they decide nothing). An endpoint to itself is one pod of its kind
    to another (a replica to a replica)."""
    endpoints, ports = list(endpoints), sorted(set(ports))
    return {
        (s.name, d.name, port)
        for s in endpoints
        for d in endpoints
        if s.name in governed or d.name in governed
        for port in ports
        if admitted(policies, s, d, port)
    }


def expand(
    table: Iterable[tuple[str, str, int]], endpoints: Iterable[Endpoint], governed: set[str]
) -> set[tuple[str, str, int]]:
    """A table's flows with ANY replaced by every endpoint outside `governed`, as `flows` counts them."""
    names = [e.name for e in endpoints if e.name not in governed]
    return {
        (s, d, port)
        for source, destination, port in table
        for s in (names if source == ANY else [source])
        for d in (names if destination == ANY else [destination])
        if s in governed or d in governed
    }
