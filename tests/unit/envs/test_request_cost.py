"""What one request may cost is bounded: answers too large are refused at create, bad values are 4xx, not 500."""

from __future__ import annotations

import gc
from typing import Any

import gymnasium as gym
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
    assert small.post("/v2/envs", json={"env_id": "CartPole-v1", "num_envs": 4}).status_code == 201


class Costly(gym.Env[Any, int]):
    """What an env may cost beyond its observation: memory held (`hold` bytes, touched), the description of its
    observation space (per-element bounds of `bounds` floats), or a step's info (`info` bytes)."""

    def __init__(self, hold: int = 0, bounds: int = 4, info: int = 0) -> None:
        self.held = np.ones(hold, np.uint8)
        rng = np.random.default_rng(0)
        self.observation_space = spaces.Box(-1 - rng.random(bounds), 1 + rng.random(bounds), dtype=np.float64)
        self.action_space = spaces.Discrete(2)
        self.info_bytes = info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        return np.zeros(self.observation_space.shape), 0.0, False, False, {"blob": "x" * self.info_bytes}


@pytest.fixture(scope="module")
def costly() -> Any:
    """A server with small limits (1 MB answers, 16 MiB per env) that serves the Costly envs."""
    # 128 MiB held against a limit of 16 MiB: memory other threads free meanwhile cannot hide it.
    kinds = {"Hog": {"hold": 128 << 20}, "Bounds": {"bounds": 100_000}, "Chatty": {"info": 2_000_000}, "Lean": {}}
    for name, kwargs in kinds.items():
        gym.register(f"GymserveCost{name}-v0", entry_point=Costly, kwargs=kwargs)
    settings = {"max_answer_bytes": 1_000_000, "max_env_bytes": 16 << 20, "allowed_envs": "GymserveCost*"}
    yield create_app(Settings.from_env({}, node_id="test", **settings)).test_client()
    for name in kinds:
        gym.registry.pop(f"GymserveCost{name}-v0")


def _refused(resp: Any, code: str, setting: str, field: str) -> None:
    assert resp.status_code == 422, resp.json
    error = resp.json["error"]
    assert error["code"] == code and setting in error["message"] and error["details"]["setting"] == setting
    assert error["details"]["field"] == field


def test_an_env_that_takes_more_memory_than_allowed_is_refused_and_a_vector_one_on_one_sub_env(costly: Any) -> None:
    gc.collect()  # garbage of earlier tests, freed during the create, would offset what it took
    _refused(
        costly.post("/v2/envs", json={"env_id": "GymserveCostHog-v0"}),
        "env_too_large",
        "GYMSERVE_MAX_ENV_BYTES",
        "kwargs",
    )
    assert costly.post("/v2/envs", json={"env_id": "GymserveCostLean-v0"}).status_code == 201
    vector = costly.post("/v2/envs", json={"env_id": "GymserveCostHog-v0", "num_envs": 4})
    _refused(vector, "env_too_large", "GYMSERVE_MAX_ENV_BYTES", "kwargs")
    assert vector.json["error"]["details"]["size"] >= 4 * (64 << 20)  # weighed on one, counted for each


def test_space_descriptions_over_the_answer_limit_are_refused_at_create(costly: Any) -> None:
    refused = costly.post("/v2/envs", json={"env_id": "GymserveCostBounds-v0"})  # 800 KB observations, 4 MB bounds
    _refused(refused, "answer_too_large", "GYMSERVE_MAX_ANSWER_BYTES", "observation_space")
    v1 = costly.post("/v1/envs/", json={"env_id": "GymserveCostBounds-v0"})
    assert v1.status_code == 400 and "GYMSERVE_MAX_ANSWER_BYTES" in v1.json["message"]  # /v1's shape


def test_an_answer_over_the_limit_is_422_never_sent_a_step_and_a_batch(costly: Any) -> None:
    chatty = costly.post("/v2/envs", json={"env_id": "GymserveCostChatty-v0"}).json["instance_id"]
    assert costly.post(f"/v2/envs/{chatty}/reset", json={}).status_code == 200
    _refused(
        costly.post(f"/v2/envs/{chatty}/step", json={"action": 0}),
        "answer_too_large",
        "GYMSERVE_MAX_ANSWER_BYTES",
        "answer",
    )
    lean = [costly.post("/v2/envs", json={"env_id": "GymserveCostLean-v0"}).json["instance_id"] for _ in range(2)]
    for iid in lean:
        assert costly.post(f"/v2/envs/{iid}/reset", json={}).status_code == 200
    items = [{"id": iid, "action": 0} for iid in [*lean, chatty]]
    batch = costly.post("/v2/batch/step", json={"items": items})
    _refused(batch, "answer_too_large", "GYMSERVE_MAX_ANSWER_BYTES", "answer")
    assert costly.post("/v2/batch/step", json={"items": items[:2]}).status_code == 200


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
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000, "head too large"),  # answered 431 and closed
        (b"GET /" + b"a" * 8_200, "line too long"),  # answered 414 and closed, before its line even ended
        (b"GET /?" + b"a" * 8_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "whole"),  # a long list query still fits
    ],
)
def test_a_request_is_taken_once_all_of_it_arrived_or_it_is_to_be_refused(data: bytes, state: str) -> None:
    from gymserve.gunicorn_worker import arrival, complete

    assert arrival(data, max_body=1024) == state
    assert complete(data, max_body=1024) is (state != "wait")
