"""The chart's router config: the compose router's rules with Kubernetes names, and an id regex that admits only this
release's pods."""

from __future__ import annotations

import difflib
import re

import pytest
from helmchart import FULLNAME, NAMESPACE, ROOT, render

pytestmark = pytest.mark.helm

COMPOSE_ROUTER = ROOT / "deploy" / "router" / "default.conf.template"
COMPOSE_NODE = "[0-9a-f]{12}"  # a compose replica: Docker's short container id
CHART_NODE = FULLNAME + "-(?:0|[1-9][0-9]{0,3})"  # FULLNAME has no regex metacharacters
# The only directives that may differ: where names are resolved and where requests go.
MAY_DIFFER = ("resolver ", "proxy_pass ", "set $gs_pool ")
HEX = "0123456789abcdef" * 2


def directives(config: str, node_pattern: str) -> list[str]:
    """The config without comments and blank lines, with the node pattern made neutral."""
    lines = []
    for line in config.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("resolver "):
            stripped = stripped.split("#", 1)[0].rstrip()  # its trailing comment names the DNS
        lines.append(stripped.replace(node_pattern, "<NODE>"))
    return lines


def test_chart_router_is_the_compose_router_with_kubernetes_names() -> None:
    # compose fills in the app's port at start (envsubst); Helm already did.
    compose = [
        line.replace("${GYMSERVE_PORT}", "8000") for line in directives(COMPOSE_ROUTER.read_text(), COMPOSE_NODE)
    ]
    chart = directives(render().router_config(), CHART_NODE)
    drift = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, compose, chart, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        pairs = list(zip(compose[a1:a2], chart[b1:b2], strict=False))
        same_shape = op == "replace" and a2 - a1 == b2 - b1
        if not same_shape or not all(a.startswith(MAY_DIFFER) and a.split()[0] == b.split()[0] for a, b in pairs):
            drift.append("\n".join(difflib.unified_diff(compose[a1:a2], chart[b1:b2], "compose", "chart", lineterm="")))
    assert not drift, "the chart's router drifted from deploy/router/default.conf.template:\n" + "\n".join(drift)


def test_node_pattern_is_the_release_pod_names() -> None:
    assert f"(?<gs_node>{CHART_NODE})\\." in render().router_config()


def _id_location() -> re.Pattern[str]:
    config = render().router_config()
    regex = re.search(r'location ~ "(\^/v\(\?<gs_api>[^"]+)"', config)
    assert regex, "no location for instance ids"
    return re.compile(regex[1].replace("(?<", "(?P<"))


@pytest.mark.parametrize("node", [f"{FULLNAME}-0", f"{FULLNAME}-1", f"{FULLNAME}-42", f"{FULLNAME}-9999"])
def test_ids_of_this_release_are_proxied_to_their_pod(node: str) -> None:
    m = _id_location().match(f"/v1/envs/{node}.0-123.{HEX}/step/")
    assert m and m["gs_node"] == node and m["gs_id"] == f"{node}.0-123.{HEX}"
    assert _id_location().match(f"/v2/envs/{node}.1-7.{HEX}")


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/envs/{FULLNAME}-router.0-1.{HEX}/",  # a name in the release's prefix that is not a pod
        f"/v1/envs/{FULLNAME}-01.0-1.{HEX}/",  # not an ordinal
        f"/v1/envs/{FULLNAME}-10000.0-1.{HEX}/",
        f"/v1/envs/other-gymserve-0.0-1.{HEX}/",  # another release
        f"/v1/envs/{FULLNAME}-0.example.com.0-1.{HEX}/",  # a host name smuggled into the node
        f"/v1/envs/{FULLNAME}-0:8080.0-1.{HEX}/",
        f"/v1/envs/{FULLNAME}-0.0-1.{HEX[:-1]}/",
        f"/v1/envs/{FULLNAME}-0.0-1.{HEX}x/",
        f"/v3/envs/{FULLNAME}-0.0-1.{HEX}/",
    ],
)
def test_other_ids_never_reach_an_upstream(path: str) -> None:
    assert not _id_location().match(path)


def test_upstreams_are_cluster_dns_names_of_this_namespace() -> None:
    config = render(None, "router.clusterDomain=k8s.example.").router_config()
    assert f"$gs_node.{FULLNAME}-pods.{NAMESPACE}.svc.k8s.example:8000;" in config
    assert f"$gs_pool {FULLNAME}-backend.{NAMESPACE}.svc.k8s.example;" in config
