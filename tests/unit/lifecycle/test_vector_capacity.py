"""A vector env weighs its sub-envs: the registry's capacity, its published count and the worker's create checks."""

import gymnasium as gym
import pytest

from gymserve.errors import CapacityExceeded, InvalidValue
from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.envs import Envs
from gymserve.lifecycle.registry import EnvRecord, Registry
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import Settings


def vector(n: int, num_envs: int) -> EnvRecord:
    env = gym.make_vec("CartPole-v1", num_envs, vectorization_mode="sync")
    return EnvRecord(instance_id=f"v{n}", env_id="CartPole-v1", env=env, ttl=60, num_envs=num_envs)


def test_the_registry_counts_sub_envs_and_publishes_them():
    published: list[int] = []
    reg = Registry(Settings.from_env({"GYMSERVE_MAX_ENVS_PER_WORKER": "6"}), on_count=published.append)
    with reg.reserve(4):
        assert published[-1] == 4  # reserved places count before the env exists
        reg.add(vector(0, 4))
    assert len(reg) == 4 and reg.has_room(2) and not reg.has_room(3)
    with pytest.raises(CapacityExceeded) as err, reg.reserve(3):
        pass
    assert "cannot take 3 more" in err.value.message
    reg.pop("v0", ANYONE)
    assert len(reg) == 0 and published[-1] == 0


def test_the_worker_refuses_a_vector_env_beyond_the_replica_limit_or_max_num_envs():
    w = Envs(Settings.from_env({}, node_id="test", max_envs=5, max_num_envs=4))
    record = w.create(CreateRequest("CartPole-v1", num_envs=4, autoreset_mode="same_step", ttl=60), ANYONE)
    assert (record.weight, record.autoreset_mode, w.placement.replica_envs()) == (4, "same_step", 4)
    with pytest.raises(CapacityExceeded):
        w.create(CreateRequest("CartPole-v1", num_envs=2, ttl=60), ANYONE)
    with pytest.raises(InvalidValue) as err:
        w.create(CreateRequest("CartPole-v1", num_envs=5, ttl=60), ANYONE)
    assert err.value.details == {"field": "num_envs"}
    assert w.create(CreateRequest("CartPole-v1", ttl=60), ANYONE).weight == 1
    w.close(record.instance_id, ANYONE)
    assert w.placement.replica_envs() == 1
