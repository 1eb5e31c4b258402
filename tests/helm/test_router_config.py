"""The router's config: one template for compose and the chart, an id regex that is the app's, and that admits
only this farm's replicas."""

from __future__ import annotations

import os
import re

import pytest
from helmchart import CHART, FULLNAME, NAMESPACE, ROOT, render
from routerconf import (
    MOUNTED_AT,
    POOLS_MOUNTED_AT,
    POOLS_SCRIPT,
    POOLS_VARIABLES,
    TEMPLATE,
    chart_env,
    compose_env,
    compose_router,
    id_location,
    python_regex,
    template_variables,
)
from routerconf import render as render_template

from gymserve.routing.ids import INSTANCE_ID_PATTERN, IdMinter, Owner
from gymserve.settings import NODE_ID_PATTERN

pytestmark = pytest.mark.helm

COMPOSE_NODE = "[0-9a-f]{12}"  # a compose replica: Docker's short container id
CHART_NODE = FULLNAME + "-(?:0|[1-9][0-9]{0,3})"  # FULLNAME has no regex metacharacters
HEX = "0123456789abcdef" * 2


# --- one file ---------------------------------------------------------------------------------------------


def test_compose_mounts_the_charts_template_read_only() -> None:
    volumes = compose_router()["volumes"]
    assert volumes == [
        f"./{TEMPLATE.relative_to(ROOT)}:{MOUNTED_AT}:ro",
        f"./{POOLS_SCRIPT.relative_to(ROOT)}:{POOLS_MOUNTED_AT}:ro",
        "prometheus-targets:/gymserve-targets",  # where router-pools.sh lists the replicas for Prometheus
    ]
    # The image's entrypoint runs only executable scripts (git keeps the bit; the chart sets defaultMode).
    assert os.access(POOLS_SCRIPT, os.X_OK)


def test_chart_ships_the_pools_script_unchanged_and_executable() -> None:
    rendered = render()
    router_cm = rendered.one("ConfigMap", f"{FULLNAME}-router")
    assert router_cm["data"]["router-pools.sh"] == POOLS_SCRIPT.read_text()
    pod = rendered.router["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "pools")
    assert volume["configMap"]["defaultMode"] == 0o555
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "pools")
    assert mount["mountPath"] == POOLS_MOUNTED_AT and mount["readOnly"] is True


