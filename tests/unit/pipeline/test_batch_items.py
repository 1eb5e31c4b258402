"""Batch stepping in one standalone worker: answers in request order, and every item that cannot step fails alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve.errors import InvalidValue
from gymserve.lifecycle.caller import ANYONE, Caller
from gymserve.lifecycle.envs import Envs
from gymserve.pipeline import handler
from gymserve.pipeline.batch import Batches, checked_items
from gymserve.pipeline.models import BatchItem, CreateRequest
from gymserve.routing.ids import IdMinter, Owner
from gymserve.settings import Settings

ME = Owner("test", 0, 2)  # generation 2: generations 0 and 1 of this slot were workers that died


@pytest.fixture
def worker() -> Iterator[Envs]:
    core = Envs(Settings.from_env({}, node_id="test"), owner=ME)
    yield core
    core.registry.close_all()


def create(worker: Envs, seed: int, n: int = 1) -> list[str]:
    """`n` CartPole envs made through the worker, each reset with `seed`."""
    made = []
    for _ in range(n):
        record = worker.create(CreateRequest("CartPole-v1", ttl=60), ANYONE)
        with worker.registry.use(record.instance_id, ANYONE) as locked:
            handler.reset_payload(locked, seed, None)
        made.append(record.instance_id)
    return made


def code(result: dict[str, Any]) -> str | None:
    return result.get("error", {}).get("code")


def test_every_item_is_answered_in_request_order_like_a_local_env(worker: Envs) -> None:
    ids = create(worker, seed=5, n=3)
    actions = [1, 0, 1]
    results = Batches(worker, None).step([BatchItem(iid, a) for iid, a in zip(ids, actions, strict=True)], ANYONE)
    local = gym.make("CartPole-v1")
    for result, action in zip(results, actions, strict=True):
        local.reset(seed=5)
        obs, reward, terminated, truncated, _ = local.step(action)
        assert np.array_equal(result["observation"], obs) and result["reward"] == reward
        assert (result["terminated"], result["truncated"]) == (terminated, truncated)
    # The same seed, different actions: the items were not mixed up.
    assert not np.array_equal(results[0]["observation"], results[1]["observation"])
    assert np.array_equal(results[0]["observation"], results[2]["observation"])


def test_each_item_that_cannot_step_fails_alone_with_its_own_error(worker: Envs) -> None:
    good, other = create(worker, seed=1, n=2)
    elsewhere = IdMinter(Owner("other-node", 0, 2)).mint()
    lost = IdMinter(Owner("test", 0, 1)).mint()  # an older generation of this worker's slot
    sibling = IdMinter(Owner("test", 1, 0)).mint()  # a standalone worker has no sibling to forward to
    gone = IdMinter(ME).mint()  # well formed and ours, but never created
    items = [
        BatchItem(good, 1),
        BatchItem("not-an-id", 1),
        BatchItem(elsewhere, 1),
        BatchItem(lost, 1),
        BatchItem(sibling, 1),
        BatchItem(gone, 1),
        BatchItem(other, 7),
    ]
    results = Batches(worker, None).step(items, ANYONE)
    assert [code(r) for r in results] == [
        None,
        "unknown_instance",
        "wrong_replica",
        "instance_lost",
        "instance_lost",
        "unknown_instance",
        "invalid_value",
    ]
    assert results[0]["reward"] == 1.0
    assert results[2]["error"]["details"] == {"instance_id": elsewhere, "replica": "other-node"}
    assert results[3]["error"]["details"] == {"instance_id": lost}
    assert results[5]["error"]["details"] == {"instance_id": gone}
    assert results[6]["error"]["details"]["field"] == "action"
    assert worker.registry.find(other).steps == 0  # the bad action never reached the env


def test_an_unknown_id_is_echoed_only_up_to_100_characters(worker: Envs) -> None:
    (result,) = Batches(worker, None).step([BatchItem("x" * 5000, 1)], ANYONE)
    assert code(result) == "unknown_instance" and len(result["error"]["details"]["instance_id"]) == 100


def test_an_env_whose_episode_ended_needs_a_reset_while_the_others_step_on(worker: Envs) -> None:
    ended, fresh = create(worker, seed=0, n=2)
    for _ in range(500):
        (result,) = Batches(worker, None).step([BatchItem(ended, 1)], ANYONE)
        if result["terminated"] or result["truncated"]:
            break
    else:
        pytest.fail("CartPole pushed one way never ended")
    results = Batches(worker, None).step([BatchItem(ended, 1), BatchItem(fresh, 1)], ANYONE)
    assert [code(r) for r in results] == ["reset_needed", None]


def test_numbered_items_are_resent_not_rerun(worker: Envs) -> None:
    (iid,) = create(worker, seed=3)
    first = Batches(worker, None).step([BatchItem(iid, 1, seq=1)], ANYONE)[0]
    again = Batches(worker, None).step([BatchItem(iid, 1, seq=1)], ANYONE)[0]
    assert again["seq"] == first["seq"] == 1 and np.array_equal(again["observation"], first["observation"])
    assert worker.registry.find(iid).steps == 1
    (conflict,) = Batches(worker, None).step([BatchItem(iid, 0, seq=1)], ANYONE)
    assert code(conflict) == "sequence_conflict" and conflict["error"]["details"]["expected"] == 2


def test_an_item_that_raises_unexpectedly_fails_alone_as_internal(
    worker: Envs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = create(worker, seed=2, n=3)
    real = handler.step_item

    def buggy(w: Envs, item: BatchItem, caller: Caller) -> dict[str, Any]:
        if item.id == ids[1]:
            raise RuntimeError("a bug with a secret in it")
        return real(w, item, caller)

    monkeypatch.setattr(handler, "step_item", buggy)
    results = Batches(worker, None).step([BatchItem(iid, 1) for iid in ids], ANYONE)
    assert [code(r) for r in results] == [None, "internal", None]
    assert "secret" not in str(results[1])  # the client is told only that it happened ...
    assert "a bug with a secret in it" in caplog.text  # ... the log gets the traceback


# --- checked_items ---


def test_checked_items_passes_a_batch_within_the_limit_unchanged() -> None:
    items = [BatchItem("a", 0), BatchItem("b", 1)]
    assert checked_items(items, limit=2) is items


def test_checked_items_refuses_an_env_twice_naming_the_second_item() -> None:
    items = [BatchItem("a", 0), BatchItem("b", 1), BatchItem("c", 0), BatchItem("b", 0)]
    with pytest.raises(InvalidValue) as raised:
        checked_items(items, limit=10)
    assert raised.value.status == 422 and raised.value.details == {"field": "items[3].id"}


def test_checked_items_refuses_a_batch_over_the_limit_naming_items_and_the_setting() -> None:
    with pytest.raises(InvalidValue) as raised:
        checked_items([BatchItem(str(i), 0) for i in range(3)], limit=2)
    assert raised.value.details == {"field": "items"} and "GYMSERVE_MAX_BATCH_SIZE" in raised.value.message
