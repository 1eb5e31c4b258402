"""Issue 25's smaller holes: inputs that reached a 500 are refused with a 4xx naming what was wrong."""

from __future__ import annotations

import functools
from typing import Any

import msgpack
import pytest

DEPTH = 100_000  # far beyond any recursion limit


def deep_json(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def deep_msgpack(depth: int = DEPTH) -> bytes:
    return b"\x91" * depth + b"\x90"  # depth nested one-element arrays around an empty one


@pytest.fixture
def cartpole(client: Any) -> str:
    iid: str = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    assert client.post(f"/v2/envs/{iid}/reset", json={"seed": 1}).status_code == 200
    return iid


def assert_refused(resp: Any, statuses: tuple[int, ...], field: str | None = None) -> None:
    assert resp.status_code in statuses, resp.get_data(as_text=True)[:300]
    body = resp.json.get("error", resp.json)
    assert body["code"] in ("bad_request", "invalid_value")
    if field is not None:
        assert body["details"]["field"] == field


@pytest.mark.parametrize("depth", [40, 900, DEPTH])
def test_a_deeply_nested_v2_step_action_is_a_4xx_in_json_and_msgpack(client: Any, cartpole: str, depth: int) -> None:
    path = f"/v2/envs/{cartpole}/step"
    resp = client.post(path, data=f'{{"action": {deep_json(depth)}}}', content_type="application/json")
    assert_refused(resp, (400, 422))
    resp = client.post(path, data=b"\x81\xa6action" + deep_msgpack(depth), content_type="application/msgpack")
    assert_refused(resp, (400, 422))
    assert client.post(path, json={"action": 1}).status_code == 200  # the env is unharmed


@pytest.mark.parametrize("depth", [40, 300, 1000, DEPTH])
def test_a_deeply_nested_v1_body_is_a_400_naming_the_field(client: Any, cartpole: str, depth: int) -> None:
    post = functools.partial(client.post, content_type="application/json")
    step = post(f"/v1/envs/{cartpole}/step/", data=f'{{"action": {deep_json(depth)}}}')
    assert_refused(step, (400,), "action" if depth <= 1000 else None)
    create = post("/v1/envs/", data=f'{{"env_id": "CartPole-v1", "kwargs": {{"a": {deep_json(depth)}}}}}')
    assert_refused(create, (400,), "kwargs" if depth <= 1000 else None)
    reset = post(f"/v1/envs/{cartpole}/reset/", data=f'{{"options": {{"a": {deep_json(depth)}}}}}')
    assert_refused(reset, (400,), "options" if depth <= 1000 else None)
    contains = post(f"/v1/envs/{cartpole}/action_space/contains/", data=f'{{"action": {deep_json(depth)}}}')
    assert_refused(contains, (400,), "action" if depth <= 1000 else None)


@pytest.mark.parametrize("depth", [40, DEPTH])
def test_deeply_nested_batch_items_and_create_kwargs_are_4xx(client: Any, cartpole: str, depth: int) -> None:
    batch = f'{{"items": [{{"id": "{cartpole}", "action": {deep_json(depth)}}}]}}'
    resp = client.post("/v2/batch/step", data=batch, content_type="application/json")
    if resp.status_code == 200:  # a bad item is that item's error
        assert resp.json["results"][0]["error"]["code"] == "invalid_value"
    else:
        assert_refused(resp, (400, 422))
    create = f'{{"env_id": "CartPole-v1", "kwargs": {{"a": {deep_json(depth)}}}}}'
    assert_refused(client.post("/v2/envs", data=create, content_type="application/json"), (400, 422))
    head = msgpack.packb({"env_id": "CartPole-v1", "kwargs": {"a": None}})[:-1]  # the map, less kwargs.a's nil
    raw = head + deep_msgpack(depth)
    assert_refused(client.post("/v2/envs", data=raw, content_type="application/msgpack"), (400, 422))


@pytest.mark.parametrize("raw", ["\u00b2", "\uff11", "9" * 5000, "-1", "1.0", ""])
def test_a_frame_sub_env_that_is_no_plain_index_is_a_422_naming_it(client: Any, raw: str) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}}).json[
        "instance_id"
    ]
    client.post(f"/v2/envs/{iid}/reset", json={})
    assert_refused(client.get(f"/v2/envs/{iid}/frame", query_string={"sub_env": raw}), (422,), "sub_env")
    assert client.get(f"/v2/envs/{iid}/frame", query_string={"sub_env": "0"}).status_code == 200


@pytest.mark.parametrize("route", ["reset/", "episodes/"])
def test_a_v1_seed_of_5000_digits_is_a_400_naming_seed(client: Any, cartpole: str, route: str) -> None:
    resp = client.post(f"/v1/envs/{cartpole}/{route}", json={"seed": "9" * 5000, "count": 1})
    assert_refused(resp, (400,), "seed")


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ({"$nd": {"dtype": [], "shape": [], "data": [1]}}, "action.$nd.dtype"),
        ({"$nd": {"dtype": {}, "shape": [], "data": [1]}}, "action.$nd.dtype"),
        ({"$float": []}, "action.$float"),
        ({"$float": {}}, "action.$float"),
    ],
)
def test_tags_holding_a_list_or_map_where_a_name_belongs_are_422(
    client: Any, cartpole: str, action: Any, field: str
) -> None:
    assert_refused(client.post(f"/v2/envs/{cartpole}/step", json={"action": action}), (422,), field)
