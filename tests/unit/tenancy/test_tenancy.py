"""Tenants on one worker: keys on both APIs, isolation by every route, limits at create, reloads, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gymserve.app import create_app
from gymserve.cli import main as cli_main
from gymserve.settings import Settings
from gymserve.tenancy.tenants import Directory, TenantsFileError, digest_of, parse
from tenant_files import KEYS, auth, write

A, B = auth("team-a"), auth("team-b")
MISSING = "test.0-0." + "0" * 32  # an id of this worker's shape that was never minted


def tenant_app(tmp_path: Path, reload_seconds: float = 5.0, **limits: Any) -> Any:
    path = write(tmp_path / "tenants.toml", **limits)
    settings = Settings.from_env(
        {}, node_id="test", tenants_file=str(path), tenants_reload_seconds=reload_seconds, env_ttl_max_seconds=0
    )
    return create_app(settings)


@pytest.fixture
def tenants(tmp_path: Path) -> Any:
    return tenant_app(tmp_path).test_client()


def create(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v2/envs", json={"env_id": "CartPole-v1", **body}, headers=headers)


# --- keys ---


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS['team-a']}"}]
)
def test_missing_or_unknown_keys_are_401_on_both_apis(tenants: Any, headers: dict[str, str]) -> None:
    v2 = tenants.get("/v2/envs", headers=headers)
    assert v2.status_code == 401 and v2.json["error"]["code"] == "unauthorized"
    assert v2.headers["WWW-Authenticate"].startswith("Bearer")
    v1 = tenants.post("/v1/envs/", json={"env_id": "CartPole-v1"}, headers=headers)
    assert v1.status_code == 401 and v1.json["code"] == "unauthorized"  # the seed's shape: message at the top
    assert v1.headers["WWW-Authenticate"].startswith("Bearer") and "message" in v1.json


def test_probes_metrics_and_the_contract_need_no_key(tenants: Any) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v2/openapi.json"):
        assert tenants.get(path).status_code == 200, path


def test_the_ui_pages_own_files_need_no_key_and_its_data_calls_do(tenants: Any) -> None:
    """The page holds the key box: a page that answers 401 can never ask for the key."""
    assert tenants.get("/ui").status_code == 308  # to /ui/
    for path, kind in (("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
        resp = tenants.get(path)
        assert resp.status_code == 200 and resp.content_type.startswith(kind), path
    assert tenants.get("/ui/other.js").status_code == 401  # only the page's own files
    assert tenants.get("/v2/envs").status_code == 401
    assert tenants.get("/v2/envs", headers=A).status_code == 200


def test_a_header_claiming_a_tenant_or_a_hop_is_no_key(tenants: Any) -> None:
    for header in ({"X-Gymserve-Tenant": "team-a"}, {"X-Gymserve-Forwarded": "1"}, {"X-Gymserve-Peer-Tenant": "a"}):
        assert create(tenants, header).status_code == 401


def test_a_key_is_its_tenants_on_every_api(tenants: Any) -> None:
    assert create(tenants, A).status_code == 201
    assert tenants.post("/v1/envs/", json={"env_id": "CartPole-v1"}, headers=B).status_code == 200


def test_an_open_server_needs_no_key(client: Any) -> None:
    assert create(client, {}).status_code == 201


# --- isolation: another tenant's env is answered exactly as an id that does not exist ---

CALLS = [
    ("get", "/v2/envs/{}", None),
    ("post", "/v2/envs/{}/reset", {}),
    ("post", "/v2/envs/{}/step", {"action": 0}),
    ("post", "/v2/envs/{}/keepalive", None),
    ("get", "/v2/envs/{}/render", None),
    ("delete", "/v2/envs/{}", None),
    ("get", "/v1/envs/{}/", None),
    ("post", "/v1/envs/{}/reset/", {}),
    ("post", "/v1/envs/{}/step/", {"action": 0}),
    ("get", "/v1/envs/{}/action_space/", None),
    ("get", "/v1/envs/{}/observation_space/", None),
    ("post", "/v1/envs/{}/close/", None),
    # Bodies a route refuses: the answer must not depend on whether the env exists for someone else.
    ("post", "/v2/envs/{}/step", {"action": {"$nd": {"dtype": "int8", "shape": [2], "data": [1]}}}),
    ("post", "/v2/envs/{}/step", {"nothing": 1}),
    ("post", "/v2/envs/{}/reset", {"seed": "x"}),
    ("post", "/v1/envs/{}/step/", {}),
    ("post", "/v1/envs/{}/reset/", {"seed": -1}),
]


def _shape(response: Any, iid: str) -> tuple[int, str]:
    """Status and body with the id taken out: what may differ between two unknown ids is the id alone."""
    return response.status_code, response.get_data(as_text=True).replace(iid, "<id>")


@pytest.mark.parametrize(("method", "path", "body"), CALLS)
def test_another_tenants_env_reads_as_unknown_and_is_untouched(tenants: Any, method: str, path: str, body: Any) -> None:
    iid = create(tenants, A).json["instance_id"]
    tenants.post(f"/v2/envs/{iid}/reset", json={"seed": 1}, headers=A)
    before = tenants.get(f"/v2/envs/{iid}", headers=A).json
    theirs = getattr(tenants, method)(path.format(iid), json=body, headers=B)
    unknown = getattr(tenants, method)(path.format(MISSING), json=body, headers=B)
    assert _shape(theirs, iid) == _shape(unknown, MISSING)
    assert theirs.status_code in (400, 404, 422)  # unknown, or the body refused first: for both alike
    after = tenants.get(f"/v2/envs/{iid}", headers=A).json
    assert (after["steps"], after["episodes"], after["seq"]) == (before["steps"], before["episodes"], before["seq"])


def test_batch_items_of_another_tenant_fail_as_unknown(tenants: Any) -> None:
    theirs = create(tenants, A).json["instance_id"]
    mine = create(tenants, B).json["instance_id"]
    for iid, headers in ((theirs, A), (mine, B)):
        tenants.post(f"/v2/envs/{iid}/reset", json={}, headers=headers)
    items = [{"id": theirs, "action": 0}, {"id": mine, "action": 0}, {"id": MISSING, "action": 0}]
    results = tenants.post("/v2/batch/step", json={"items": items}, headers=B).json["results"]
    assert results[0]["error"]["code"] == results[2]["error"]["code"] == "unknown_instance"
    assert results[0]["error"]["message"].replace(theirs, "") == results[2]["error"]["message"].replace(MISSING, "")
    assert "observation" in results[1]
    assert tenants.get(f"/v2/envs/{theirs}", headers=A).json["steps"] == 0


def test_lists_show_the_callers_envs_only(tenants: Any) -> None:
    a = create(tenants, A).json["instance_id"]
    b = tenants.post("/v1/envs/", json={"env_id": "CartPole-v1"}, headers=B).json["instance_id"]
    assert [e["instance_id"] for e in tenants.get("/v2/envs", headers=A).json["envs"]] == [a]
    assert [e["instance_id"] for e in tenants.get("/v2/envs", headers=B).json["envs"]] == [b]
    assert tenants.get("/v1/envs/", headers=A).json["all_envs"] == {a: "CartPole-v1"}
    assert tenants.get("/v1/envs/", headers=B).json["all_envs"] == {b: "CartPole-v1"}


# --- limits at create (one worker: the farm-wide store is tested against a real Redis) ---


def test_max_envs_is_429_with_limit_and_usage_and_a_close_gives_room_back(tmp_path: Path) -> None:
    client = tenant_app(tmp_path, **{"team-a": {"max_envs": 3}}).test_client()
    first = create(client, A, num_envs=2).json["instance_id"]
    assert create(client, A).status_code == 201
    refused = create(client, A)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "quota_exceeded"
    assert refused.json["error"]["details"] == {"tenant": "team-a", "limit": 3, "usage": 3, "requested": 1}
    v1 = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}, headers=A)
    assert v1.status_code == 429 and v1.json["code"] == "quota_exceeded"
    assert create(client, B).status_code == 201  # the other tenant has its own share
    assert client.delete(f"/v2/envs/{first}", headers=A).status_code == 204
    assert create(client, A, num_envs=2).status_code == 201


def test_creates_per_minute_is_429_rate_limited_with_retry_after(tmp_path: Path) -> None:
    client = tenant_app(tmp_path, **{"team-a": {"creates_per_minute": 2}}).test_client()
    assert [create(client, A).status_code for _ in range(2)] == [201, 201]
    refused = create(client, A)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert create(client, B).status_code == 201


def test_a_ttl_over_the_tenants_maximum_is_422_naming_ttl_and_the_limit(tmp_path: Path) -> None:
    client = tenant_app(tmp_path, **{"team-a": {"max_ttl_seconds": 600}}).test_client()
    refused = create(client, A, ttl=601)
    assert refused.status_code == 422
    assert refused.json["error"]["details"] == {"field": "ttl", "limit": 600.0}
    assert "ttl" in refused.json["error"]["message"]
    assert create(client, A).json["ttl"] == 600  # the server's default (900 s) is capped by the tenant's
    assert create(client, A, ttl=60).json["ttl"] == 60
    assert create(client, B, ttl=3600).json["ttl"] == 3600


# --- the file: parse, reload, the CLI ---


def test_a_file_is_refused_with_its_name_and_the_faulty_entry() -> None:
    digest = "ab" * 32
    bad = {
        "not toml [": "not valid TOML",
        '[tenants.A]\nkey_sha256 = ["' + digest + '"]': "[tenants.A]",
        "[tenants.a]\nkey_sha256 = ['secret']": "key_sha256",
        f'[tenants.a]\nkey_sha256 = ["{digest}"]\nmax_envs = -1': "max_envs",
        f'[tenants.a]\nkey_sha256 = ["{digest}"]\nmax_env = 1': "unknown keys",
        f'[tenants.a]\nkey_sha256 = ["{digest}"]\n[tenants.b]\nkey_sha256 = ["{digest}"]': "also",
    }
    for text, words in bad.items():
        with pytest.raises(TenantsFileError, match=r"^tenants\.toml: ") as err:
            parse(text, "tenants.toml")
        assert words in str(err.value), text


def test_the_file_is_reloaded_when_it_changes_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    path = write(tmp_path / "tenants.toml")
    directory = Directory(str(path), reload_seconds=0.1)
    assert directory.authenticate(f"Bearer {KEYS['team-a']}") is not None
    path.write_text(f'[tenants.team-c]\nkey_sha256 = ["{digest_of("new-key").hex()}"]\n')
    os.utime(path, (time.time() + 5, time.time() + 5))
    time.sleep(0.15)
    assert directory.authenticate("Bearer new-key").name == "team-c"  # type: ignore[union-attr]
    assert directory.authenticate(f"Bearer {KEYS['team-a']}") is None  # removed keys stop working
    path.write_text("this is not toml [")
    os.utime(path, (time.time() + 10, time.time() + 10))
    time.sleep(0.15)
    assert directory.authenticate("Bearer new-key").name == "team-c"  # type: ignore[union-attr]


def test_tenant_key_prints_a_key_and_the_line_holding_its_digest(capsys: Any) -> None:
    assert cli_main(["tenant-key", "team-z"]) == 0
    key, *toml = capsys.readouterr().out.splitlines()
    tenants = parse("\n".join(toml), "printed")
    assert tenants["team-z"].digests == (digest_of(key),)
    assert cli_main(["tenant-key", "Team Z"]) == 2


def test_serve_stops_at_start_on_a_bad_tenants_file(tmp_path: Path) -> None:
    bad = tmp_path / "tenants.toml"
    bad.write_text("[tenants.a]\nkey_sha256 = 'x'\n")
    env = {**os.environ, "GYMSERVE_TENANTS_FILE": str(bad)}
    done = subprocess.run([sys.executable, "-m", "gymserve.cli", "serve"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert str(bad) in done.stderr.decode() and "GYMSERVE_TENANTS_FILE" in done.stderr.decode()


@pytest.mark.parametrize("farm", [{"GYMSERVE_PEERS_DNS": "gymserve-pods"}, {"GYMSERVE_PEER_NODE_PATTERN": "r[0-9]+"}])
def test_serve_stops_at_start_on_a_farm_with_tenants_and_no_store(tmp_path: Path, farm: dict[str, str]) -> None:
    env = {**os.environ, "GYMSERVE_TENANTS_FILE": str(write(tmp_path / "tenants.toml")), **farm}
    env.pop("GYMSERVE_STORE_URL", None)
    done = subprocess.run([sys.executable, "-m", "gymserve.cli", "serve"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert "GYMSERVE_STORE_URL" in done.stderr.decode()
