"""What one request may cost is bounded: answers too large are refused at create, bad values are 4xx, not 500."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from gymserve.app import create_app
from gymserve.envs.cost import space_bytes
from gymserve.settings import Settings

BOMB = {
    "env_id": "CartPole-v1",
    "num_envs": 1024,
    "kwargs": {"render_mode": "rgb_array"},
    "wrappers": ["AddRenderObservation"],
}


def test_space_bytes_sums_the_parts_of_dicts_and_tuples() -> None:
    box = spaces.Box(0, 255, (400, 600, 3), np.uint8)
    assert space_bytes(box) == 720_000
    assert space_bytes(spaces.Dict({"a": box, "b": spaces.Box(0, 1, (4,), np.float32)})) == 720_016
    assert space_bytes(spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(8)))) == 8 + 8


def test_the_memory_bomb_is_refused_at_create_naming_the_setting(client: Any) -> None:
    refused = client.post("/v2/envs", json=BOMB)
    assert refused.status_code == 422
    error = refused.json["error"]
    assert error["code"] == "answer_too_large"
    assert (
        error["details"]["setting"] == "GYMSERVE_MAX_ANSWER_BYTES" and "GYMSERVE_MAX_ANSWER_BYTES" in error["message"]
    )
    assert error["details"]["size"] == 1024 * 400 * 600 * 3  # the frames are the observation
    assert client.get("/v2/envs").json["envs"] == []


def test_a_vector_render_is_weighed_too(client: Any) -> None:
    body = {"env_id": "CartPole-v1", "num_envs": 64, "kwargs": {"render_mode": "rgb_array"}}
    refused = client.post("/v2/envs", json=body)
    assert refused.status_code == 422 and refused.json["error"]["details"]["field"] == "render_mode"
    assert client.post("/v2/envs", json={**body, "num_envs": 8}).status_code == 201  # 8 frames: 5.8 MB


def test_the_limit_is_a_setting() -> None:
    small = create_app(Settings.from_env({}, node_id="test", max_answer_bytes=4096)).test_client()
    refused = small.post("/v2/envs", json={"env_id": "CartPole-v1", "num_envs": 512})
    assert refused.status_code == 422 and refused.json["error"]["details"]["limit"] == 4096
    assert small.post("/v2/envs", json={"env_id": "CartPole-v1", "num_envs": 256}).status_code == 201


def test_a_refused_create_gives_its_places_back(client: Any) -> None:
    for _ in range(3):
        assert client.post("/v2/envs", json=BOMB).status_code == 422
    assert client.application.extensions["gymserve"].envs.registry.load == 0


@pytest.fixture
def stepped(client: Any) -> str:
    iid: str = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    client.post(f"/v2/envs/{iid}/reset", json={})
    return iid


@pytest.mark.parametrize("shape", [[0, 2147483647, 2147483647, 2147483647], [0, 65536, 65536], [2, 0, 2**31 - 1]])
def test_an_nd_shape_numpy_cannot_hold_is_422_naming_it(client: Any, stepped: str, shape: list[int]) -> None:
    action = {"$nd": {"dtype": "int64", "shape": shape, "data": []}}
    got = client.post(f"/v2/envs/{stepped}/step", json={"action": action})
    assert got.status_code == 422 and got.json["error"]["details"]["field"] == "action.$nd.shape"
    batch = client.post("/v2/batch/step", json={"items": [{"id": stepped, "action": action}]})
    assert batch.status_code == 422


def test_a_seed_that_is_not_a_number_is_4xx_on_both_apis(client: Any, stepped: str) -> None:
    assert client.post(f"/v2/envs/{stepped}/reset", json={"seed": "²"}).status_code == 422
    assert client.post(f"/v1/envs/{stepped}/reset/", json={"seed": "²"}).status_code == 400


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (b"POST /v2/envs HTTP/1.1\r\n", "wait"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "whole"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}", "wait"),
        (b"POST /x HTTP/1.1\r\ncontent-length:  4\r\n\r\n{}{}", "whole"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 0000000000100\r\n\r\n{", "wait"),  # 13 digits are still 100
        (b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", "too large"),  # answered 413 and closed
        (b"POST /x HTTP/1.1\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n", "too large"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "wait"),  # no chunk yet
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "wait"),  # no last chunk
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "whole"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\n{\r\n0\r\nA: b\r\n\r\n", "whole"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n", "too large"),  # 1,025 > 1,024
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "whole"),  # the parser refuses it
        (b"GET /" + b"a" * 70_000, "head too large"),  # answered 431 and closed
    ],
)
def test_a_request_is_taken_once_all_of_it_arrived_or_it_is_to_be_refused(data: bytes, state: str) -> None:
    from gymserve.gunicorn_worker import arrival, complete

    assert arrival(data, max_body=1024) == state
    assert complete(data, max_body=1024) is (state != "wait")
