"""The front controller: resets and steps of both APIs are answered by the one handler without Flask, errors too."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest

from gymserve.codec import seed
from gymserve.codec import values as native

VIEWS = ("v1.env_reset", "v1.env_step", "v2.reset_env", "v2.step_env")


@pytest.fixture
def seen(app: Any) -> list[str]:
    """Every reset or step that reached a Flask view (none should)."""
    calls: list[str] = []
    for name in VIEWS:
        view = app.view_functions[name]

        def spy(instance_id: str, _view: Any = view, _name: str = name) -> Any:
            calls.append(_name)
            return _view(instance_id=instance_id)

        app.view_functions[name] = spy
    return calls


def create(client: Any, env_id: str = "CartPole-v1") -> str:
    iid: str = client.post("/v2/envs", json={"env_id": env_id}).json["instance_id"]
    return iid


def test_v2_steps_in_either_encoding_match_the_local_env_and_never_reach_flask(client: Any, seen: list[str]) -> None:
    iid = create(client)
    local = gym.make("CartPole-v1")
    local.reset(seed=3)
    assert client.post(f"/v2/envs/{iid}/reset", json={"seed": 3}).status_code == 200
    for seq, media in enumerate((native.MSGPACK, native.JSON, native.MSGPACK), start=2):
        body = native.dumps({"action": 1, "seq": seq}, media)
        resp = client.post(f"/v2/envs/{iid}/step", data=body, headers={"Content-Type": media, "Accept": media})
        answer = native.loads(resp.get_data(), media)
        want, *_ = local.step(1)
        assert resp.status_code == 200 and answer["seq"] == seq and np.array_equal(answer["observation"], want)
    assert seen == []


def test_a_resend_matches_whatever_encoding_it_comes_in(client: Any) -> None:
    """The resend digest is of what was asked, not of the bytes: JSON first, msgpack again, same answer."""
    iid = create(client)
    client.post(f"/v2/envs/{iid}/reset", json={"seed": 1, "seq": 1})
    first = client.post(f"/v2/envs/{iid}/step", json={"action": 1, "seq": 2})
    again = client.post(
        f"/v2/envs/{iid}/step",
        data=msgpack.packb({"action": 1, "seq": 2}),
        headers={"Content-Type": native.MSGPACK},
    )
    assert again.status_code == 200 and again.json == first.json
    other = client.post(f"/v2/envs/{iid}/step", json={"action": 0, "seq": 2})
    assert other.status_code == 409 and other.json["error"]["code"] == "sequence_conflict"


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        ({"Content-Type": "text/plain"}, b'{"action": 0}', 415, "Content-Type"),
        ({"Content-Type": "application/json"}, b'{"action": 0, "extra": 1}', 422, "extra"),
        ({"Content-Type": "application/json"}, b'{"action": 0, "seq": "two"}', 422, "seq"),
        ({"Content-Type": "application/json"}, b"not json", 400, "body"),
        ({"Content-Type": "application/json"}, b'{"action": 7}', 422, "action"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"x", 415, "Content-Encoding"),
    ],
    ids=["odd-content-type", "unknown-field", "bad-seq", "bad-body", "bad-action", "compressed-body"],
)
def test_v2_errors_come_from_the_same_handler_in_the_v2_shape(
    client: Any, seen: list[str], headers: dict[str, str], body: bytes, status: int, field: str
) -> None:
    iid = create(client)
    client.post(f"/v2/envs/{iid}/reset", json={})
    resp = client.post(f"/v2/envs/{iid}/step", data=body, headers=headers)
    assert resp.status_code == status and resp.json["error"]["details"]["field"] == field
    assert seen == []


def test_v1_resets_and_steps_take_the_lean_path_in_the_seed_format(client: Any, seen: list[str]) -> None:
    iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json["instance_id"]
    local = gym.make("CartPole-v1")
    obs, _ = local.reset(seed=5)
    answer = client.post(f"/v1/envs/{iid}/reset/", json={"seed": 5}).json
    assert np.array_equal(seed.decode_observation(answer["observation"]), obs.astype(np.float64))
    answer = client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).json
    obs, reward, terminated, truncated, _ = local.step(1)
    assert np.array_equal(seed.decode_observation(answer["observation"]), obs.astype(np.float64))
    assert (answer["reward"], answer["done"]) == (reward, terminated or truncated)
    bad = client.post(f"/v1/envs/{iid}/step/", json={"action": "left"})
    assert bad.status_code == 400 and "action" in bad.json["message"]
    assert seen == []


@pytest.mark.filterwarnings("ignore:.*already returned terminated:UserWarning")  # Gymnasium's own, on /v1
def test_v2_refuses_a_step_after_the_episode_ended_while_v1_keeps_the_seeds_behaviour(client: Any) -> None:
    for api in ("v1", "v2"):
        made = client.post(f"/{api}/envs{'/' if api == 'v1' else ''}", json={"env_id": "CartPole-v1"})
        iid = made.json["instance_id"]
        slash = "/" if api == "v1" else ""
        client.post(f"/{api}/envs/{iid}/reset{slash}", json={"seed": 0})
        done = False
        while not done:
            answer = client.post(f"/{api}/envs/{iid}/step{slash}", json={"action": 1}).json
            done = answer["terminated"] or answer["truncated"]
        after = client.post(f"/{api}/envs/{iid}/step{slash}", json={"action": 1})
        if api == "v2":
            assert after.status_code == 409 and after.json["error"]["code"] == "reset_needed"
            assert client.post(f"/v2/envs/{iid}/reset", json={}).status_code == 200
            assert client.post(f"/v2/envs/{iid}/step", json={"action": 1}).status_code == 200
        else:
            assert after.status_code == 200  # the seed let Gymnasium answer (with its own warning)


def test_a_body_over_the_limit_is_413_in_each_apis_shape(client: Any, settings: Any) -> None:
    iid = create(client)
    big = b'{"action": 0, "pad": "' + b"x" * settings.max_body_bytes + b'"}'
    v2 = client.post(f"/v2/envs/{iid}/step", data=big, headers={"Content-Type": "application/json"})
    assert v2.status_code == 413 and v2.json["error"]["code"] == "payload_too_large"
    v1 = client.post(f"/v1/envs/{iid}/step/", data=big)
    assert v1.status_code == 413 and "GYMSERVE_MAX_BODY_BYTES" in v1.json["message"]
