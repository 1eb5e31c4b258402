"""Web pages cannot drive an open server: Host must be one the server is known by, and writes are JSON or msgpack."""

from __future__ import annotations

from typing import Any

import pytest

from gymserve.app import create_app
from gymserve.pipeline.hosts import AllowedHosts, host_of
from gymserve.settings import Settings, SettingsError


def app_with(**settings: Any) -> Any:
    return create_app(Settings.from_env({}, node_id="test", **settings)).test_client()


# --- Host ---


def test_the_default_admits_this_machines_names_the_bind_address_and_the_public_urls_host() -> None:
    settings = Settings.from_env({}, node_id="t", host="0.0.0.0", public_url="http://pod-0.pods.ns.svc:8000/x")
    hosts = AllowedHosts(settings.allowed_host_items)
    for header in ("localhost", "localhost:8000", "LocalHost.:1", "127.0.0.1:8000", "[::1]:8000", "0.0.0.0:8000"):
        assert hosts.admits(header), header
    assert hosts.admits("pod-0.pods.ns.svc:8000")
    for header in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", "10.0.0.1", ""):
        assert not hosts.admits(header), header


def test_items_are_names_domains_addresses_networks_or_everything() -> None:
    hosts = AllowedHosts(["farm.example", ".svc.local", "10.0.0.0/8", "fc00::/7", "192.0.2.7"])
    assert hosts.admits("FARM.example:443") and hosts.admits("a.b.svc.local") and hosts.admits("svc.local")
    assert hosts.admits("10.1.2.3:8100") and hosts.admits("[fd00::5]:80") and hosts.admits("192.0.2.7")
    assert not hosts.admits("xsvc.local") and not hosts.admits("11.0.0.1") and not hosts.admits("farm.example.evil")
    assert AllowedHosts(["*"]).admits("anything.at.all:1")
    assert host_of("[::1]:80") == "::1" and host_of("a:b:c") is None


@pytest.mark.parametrize("value", ["a b", "*.example.com", "10.0.0.0/99", "http://x"])
def test_a_bad_item_stops_the_start_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="GYMSERVE_ALLOWED_HOSTS"):
        Settings.from_env({"GYMSERVE_ALLOWED_HOSTS": value}, node_id="t")


def test_another_host_is_a_400_naming_host_on_every_api_and_route(client: Any) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    evil = {"Host": "evil.example:8000"}
    for method, path, body in [
        ("post", "/v1/envs/", {"env_id": "CartPole-v1"}),
        ("post", "/v2/envs", {"env_id": "CartPole-v1"}),
        ("get", "/v2/envs", None),
        ("get", "/v1/envs/", None),
        ("post", f"/v2/envs/{iid}/reset", {}),
        ("post", f"/v1/envs/{iid}/reset/", {}),
        ("delete", f"/v2/envs/{iid}", None),
    ]:
        resp = getattr(client, method)(path, json=body, headers=evil)
        assert resp.status_code == 400, (path, resp.status_code)
        error = resp.json.get("error", resp.json)
        assert error["details"]["field"] == "Host" and "GYMSERVE_ALLOWED_HOSTS" in error["message"]
    assert client.get(f"/v2/envs/{iid}").status_code == 200  # untouched
    # Probes and scrapes reach pods by address; the contract and the page's files are the same for anyone.
    for path in ("/healthz", "/readyz", "/metrics", "/v2/openapi.json", "/ui/"):
        assert client.get(path, headers=evil).status_code == 200, path


def test_a_star_admits_every_host_and_a_listed_name_is_admitted() -> None:
    assert app_with(allowed_hosts="*").get("/v2/envs", headers={"Host": "evil.example"}).status_code == 200
    farm = app_with(allowed_hosts="farm.example")
    assert farm.get("/v2/envs", headers={"Host": "farm.example:8080"}).status_code == 200
    assert farm.get("/v2/envs", headers={"Host": "localhost"}).status_code == 400  # the list replaces the default


# --- Content-Type of writes ---


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_write_whose_body_is_not_json_or_msgpack_is_a_415_on_both_apis(client: Any, content_type: str | None) -> None:
    """What a web page may send to another origin without a CORS preflight: forms, text/plain, a typeless blob."""
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    body = b'{"env_id": "CartPole-v1"}'
    headers = {} if content_type is None else {"Content-Type": content_type}
    before = len(client.get("/v2/envs").json["envs"])
    for path in ("/v1/envs/", "/v2/envs", f"/v1/envs/{iid}/reset/", f"/v2/envs/{iid}/reset"):
        resp = client.post(path, data=body, headers=headers)
        assert resp.status_code == 415, (path, resp.status_code)
        error = resp.json.get("error", resp.json)
        assert error["code"] == "unsupported_media_type" and error["details"]["field"] == "Content-Type"
    assert len(client.get("/v2/envs").json["envs"]) == before


def test_json_and_msgpack_writes_and_body_less_posts_still_work(client: Any) -> None:
    created = client.post("/v1/envs/", data=b'{"env_id": "CartPole-v1"}', content_type="application/json")
    assert created.status_code == 200
    iid = created.json["instance_id"]
    packed = b"\x81\xa6env_id\xabCartPole-v1"
    assert client.post("/v2/envs", data=packed, content_type="application/msgpack").status_code == 201
    assert client.post(f"/v1/envs/{iid}/reset/").status_code == 200  # no body: no type needed
    assert client.post(f"/v2/envs/{iid}/keepalive").status_code == 200
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 200


def test_decisions_are_kept_per_header_and_the_memo_stays_bounded() -> None:
    allowed = AllowedHosts(["localhost", "10.0.0.0/8"])
    for _ in range(2):  # the second pass answers from the memo, alike
        assert allowed.admits("10.1.2.3:8000") and allowed.admits("localhost") and not allowed.admits("evil.example")
    for n in range(5000):  # a client that sends a new Host every time cannot grow it without bound
        assert not allowed.admits(f"evil{n}.example")
    assert len(allowed._memo) <= 1024
    assert allowed.admits("10.1.2.3:8000") and not allowed.admits("evil.example")
