"""Where a create goes: Envs.placement_for spreads creates over a replica's workers by their load."""

from __future__ import annotations

import pytest

from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.envs import Envs
from gymserve.routing.ids import Owner
from gymserve.routing.replica import make_replica
from gymserve.settings import Settings


def worker_with_counts(tmp_path, counts: list[int], me: int = 0, **settings: str) -> Envs:
    replica = make_replica(str(tmp_path / "run"), len(counts))
    for slot, n in enumerate(counts):
        replica.set_count(slot, n)
        (tmp_path / "run" / f"worker-{slot}.sock").touch()  # every slot live
    env = {f"GYMSERVE_{k.upper()}": v for k, v in settings.items()}
    return Envs(Settings.from_env(env, node_id="test"), Owner("test", me, 1), replica)


@pytest.mark.parametrize(
    ("counts", "weight", "expected"),
    [
        ([5, 3, 4, 3], 1, None),  # within the tolerance (2) of the least loaded: create here, no hop
        ([6, 3, 4, 3], 1, 1),  # 3 above it: the least loaded sibling (the lower slot of a tie)
        ([6, 3, 2, 3], 1, 2),
        ([0, 0, 0, 0], 1, None),
        ([9, 8, 8, 8], 8, None),  # a vector env of 8 weighs 8, and so do the counts: balanced enough
    ],
)
def test_creates_go_to_the_least_loaded_worker_beyond_the_tolerance(tmp_path, counts, weight, expected):
    assert worker_with_counts(tmp_path, counts).placement.slot_for(weight) == expected


def test_the_tolerance_is_a_setting(tmp_path):
    assert worker_with_counts(tmp_path, [1, 0], placement_tolerance="0").placement.slot_for(1) == 1
    assert worker_with_counts(tmp_path, [9, 0], placement_tolerance="10").placement.slot_for(1) is None


def test_a_full_worker_sends_its_creates_on_whatever_the_tolerance(tmp_path):
    w = worker_with_counts(tmp_path, [3, 2], max_envs_per_worker="3", placement_tolerance="10")
    # placement_for reads the registry for this worker's own room: fill it as the counts say.
    with w.registry.reserve(3):
        assert w.placement.slot_for(1) == 1


def test_a_worker_alone_creates_here(tmp_path):
    assert Envs(Settings.from_env({}, node_id="test")).placement.slot_for(1) is None


def test_each_worker_reports_its_live_envs_by_slot(tmp_path):
    from gymserve import metrics
    from gymserve.pipeline.models import CreateRequest

    w = worker_with_counts(tmp_path, [0, 0, 0], me=2)
    record = w.create(CreateRequest(env_id="CartPole-v1", num_envs=3, ttl=60), ANYONE)
    assert metrics.WORKER_ENVS.labels("2")._value.get() == 3  # a vector env weighs its sub-envs
    w.close(record.instance_id, ANYONE)
    assert metrics.WORKER_ENVS.labels("2")._value.get() == 0


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_create_whose_sibling_just_went_away_is_made_here(tmp_path, monkeypatch, api):
    """Placement picks a sibling whose socket refuses (it just died): the worker makes the env itself, from the
    same body (it was read once, to forward it)."""
    import socket

    from gymserve.app import create_app
    from gymserve.routing import replica as routing

    replica = make_replica(str(tmp_path / "run"), 2)
    replica.set_count(0, 5)  # 5 above the sibling: beyond the tolerance, so the create goes there
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(replica.socket_path(1))  # its socket file is there, nobody listens: refused
    dead.close()
    monkeypatch.setattr(routing, "_current", routing.WorkerSlot(replica, 0, 1))
    client = create_app(Settings.from_env({}, node_id="test")).test_client()
    (tmp_path / "run" / "worker-0.sock").touch()  # this worker's own, as its peer server would make it
    path = "/v1/envs/" if api == "v1" else "/v2/envs"
    resp = client.post(path, json={"env_id": "CartPole-v1"})
    assert resp.status_code in (200, 201), resp.json
    assert resp.json["instance_id"].startswith("test.0-1.")
