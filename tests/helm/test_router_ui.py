"""The router needs no route of its own for /ui (or for the home page, /): the page goes to any replica, each env's
frame to its replica."""

from __future__ import annotations

import re

import pytest
from helmchart import FULLNAME, render
from routerconf import chart_env, compose_env, id_location, python_regex
from routerconf import render as render_template

from gymserve.routing.ids import IdMinter, Owner

pytestmark = pytest.mark.helm

FARMS = [("compose", "0123456789ab"), ("chart", f"{FULLNAME}-3")]


def config_of(farm: str) -> str:
    return render_template(compose_env() if farm == "compose" else chart_env(render()))


@pytest.mark.parametrize(("farm", "node"), FARMS)
def test_an_envs_frame_goes_to_the_replica_its_id_names(farm: str, node: str) -> None:
    instance_id = IdMinter(Owner(node, 2, 5)).mint()
    m = python_regex(id_location(config_of(farm))).match(f"/v2/envs/{instance_id}/frame")
    assert m and m["gs_node"] == node and m["gs_id"] == instance_id


@pytest.mark.parametrize(("farm", "node"), FARMS)
def test_the_page_and_the_list_go_to_any_replica(farm: str, node: str) -> None:
    config = config_of(farm)
    regexes = [python_regex(p) for p in re.findall(r'location ~ "([^"]+)"', config)]
    exact = re.findall(r"location = (\S+)", config)
    assert regexes and "location / {" in config
    for path in ("/", "/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/v2/envs"):
        assert not any(rx.match(path) for rx in regexes) and path not in exact, path  # so: location /
