"""The NetworkPolicies admit exactly the flows the app needs, in both directions, and no other.

One table of flows (from, to, port), its ports taken from the settings gymserve reads in the rendered pods (as
gymserve opens them), is compared with every flow between the chart's pods and a few others that the rendered
policies admit: a flow added to the app and not to the policies, or the other way round, fails here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from helmchart import FULLNAME, NAMESPACE, Rendered, env_of, render
from netpolicy import ANY, Endpoint, expand, flows

from gymserve.settings import Settings

pytestmark = pytest.mark.helm

GOVERNED = {"server", "router", "store"}  # the pods the chart's policies select
DNS_PORT = 53
OTHER_PORT = 9999  # no one's


def settings_of(rendered: Rendered) -> Settings:
    env = env_of(rendered.server)
    return Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)}, node_id=f"{FULLNAME}-0")


def container_ports(pod_spec: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports", []) if "name" in p}


def endpoints(rendered: Rendered, prometheus_namespace: str = NAMESPACE) -> list[Endpoint]:
    """The chart's pods as rendered, and the others: Prometheus (in `prometheus_namespace`, where the values say
    it is) and another pod labelled so elsewhere, an ingress controller, the cluster DNS, a pod of the namespace
    and one of another, an address outside the cluster (where an external store lives)."""
    templates = {
        "server": rendered.statefulset["spec"]["template"],
        "router": rendered.router["spec"]["template"],
    }
    store = [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == f"{FULLNAME}-store"]
    if store:
        templates["store"] = store[0]["spec"]["template"]
    found = [
        Endpoint(name, NAMESPACE, dict(t["metadata"]["labels"]), container_ports(t["spec"]))
        for name, t in templates.items()
    ]
    test = rendered.tests[0]
    return [
        *found,
        Endpoint("test", NAMESPACE, dict(test["metadata"]["labels"])),
        Endpoint("prometheus", prometheus_namespace, {"app.kubernetes.io/name": "prometheus"}),
        Endpoint("stray-prometheus", "elsewhere", {"app.kubernetes.io/name": "prometheus"}),
        Endpoint("client", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        Endpoint("dns", "kube-system", {"k8s-app": "kube-dns"}),
        Endpoint("neighbour", NAMESPACE, {"app": "neighbour"}),
        Endpoint("stranger", "elsewhere", {"app": "neighbour"}),
        Endpoint("outside", None),
    ]


def needed(rendered: Rendered, router_from: str = ANY) -> set[tuple[str, str, int]]:
    """The table: the flows the app needs, from the settings of the rendered pods. `router_from`: who the values
    let reach the router (networkPolicy.routerFrom; everyone when empty)."""
    settings = settings_of(rendered)
    router_port = container_ports(rendered.router["spec"]["template"]["spec"])["http"]
    api = settings.port
    workers = [settings.worker_port(s) for s in range(settings.worker_slots)] if settings.worker_port_base else []
    table = {
        (router_from, "router", router_port),  # the router's clients
        *{("router", "server", port) for port in [api, *workers]},  # the router to the pod and worker of an env
        *{("server", "server", port) for port in [api, *workers]},  # a batch's sub-batches and a list's questions
        ("prometheus", "server", settings.metrics_port or api),  # /metrics, on a port of its own when set
        ("test", "server", api),  # the helm test reads each pod's /metrics
        ("server", ANY, DNS_PORT),  # peers are found by name; the cluster DNS may run anywhere
        ("router", ANY, DNS_PORT),
    }
    if settings.store_url:  # the farm's park store (and counts); an external one has an address no policy can name
        url = urlsplit(settings.store_url)
        store_port = url.port or 6379
        own = rendered.has("Deployment") and any(
            d["metadata"]["name"] == f"{FULLNAME}-store" for d in rendered.of_kind("Deployment")
        )
        table.add(("server", "store" if own else ANY, store_port))
        if own:
            assert url.hostname is not None and url.hostname.startswith(f"{FULLNAME}-store.")
    return table


def ports_of(table: set[tuple[str, str, int]]) -> set[int]:
    return {port for _, _, port in table} | {OTHER_PORT, 6379, 8000, 8080, 9464}


# (ci scenario, --set values, who may reach the router, Prometheus' namespace), as those values say.
SCENARIOS: list[tuple[str | None, tuple[str, ...], str, str]] = [
    (None, (), ANY, NAMESPACE),
    (None, ("config.workers=1",), ANY, NAMESPACE),
    (None, ("config.workers=3", "config.port=8001", "config.workerPortBase=9100"), ANY, NAMESPACE),
    (None, ("config.workerPortBase=0",), ANY, NAMESPACE),
    (None, ("config.metricsPort=0",), ANY, NAMESPACE),
    (None, ("config.metricsPort=9090",), ANY, NAMESPACE),
    ("tenants-values.yaml", (), ANY, NAMESPACE),
    ("tenants-values.yaml", ("store.url=redis://:secret@valkey.example:6380/0",), ANY, NAMESPACE),
    # No store pod, an external one (tenants with no store at all are refused: test_shared_farm.py).
    ("tenants-values.yaml", ("store.enabled=false", "store.url=redis://valkey.example:6379/0"), ANY, NAMESPACE),
    (None, ("config.storeUrl=redis://valkey.example:6381/1",), ANY, NAMESPACE),
    (None, ("store.url=redis://valkey.example:6382/0",), ANY, NAMESPACE),
    (None, ("store.enabled=false",), ANY, NAMESPACE),  # no store: no pod can park, and no flow to one
    ("replicas-values.yaml", (), ANY, NAMESPACE),
    ("all-features-values.yaml", (), "client", "monitoring"),
]


@pytest.mark.parametrize(("scenario", "sets", "router_from", "prometheus_namespace"), SCENARIOS)
def test_the_policies_admit_exactly_the_flows_of_the_table(
    scenario: str | None, sets: tuple[str, ...], router_from: str, prometheus_namespace: str
) -> None:
    rendered = render(scenario, *sets)
    policies = rendered.of_kind("NetworkPolicy")
    table = needed(rendered, router_from)
    everyone = endpoints(rendered, prometheus_namespace)
    got = flows(policies, everyone, ports_of(table), GOVERNED)
    want = expand(table, everyone, GOVERNED)
    assert (sorted(want - got), sorted(got - want)) == ([], []), "(needed but dropped, admitted but not needed)"


def test_the_flow_check_sees_a_missing_flow() -> None:
    """The check itself: a policy without the pods' egress to each other's worker ports fails it."""
    rendered = render()
    policies = [dict(p) for p in rendered.of_kind("NetworkPolicy")]
    server = next(p for p in policies if p["metadata"]["name"] == FULLNAME)
    policies[policies.index(server)] = {**server, "spec": {**server["spec"], "egress": server["spec"]["egress"][1:]}}
    table = needed(rendered)
    everyone = endpoints(rendered)
    missing = expand(table, everyone, GOVERNED) - flows(policies, everyone, ports_of(table), GOVERNED)
    assert ("server", "server", 8000) in missing


@pytest.mark.parametrize("scenario", [None, "tenants-values.yaml"])
def test_the_park_store_is_admitted_with_or_without_tenants(scenario: str | None) -> None:
    """Every gymserve pod parks in and adopts from the release's store: the table has the flow, and so do the
    policies (the store's own admits the gymserve pods alone)."""
    rendered = render(scenario)
    table = needed(rendered)
    assert ("server", "store", 6379) in table
    everyone = endpoints(rendered)
    got = flows(rendered.of_kind("NetworkPolicy"), everyone, ports_of(table), GOVERNED)
    assert {(src, port) for src, dst, port in got if dst == "store"} == {("server", 6379)}