def test_chart_ships_the_template_unchanged() -> None:
    rendered = render()
    assert rendered.router_config() == TEMPLATE.read_text()
    mounts = rendered.router["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "templates", "mountPath": MOUNTED_AT.rsplit("/", 1)[0], "readOnly": True} in mounts


def test_no_other_router_config_in_the_repository() -> None:
    copies = [
        p.relative_to(ROOT)
        for p in [*ROOT.glob("deploy/**/*"), *CHART.glob("**/*")]
        if p.is_file() and p != TEMPLATE and ("server {" in p.read_text(errors="replace") or "router.conf" in p.name)
    ]
    assert not copies, f"a second router config: {copies}"


def test_compose_and_chart_fill_in_every_variable_and_only_those() -> None:
    wanted = template_variables()
    assert wanted == {
        "NGINX_LOCAL_RESOLVERS",
        "GYMSERVE_ROUTER_NODE_PATTERN",
        "GYMSERVE_ROUTER_NODE_DOMAIN",
        "GYMSERVE_ROUTER_BACKEND",
        "GYMSERVE_PORT",
        "GYMSERVE_MAX_BODY_BYTES",
        "GYMSERVE_ROUTER_CONNECTIONS_PER_CLIENT",
        "GYMSERVE_ROUTER_REQUESTS_PER_SECOND",
        "GYMSERVE_ROUTER_REQUEST_BURST",
    }
    for name, env in {"compose": compose_env(), "chart": chart_env(render())}.items():
        substituted = {n for n in env if re.search(env["NGINX_ENVSUBST_FILTER"], n)}
        assert wanted <= substituted <= wanted | POOLS_VARIABLES, name
        assert "GYMSERVE_ROUTER_REPLICAS" in substituted, name
        config = render_template(env)
        assert not template_variables(config), f"{name} leaves {template_variables(config)} to nginx"


# --- the id pattern is the app's ----------------------------------------------------------------------------


def test_id_pattern_is_the_apps() -> None:
    """The template's id regex is ids.INSTANCE_ID_PATTERN, with the node part left to each farm (and the slot, which
    picks a worker's own pool, captured too)."""
    app = re.sub(r"\(\?P<(?:gen|token)>([^()]*)\)", r"\1", INSTANCE_ID_PATTERN).replace("(?P<slot>", "(?<gs_slot>")
    app = app.replace(f"(?P<node>{NODE_ID_PATTERN})", "(?<gs_node>${GYMSERVE_ROUTER_NODE_PATTERN})")
    assert id_location(TEMPLATE.read_text()) == f"^/v[12]/envs/(?<gs_id>{app})(?:/|$)"


@pytest.mark.parametrize(
    ("farm", "node"), [("compose", "0123456789ab"), *(("chart", f"{FULLNAME}-{n}") for n in (0, 1, 42, 9999))]
)
def test_ids_the_replicas_mint_are_proxied_to_their_replica(farm: str, node: str) -> None:
    env = compose_env() if farm == "compose" else chart_env(render())
    location = python_regex(id_location(render_template(env)))
    for slot, generation in [(0, 1), (7, 123), (999, 999999999)]:
        instance_id = IdMinter(Owner(node, slot, generation)).mint()
        m = location.match(f"/v1/envs/{instance_id}/step/")
        assert m and m["gs_node"] == node and m["gs_id"] == instance_id
        assert location.match(f"/v2/envs/{instance_id}")


def test_node_patterns_admit_only_names_the_app_accepts() -> None:
    assert compose_env()["GYMSERVE_ROUTER_NODE_PATTERN"] == COMPOSE_NODE
    assert chart_env(render())["GYMSERVE_ROUTER_NODE_PATTERN"] == CHART_NODE
    for pattern in (COMPOSE_NODE, CHART_NODE):
        for node in ["0123456789ab", "abcdef012345", f"{FULLNAME}-0", f"{FULLNAME}-9999"]:
            if re.fullmatch(pattern, node):
                assert re.fullmatch(NODE_ID_PATTERN, node), (pattern, node)


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
        f"/v1/envs/{FULLNAME}-0.0-1234-1.{HEX}/",
        f"/v3/envs/{FULLNAME}-0.0-1.{HEX}/",
        f"/v1/envs/0123456789ab.0-1.{HEX}/",  # a compose node
    ],
)
def test_other_ids_never_reach_an_upstream_of_the_chart(path: str) -> None:
    assert not python_regex(id_location(render_template(chart_env(render())))).match(path)


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/envs/gymserve.0-1.{HEX}/",  # the service name
        f"/v1/envs/prometheus.0-1.{HEX}/",
        f"/v1/envs/0123456789abc.0-1.{HEX}/",
        f"/v1/envs/0123456789AB.0-1.{HEX}/",
        f"/v1/envs/0123456789ab.0-1.{HEX}@evil.example/",
        f"/v1/envs/{FULLNAME}-0.0-1.{HEX}/",  # a chart node
    ],
)
def test_other_ids_never_reach_an_upstream_of_compose(path: str) -> None:
    assert not python_regex(id_location(render_template(compose_env()))).match(path)


# --- where the chart's router sends requests ----------------------------------------------------------------


def test_upstreams_are_cluster_dns_names_of_this_namespace() -> None:
    env = chart_env(render(None, "router.clusterDomain=k8s.example."))
    config = render_template(env)
    assert f"proxy_pass http://$gs_node.{FULLNAME}-pods.{NAMESPACE}.svc.k8s.example:8000;" in config
    assert f"set $gs_pool {FULLNAME}-backend.{NAMESPACE}.svc.k8s.example;" in config


def test_compose_upstreams_are_container_names_and_the_service() -> None:
    config = render_template(compose_env())
    assert "proxy_pass http://$gs_node:8000;" in config
    assert "set $gs_pool gymserve;" in config
    assert "resolver 127.0.0.11 valid=2s ipv6=off;" in config
