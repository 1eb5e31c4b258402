"""The router's config: one file for compose and the chart, every variable filled in, and an id pattern that admits
the ids the replicas mint and only this farm's nodes."""

from __future__ import annotations

import re

import pytest
from helmchart import FULLNAME, ROOT, render
from routerconf import CONFIG, MOUNTED_AT, chart_env, compose_env, compose_router, config_variables

from gymserve.routing.ids import IdMinter, Owner

pytestmark = pytest.mark.helm

HEX = "0123456789abcdef" * 2


def test_compose_mounts_the_charts_config_read_only() -> None:
    assert compose_router()["volumes"] == [f"./{CONFIG.relative_to(ROOT)}:{MOUNTED_AT}:ro"]


def test_chart_ships_the_config_unchanged() -> None:
    assert render().router_config().strip() == CONFIG.read_text().strip()


def test_no_router_pools_script_or_nginx_template_is_left() -> None:
    assert not (ROOT / "helm" / "files" / "router-pools.sh").exists()
    assert not (ROOT / "helm" / "files" / "router.conf.template").exists()


@pytest.mark.parametrize("farm", ["compose", "chart"])
def test_compose_and_chart_fill_in_every_variable(farm: str) -> None:
    env = compose_env() if farm == "compose" else chart_env(render())
    optional = {"GYMSERVE_ROUTER_RESOLVER"}  # `.if defined(...)`: the container's resolv.conf without it
    missing = config_variables() - optional - set(env)
    assert not missing, missing


def id_regex(env: dict[str, str]) -> re.Pattern[str]:
    (pattern,) = re.findall(r'acl our_id var\(txn.id\) -m reg "([^"]+)"', CONFIG.read_text())
    pattern = pattern.replace("${GYMSERVE_ROUTER_NODE_PATTERN}", env["GYMSERVE_ROUTER_NODE_PATTERN"])
    return re.compile(pattern.replace("\\$", "$"))


@pytest.mark.parametrize(
    ("farm", "node"), [("compose", "0123456789ab"), *(("chart", f"{FULLNAME}-{n}") for n in (0, 1, 42, 9999))]
)
def test_ids_the_replicas_mint_are_routed_to_their_node(farm: str, node: str) -> None:
    regex = id_regex(compose_env() if farm == "compose" else chart_env(render()))
    for slot, generation in [(0, 1), (7, 123), (999, 999999999)]:
        assert regex.match(IdMinter(Owner(node, slot, generation)).mint())


@pytest.mark.parametrize(
    "iid",
    [
        f"{FULLNAME}-router.0-1.{HEX}",
        f"{FULLNAME}-01.0-1.{HEX}",
        f"some-other-host.0-1.{HEX}",
        f"{FULLNAME}-0.0-1.{HEX[:-1]}",
        f"{FULLNAME}-0.0-1.{HEX}x",
        "evil.example:80",
    ],
)
def test_other_ids_are_never_resolved_by_the_chart(iid: str) -> None:
    assert not id_regex(chart_env(render())).match(iid)
