"""POST /v2/batch/step on a real two-worker gymserve: many envs in one request, each item answered on its own.

Every batch holds envs of both workers, so whichever worker a fresh connection reaches, part of
the batch is forwarded to its sibling as one sub-batch; every answer is held to the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import requests
from test_v2_api import JSON, LOST_ID, MSGPACK, Api, Contract, expect_error, same

from gymserve.api.openapi import DOCUMENT
from servers import start_server

pytestmark = pytest.mark.integration

BATCH = "/v2/batch/step"


@pytest.fixture(scope="module")
def api(server: Any) -> Api:
    return Api(server.url, Contract(DOCUMENT))


def envs_on_both_workers(api: Api, per_worker: int, env_id: str = "CartPole-v1") -> list[str]:
    """Ids of `per_worker` new envs on each of the two workers, alternating workers.

    The envs not needed are kept until both workers have enough: whichever worker wins the accepts, placement
    sends creates to its sibling once it holds GYMSERVE_PLACEMENT_TOLERANCE more. Then they are deleted (the
    server is shared by the module)."""
    by_worker: dict[int, list[str]] = {0: [], 1: []}
    extra: list[str] = []
    try:
        for _ in range(400):
            iid = api.create(env_id)
            slot = int(iid.split(".")[1].split("-")[0])
            (by_worker[slot] if len(by_worker[slot]) < per_worker else extra).append(iid)
            if all(len(v) == per_worker for v in by_worker.values()):
                return [iid for pair in zip(by_worker[0], by_worker[1], strict=True) for iid in pair]
    finally:
        for iid in extra:
            api.call("DELETE", f"/v2/envs/{iid}")
    raise AssertionError("400 creates never reached both workers")


def reset_all(api: Api, ids: list[str], seed: int) -> None:
    for n, iid in enumerate(ids):
        assert api.call("POST", f"/v2/envs/{iid}/reset", {"seed": seed + n, "seq": 1})[0].status_code == 200


def step(api: Api, items: list[dict[str, Any]], media_type: str = MSGPACK) -> list[dict[str, Any]]:
    resp, answer = api.call("POST", BATCH, {"items": items}, send_as=media_type, accept=media_type)
    assert resp.status_code == 200, resp.text
    assert len(answer["results"]) == len(items)
    return answer["results"]


@pytest.mark.parametrize("media_type", [MSGPACK, JSON])
def test_a_batch_over_both_workers_steps_each_env_once_like_a_local_env(api: Api, media_type: str) -> None:
    ids = envs_on_both_workers(api, 3)
    reset_all(api, ids, 20)
    local = [gym.make("CartPole-v1") for _ in ids]
    for n, env in enumerate(local):
        env.reset(seed=20 + n)
    forwarded = 0
    for t in range(8):
        actions = [(t + n) % 2 for n in range(len(ids))]
        items = [{"id": iid, "action": a, "seq": t + 2} for iid, a in zip(ids, actions, strict=True)]
        resp, answer = api.call("POST", BATCH, {"items": items}, send_as=media_type, accept=media_type)
        forwarded += resp.headers.get("X-Gymserve-Forwarded") == "1"
        for result, env, action in zip(answer["results"], local, actions, strict=True):
            obs, reward, terminated, truncated, info = env.step(action)
            assert same(result["observation"], obs), result
            assert (result["reward"], result["terminated"], result["truncated"]) == (reward, terminated, truncated)
            assert result["seq"] == t + 2 and same(result["info"], info)
    assert forwarded == 0, "a batch is answered by the worker it reached; only its sub-batches take a hop"
    assert all(api.steps_of(iid) == 8 for iid in ids)


def test_each_item_fails_alone_and_the_others_step(api: Api) -> None:
    good, fresh, numbered = [*envs_on_both_workers(api, 1), api.create()]
    reset_all(api, [good, numbered], 1)
    elsewhere = "another-replica.0-1." + "a" * 32
    unknown = good[:-32] + "0" * 32
    items = [
        {"id": good, "action": 1},
        {"id": unknown, "action": 0},
        {"id": LOST_ID, "action": 0},
        {"id": elsewhere, "action": 0},
        {"id": "not an id", "action": 0},
        {"id": fresh, "action": 0},  # never reset
        {"id": numbered, "action": 7},  # not in Discrete(2)
    ]
    results = step(api, items, JSON)
    assert results[0]["reward"] == 1.0 and results[0]["seq"] == 2
    codes = [r["error"]["code"] for r in results[1:]]
    assert codes == [
        "unknown_instance",
        "instance_lost",
        "wrong_replica",
        "unknown_instance",
        "reset_needed",
        "invalid_value",
    ]
    assert results[3]["error"]["details"] == {"instance_id": elsewhere, "replica": "another-replica"}
    assert results[6]["error"]["details"]["field"] == "action" and results[6]["error"]["message"]
    assert api.steps_of(numbered) == 0, "an item's error uses no step and no number"
    assert step(api, [{"id": numbered, "action": 0, "seq": 2}])[0]["seq"] == 2


def test_a_batch_resent_with_the_same_seqs_is_answered_again_without_stepping(api: Api) -> None:
    ids = envs_on_both_workers(api, 2)
    reset_all(api, ids, 5)
    items = [{"id": iid, "action": n % 2, "seq": 2} for n, iid in enumerate(ids)]
    first = step(api, items)
    again = step(api, items)
    assert all(same(a, b) for a, b in zip(first, again, strict=True))
    assert all(api.steps_of(iid) == 1 for iid in ids)
    # A different action under the last number, or a number from the future, conflicts for that item only.
    changed = [{**items[0], "action": 1 - items[0]["action"]}, {**items[1], "seq": 9}, {**items[2], "seq": 3}]
    results = step(api, changed)
    assert [r.get("error", {}).get("code") for r in results] == ["sequence_conflict", "sequence_conflict", None]
    assert results[1]["error"]["details"] == {"field": "seq", "expected": 3, "got": 9}
    # The single-env route continues the same sequence.
    assert api.call("POST", f"/v2/envs/{ids[2]}/step", {"action": 0, "seq": 4})[1]["seq"] == 4


def test_a_vector_env_can_be_an_item(api: Api) -> None:
    vec = api.create("CartPole-v1", num_envs=3)
    single = api.create()
    reset_all(api, [vec, single], 0)
    results = step(api, [{"id": vec, "action": [0, 1, 0]}, {"id": single, "action": 1}])
    assert results[0]["reward"].shape == (3,) and results[1]["reward"] == 1.0


BAD_BATCHES = {
    # name: (body, status, code, field)
    "no items": ({}, 400, "missing_parameter", "items"),
    "items not a list": ({"items": {"id": "x"}}, 422, "invalid_value", "items"),
    "empty": ({"items": []}, 422, "invalid_value", "items"),
    "too many": ({"items": [{"id": f"i{n}", "action": 0} for n in range(4)]}, 422, "invalid_value", "items"),
    "item not a map": ({"items": [{"id": "a", "action": 0}, 3]}, 422, "invalid_value", "items[1]"),
    "unknown field": ({"items": [{"id": "a", "action": 0, "sed": 1}]}, 422, "invalid_value", "items[0].sed"),
    "no action": ({"items": [{"id": "a"}]}, 400, "missing_parameter", "items[0].action"),
    "no id": ({"items": [{"action": 1}]}, 400, "missing_parameter", "items[0].id"),
    "id not a string": ({"items": [{"id": 5, "action": 1}]}, 422, "invalid_value", "items[0].id"),
    "bad seq": ({"items": [{"id": "a", "action": 1, "seq": 0}]}, 422, "invalid_value", "items[0].seq"),
    "an env twice": ({"items": [{"id": "a", "action": 1}] * 2}, 422, "invalid_value", "items[1].id"),
    "unknown top field": ({"items": [{"id": "a", "action": 1}], "x": 1}, 422, "invalid_value", "x"),
}


@pytest.fixture(scope="module")
def small_batches(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start_server(tmp_path_factory.mktemp("batch"), max_batch_size=3)
    yield Api(srv.url, Contract(DOCUMENT))
    srv.stop()


@pytest.mark.parametrize("name", sorted(BAD_BATCHES))
def test_a_malformed_batch_is_refused_whole_naming_the_field(small_batches: Api, name: str) -> None:
    body, status, code, field = BAD_BATCHES[name]
    error = expect_error(small_batches.call("POST", BATCH, body)[0], status, code, field)
    if name == "too many":
        assert "GYMSERVE_MAX_BATCH_SIZE" in error["message"] and "at most 3" in error["message"]


def test_a_batch_is_not_served_under_the_envs_resource() -> None:
    # The compose and helm routers send /v2/envs/<word>/... to the replica that <word> names.
    assert not any(path.startswith("/v2/envs/batch") for path in DOCUMENT["paths"])
    assert "/v2/batch/step" in DOCUMENT["paths"]


def test_garbage_batches_never_get_a_5xx(api: Api) -> None:
    for garbage in [b"", b"null", b"[]", b'{"items": null}', b'{"items": [null]}', b'{"items": [{"id": []}]}']:
        for media_type in (JSON, MSGPACK):
            resp = requests.post(api.url + BATCH, data=garbage, headers={"Content-Type": media_type}, timeout=30)
            assert 400 <= resp.status_code < 500, (garbage, resp.text)
