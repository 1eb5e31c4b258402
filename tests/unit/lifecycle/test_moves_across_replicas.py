"""Park and adopt across replicas: an env parked by one replica is adopted by the next that is asked for it, and a
replica that comes back under the old name sends the env's requests to the adopter, once (routing.peers.begin)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve.app import create_app
from gymserve.errors import InstanceLost, Moving
from gymserve.lifecycle.caller import Caller
from gymserve.routing import peers
from gymserve.settings import Settings
from gymserve.tenancy.tenants import Tenant
from stores import redis_server

PATTERN = "replica-[ab]"


def make(node: str, state: Path) -> Any:
    settings = Settings.from_env({"GYMSERVE_PEER_NODE_PATTERN": PATTERN}, node_id=node, state_dir=str(state))
    return create_app(settings)


@pytest.fixture
def farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two replicas sharing one park store; what one sends to the other's name reaches the other's app."""
    apps = {"replica-a": make("replica-a", tmp_path), "replica-b": make("replica-b", tmp_path)}
    sent: list[str] = []
    real = inspect.signature(peers.begin)

    def begin(*args: Any, **kwargs: Any) -> Callable[[], tuple[int, list[tuple[str, str]], bytes]]:
        got = real.bind(*args, **kwargs).arguments  # called as the real one would be, or a TypeError here
        assert peers.reachable(got["settings"], got["node"])
        sent.append(got["node"])
        headers = {**got["headers"], peers.FANOUT_HEADER: "1"}

        def answer() -> tuple[int, list[tuple[str, str]], bytes]:
            client = apps[got["node"]].test_client()
            resp = client.open(got["target"], method=got["method"], data=got["body"], headers=headers)
            return resp.status_code, list(resp.headers.items()), resp.data

        return answer

    monkeypatch.setattr(peers, "begin", begin)
    return {**apps, "sent": sent}


def _step(app: Any, instance_id: str, action: int, seq: int) -> Any:
    resp = app.test_client().post(f"/v2/envs/{instance_id}/step", json={"action": action, "seq": seq})
    assert resp.status_code == 200, resp.json
    return resp.json


def test_an_env_moves_to_another_replica_and_is_reached_there_from_its_old_name(
    farm: dict[str, Any], tmp_path: Path
) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    created = a.test_client().post("/v2/envs", json={"env_id": "CartPole-v1"}).json
    instance_id = created["instance_id"]
    local = gym.make("CartPole-v1")
    local.reset(seed=5)
    assert a.test_client().post(f"/v2/envs/{instance_id}/reset", json={"seed": 5, "seq": 1}).status_code == 200
    actions = [1, 0, 1, 1, 0, 0, 1]
    seq = 1

    def step(app: Any, action: int) -> None:
        nonlocal seq
        seq += 1
        remote = _step(app, instance_id, action, seq)
        observation = np.asarray(remote["observation"]["$nd"]["data"], np.float32)
        assert np.array_equal(observation, local.step(action)[0])

    step(a, actions[0])
    assert a.extensions["gymserve"].envs.park_all() == (1, 0)  # replica-a drains
    step(b, actions[1])  # the router sends the gone replica's id elsewhere: replica-b adopts it
    assert farm["sent"] == []
    back = make("replica-a", tmp_path)  # replica-a comes back under its old name (a StatefulSet pod)
    farm["replica-a"] = back
    for action in actions[2:]:
        step(back, action)  # sent on to replica-b, once each
    assert farm["sent"] == ["replica-b"] * len(actions[2:])
    assert b.test_client().get(f"/v2/envs/{instance_id}").json["seq"] == seq


def test_another_tenants_parked_env_reads_as_unknown(farm: dict[str, Any]) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    instance_id = a.test_client().post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    a.extensions["gymserve"].envs.park_all()
    moves = b.extensions["gymserve"].envs.moves
    found = moves.store.where(instance_id)
    assert found is not None and found.state == "parked"
    other = Caller(tenant=Tenant(name="other"))
    assert moves.where(instance_id, other) is None
    assert moves.where(instance_id, Caller()) is not None


def test_a_sibling_that_exits_before_answering_leaves_its_parked_envs_moving_and_the_others_lost(
    farm: dict[str, Any],
) -> None:
    a = farm["replica-a"]
    parked, crashed = (a.test_client().post("/v2/envs", json={"env_id": "CartPole-v1"}).json for _ in range(2))
    envs = a.extensions["gymserve"].envs
    envs.close(crashed["instance_id"], Caller())  # gone with no record: as a crashed worker's env is
    envs.park_all()  # a drain parks before the worker exits and drops its connections
    moving = envs.hop_lost(Caller(), parked["instance_id"])
    assert isinstance(moving, Moving) and moving.status == 503
    assert type(envs.hop_lost(Caller(), crashed["instance_id"])) is InstanceLost
    assert type(envs.hop_lost(Caller(tenant=Tenant(name="other")), parked["instance_id"])) is InstanceLost


def test_an_unreachable_holder_is_waited_for_while_it_beats_and_lost_once_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GYMSERVE_SNAPSHOT_KEY", "k" * 40)
    with redis_server(tmp_path) as url:

        def replica(node: str) -> Any:
            env = {"GYMSERVE_PEER_NODE_PATTERN": PATTERN, "GYMSERVE_STORE_URL": url}
            return create_app(Settings.from_env(env, node_id=node))

        a, b = replica("replica-a"), replica("replica-b")
        instance_id = a.test_client().post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
        assert a.extensions["gymserve"].envs.park_all() == (1, 0)
        assert b.test_client().post(f"/v2/envs/{instance_id}/reset", json={}).status_code == 200  # b adopts it
        back = replica("replica-a")

        def unreachable(*args: Any, **kwargs: Any) -> Callable[[], Any]:
            raise OSError("no route to replica-b")

        monkeypatch.setattr(peers, "begin", unreachable)
        waiting = back.test_client().post(f"/v2/envs/{instance_id}/reset", json={})
        assert waiting.status_code == 503 and waiting.json["error"]["details"]["reason"] == "moving"
        assert waiting.headers["Retry-After"] == "1"
        moves = b.extensions["gymserve"].envs.moves
        moves.store.client.delete(f"gymserve:alive:{moves.me}")  # replica-b crashed: it beats no more
        gone = back.test_client().post(f"/v2/envs/{instance_id}/reset", json={})
        assert gone.status_code == 410 and gone.json["error"]["details"]["reason"] == "holder_gone"
