"""The per-worker registry: capacity, TTL expiry, and closing under the env's lock."""

import threading
import time

import gymnasium as gym
import pytest

from gymserve.errors import CapacityExceeded, UnknownInstance
from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.registry import EnvRecord, Registry
from gymserve.settings import Settings


def record(n: int, ttl: float = 60) -> EnvRecord:
    return EnvRecord(instance_id=f"id{n}", env_id="CartPole-v1", env=gym.make("CartPole-v1"), ttl=ttl)


def test_capacity_refuses_beyond_the_limit_with_retry_after():
    reg = Registry(Settings.from_env({"GYMSERVE_MAX_ENVS_PER_WORKER": "2"}))
    for n in range(2):
        with reg.reserve():
            reg.add(record(n))
    assert reg.full
    with pytest.raises(CapacityExceeded) as err, reg.reserve():
        pass
    assert err.value.headers["Retry-After"] and err.value.status == 503
    reg.pop("id0", ANYONE)
    with reg.reserve():  # room again
        reg.add(record(9))


def test_concurrent_creates_never_overshoot_capacity():
    reg = Registry(Settings.from_env({"GYMSERVE_MAX_ENVS_PER_WORKER": "5"}))
    refused = []

    def create(n: int) -> None:
        try:
            with reg.reserve():
                time.sleep(0.01)
                reg.add(record(n))
        except CapacityExceeded:
            refused.append(n)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg) == 5 and len(refused) == 15


def test_idle_envs_expire_and_use_restarts_the_clock():
    reg = Registry(Settings.from_env({}))
    reg.add(record(1, ttl=0.2))
    reg.add(record(2, ttl=0))  # 0: never expires
    time.sleep(0.25)
    with reg.use("id1", ANYONE):
        pass
    assert reg.expired() == []
    time.sleep(0.25)
    assert [r.instance_id for r in reg.expired()] == ["id1"]


def test_pop_closes_and_later_use_is_unknown():
    reg = Registry(Settings.from_env({}))
    reg.add(record(1))
    reg.pop("id1", ANYONE)
    with pytest.raises(UnknownInstance), reg.use("id1", ANYONE):
        pass


def test_the_reaper_never_waits_behind_a_request_in_flight():
    reg = Registry(Settings.from_env({}))
    reg.add(record(1, ttl=0.01))
    time.sleep(0.05)
    held = reg.get("id1", ANYONE).lock
    held.acquire()
    try:
        started = time.monotonic()
        assert reg.pop_if_expired("id1") is False
        assert time.monotonic() - started < 0.5
    finally:
        held.release()
    assert reg.pop_if_expired("id1") is True
