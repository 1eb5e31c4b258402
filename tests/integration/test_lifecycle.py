"""What RL frameworks ask of an env service (issue 16), on a real two-worker server with fresh connections:
labels and bulk delete, idempotent create, fork, snapshot and restore, leases. Every answer is held to the
OpenAPI document (the Contract of test_v2_api)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from test_v2_api import Api, Contract, expect_error

from gymserve.client import RemoteEnv, RemoteVectorEnv
from servers import Server, start_server

pytestmark = pytest.mark.integration

SNAPSHOT_KEY = "test-farm-key-" + "k" * 32


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("lifecycle"), workers=2, snapshot_key=SNAPSHOT_KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(farm: Server) -> Api:
    return Api(farm.url, Contract(requests.get(farm.url + "/v2/openapi.json", timeout=30).json()))


def _run() -> str:
    return "run-" + uuid.uuid4().hex[:12]


def _ids(api: Api, *selectors: str) -> set[str]:
    query = "&".join(f"label={s}" for s in selectors)
    resp, listed = api.call("GET", "/v2/envs" + (f"?{query}" if query else ""))
    assert resp.status_code == 200, resp.text
    return {e["instance_id"] for e in listed["envs"]}


# --- labels and bulk delete ---


def test_labels_are_kept_shown_and_select_envs_on_every_worker(api: Api) -> None:
    run, other = _run(), _run()
    mine = {api.create(labels={"run": run, "role": "actor" if i % 2 else "learner"}) for i in range(6)}
    theirs = {api.create(labels={"run": other}) for _ in range(2)}
    owners = {i.split(".")[1].split("-")[0] for i in mine}
    assert len(owners) == 2, "fresh connections should have reached both workers"
    resp, info = api.call("GET", f"/v2/envs/{next(iter(mine))}")
    assert info["labels"]["run"] == run
    assert _ids(api, f"run={run}") == mine
    assert len(_ids(api, f"run={run}", "role=actor")) == 3
    assert _ids(api, f"run={other}") == theirs
    resp, answer = api.call("DELETE", f"/v2/envs?label=run={run}&label=role=actor")
    assert resp.status_code == 200 and answer == {"deleted": 3}
    resp, answer = api.call("DELETE", f"/v2/envs?label=run={run}")
    assert answer == {"deleted": 3}
    assert _ids(api, f"run={run}") == set()
    assert _ids(api, f"run={other}") == theirs, "a bulk delete closes exactly the matching envs"
    api.call("DELETE", f"/v2/envs?label=run={other}")


def test_a_bulk_delete_without_a_selector_or_with_bad_labels_is_refused(api: Api) -> None:
    keep = api.create(labels={"run": _run()})
    expect_error(api.call("DELETE", "/v2/envs")[0], 422, "invalid_value", "label")
    expect_error(api.call("DELETE", "/v2/envs?label=run")[0], 422, "invalid_value", "label")
    expect_error(api.call("GET", "/v2/envs?label=a%20b=c")[0], 422, "invalid_value", "label")
    assert api.call("GET", f"/v2/envs/{keep}")[0].status_code == 200, "nothing was deleted"
    for labels in ({"bad key": "x"}, {"run": "has space"}, {f"k{i}": "v" for i in range(17)}, {"run": 3}):
        resp, _ = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1", "labels": labels})
        expect_error(resp, 422, "invalid_value", "labels")
    api.call("DELETE", f"/v2/envs/{keep}")


def test_clients_pass_labels(farm: Server) -> None:
    run = _run()
    with RemoteEnv(farm.url, "CartPole-v1", labels={"run": run}) as env:
        vec = RemoteVectorEnv(farm.url, "CartPole-v1", 2, labels={"run": run})
        assert env._remote.info()["labels"] == {"run": run}  # type: ignore[attr-defined]
        assert vec.info()["labels"] == {"run": run}
        assert requests.delete(f"{farm.url}/v2/envs?label=run={run}", timeout=30).json() == {"deleted": 2}
        vec.close()  # already gone: closing says nothing


# --- idempotent create ---


def test_the_same_key_and_body_give_the_same_env_on_any_worker(api: Api) -> None:
    run, key = _run(), str(uuid.uuid4())
    body = {"env_id": "CartPole-v1", "labels": {"run": run}}
    answers = [api.call("POST", "/v2/envs", body, headers={"Idempotency-Key": key}) for _ in range(6)]
    assert {resp.status_code for resp, _ in answers} == {201}
    assert len({info["instance_id"] for _, info in answers}) == 1
    assert answers[0][0].content == answers[-1][0].content, "a resend gets the first answer again"
    assert [resp.headers.get("Idempotent-Replayed") for resp, _ in answers] == [None] + ["true"] * 5
    assert len(_ids(api, f"run={run}")) == 1, "one env, however many workers the resends reached"
    other, _ = api.call("POST", "/v2/envs", {**body, "ttl": 60}, headers={"Idempotency-Key": key})
    expect_error(other, 422, "idempotency_mismatch", "Idempotency-Key")
    assert (
        api.call("POST", "/v2/envs", body, send_as="application/msgpack", headers={"Idempotency-Key": key})[
            0
        ].status_code
        == 422
    ), "the same body means the same bytes in the same encoding"
    api.call("DELETE", f"/v2/envs/{answers[0][1]['instance_id']}")
    resp, again = api.call("POST", "/v2/envs", body, headers={"Idempotency-Key": key})
    assert resp.status_code == 201 and again["instance_id"] != answers[0][1]["instance_id"], "forgotten with its env"
    api.call("DELETE", f"/v2/envs?label=run={run}")


def test_a_bad_key_is_refused_naming_the_header(api: Api) -> None:
    resp, _ = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1"}, headers={"Idempotency-Key": "x" * 201})
    expect_error(resp, 422, "invalid_value", "Idempotency-Key")
