"""The app's error handling and health endpoints, through Flask's test client."""

import logging

import pytest

from gymserve.app import create_app
from gymserve.settings import Settings, SettingsError


def test_unexpected_exception_is_a_generic_500_that_leaks_nothing(client, app, caplog):
    def boom():
        raise RuntimeError("secret internals /srv/path")

    app.add_url_rule("/boom", view_func=boom)
    with caplog.at_level(logging.ERROR):
        resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.json == {
        "message": "internal server error",
        "code": "internal",
        "fault": "infrastructure",
        "retryable": False,
    }
    assert "secret" not in resp.get_data(as_text=True)
    assert "secret internals" in caplog.text  # logged with its traceback for the operator


def test_unknown_route_and_wrong_method_answer_json(client):
    resp = client.get("/v1/nope/")
    assert resp.status_code == 404 and resp.json["code"] == "not_found"
    resp = client.put("/v1/envs/")
    assert resp.status_code == 405 and resp.json["code"] == "method_not_allowed"


def test_body_over_the_limit_is_413_naming_the_setting():
    app = create_app(Settings.from_env({"GYMSERVE_MAX_BODY_BYTES": "100"}, node_id="test"))
    resp = app.test_client().post("/v1/envs/", data=b"{" + b" " * 200 + b"}")
    assert resp.status_code == 413 and "GYMSERVE_MAX_BODY_BYTES" in resp.json["message"]


def test_healthz_and_readyz(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"


def test_readyz_fails_while_full_and_existing_envs_stay_reachable():
    app = create_app(Settings.from_env({"GYMSERVE_MAX_ENVS_PER_WORKER": "1"}, node_id="test"))
    client = app.test_client()
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    full = client.post("/v1/envs/", json={"env_id": "CartPole-v1"})
    assert full.status_code == 503 and full.headers["Retry-After"] and full.json["code"] == "capacity_exceeded"
    assert client.get("/readyz").status_code == 503
    assert client.post(f"/v1/envs/{iid}/reset/", json={}).status_code == 200
    client.delete(f"/v1/envs/{iid}/")
    assert client.get("/readyz").status_code == 200


def test_draining_worker_refuses_creates_but_steps_existing_envs(app, client):
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    client.post(f"/v1/envs/{iid}/reset/", json={"seed": 1})
    app.extensions["gymserve"].envs.draining.set()
    resp = client.post("/v1/envs/", json={"env_id": "CartPole-v1"})
    assert resp.status_code == 503 and resp.json["code"] == "draining" and "Retry-After" in resp.headers
    assert client.get("/readyz").json["reasons"] == ["draining"]
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200


def test_ttl_per_create_is_capped_by_the_server_maximum(app, client):
    app.extensions["gymserve"].envs.settings  # noqa: B018 - defaults: ttl max 86400
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "ttl": 10**9}).json["instance_id"]
    assert app.extensions["gymserve"].envs.registry.find(iid).ttl == 86_400
    bad = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "ttl": "long"})
    assert bad.status_code == 400 and bad.json["details"]["field"] == "ttl"


def test_render_of_an_env_made_without_render_mode_is_the_seeds_null(client):
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    client.post(f"/v1/envs/{iid}/reset/", json={})
    resp = client.get(f"/v1/envs/{iid}/render/")
    assert resp.status_code == 200 and resp.json == {"render_frame": None}


def test_request_metrics_label_only_known_methods_and_route_templates(client):
    from prometheus_client import REGISTRY

    client.open("/v1/envs/", method="BREW")
    client.get("/v1/envs/no-such-id/")
    labels = [
        s.labels
        for m in REGISTRY.collect()
        if m.name == "gymserve_http_request_duration_seconds"
        for s in m.samples
        if s.name.endswith("_count")
    ]
    assert any(lab["method"] == "OTHER" for lab in labels), labels
    assert all(lab["method"] in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"} for lab in labels)
    assert not any("no-such-id" in lab["route"] for lab in labels), "routes are templates, never raw paths"


def test_huge_integers_and_oversized_kwargs_are_4xx_not_500(client):
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    client.post(f"/v1/envs/{iid}/reset/", json={})
    for action in (10**30, 2**63, 1e30):
        resp = client.post(f"/v1/envs/{iid}/step/", json={"action": action})
        assert resp.status_code == 400 and resp.json["details"]["field"] == "action", resp.json
    assert client.get(f"/v1/envs/{iid}/action_space/contains/1e30/").json == {"member": False}
    desc = ["F" * 100] * 100  # a 100x100 FrozenLake map is ~10 KB of JSON; the kwargs limit is 16 KiB
    resp = client.post("/v1/envs/", json={"env_id": "FrozenLake-v1", "kwargs": {"desc": desc * 2}})
    assert resp.status_code == 400 and resp.json["details"]["field"] == "kwargs" and "limit" in resp.json["message"]


def test_episodes_of_a_frame_env_are_bounded_by_bytes_not_only_steps():
    app = create_app(Settings.from_env({"GYMSERVE_MAX_BODY_BYTES": "65536"}, node_id="test"))  # 4 MiB of obs
    client = app.test_client()
    iid = client.post(
        "/v2/envs",
        json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}, "wrappers": ["AddRenderObservation"]},
    ).json["instance_id"]
    resp = client.post(f"/v1/envs/{iid}/episodes/", json={"count": 5})
    assert resp.status_code == 400 and "bytes" in resp.json["message"] and resp.json["details"]["field"] == "count"


def test_reads_of_an_env_restart_its_idle_clock(app, client):
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    record = app.extensions["gymserve"].envs.registry.find(iid)
    record.last_used -= 100
    client.get(f"/v1/envs/{iid}/action_space/")
    assert record.idle_seconds() < 5


def test_healthz_names_the_node_that_instance_ids_carry():
    # The router maps each replica's address to its node name by this (helm/files/router-pools.sh).
    app = create_app(Settings.from_env({}, node_id="replica-7"))
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok", "node": "replica-7"}
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    assert iid.split(".")[0] == "replica-7"


def test_on_the_metrics_port_only_metrics_are_served() -> None:
    client = create_app(Settings.from_env({"GYMSERVE_METRICS_PORT": "9464"}, node_id="test")).test_client()
    there = "http://localhost:9464"
    assert client.get("/metrics", base_url=there).status_code == 200
    for method, path in [("GET", "/v2/envs"), ("POST", "/v2/envs"), ("GET", "/healthz"), ("GET", "/")]:
        resp = client.open(path, method=method, base_url=there, json={"env_id": "CartPole-v1"})
        assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found", (method, path)
    assert client.get("/v2/envs").status_code == 200  # the API's port: everything
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("value", ["8000", "8101", "70000"])
def test_the_metrics_port_is_neither_the_api_nor_a_workers_port(value: str) -> None:
    with pytest.raises(SettingsError, match="GYMSERVE_METRICS_PORT"):
        Settings.from_env({"GYMSERVE_METRICS_PORT": value, "GYMSERVE_WORKER_PORT_BASE": "8100"}, node_id="test")
