"""Episode statistics and frames: returns and lengths as the envs produced them, and watching is not using."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve import metrics
from gymserve.app import create_app
from gymserve.envs.factory import AUTORESET_MODES
from gymserve.errors import Unavailable
from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.registry import EnvRecord, Registry
from gymserve.pipeline import frames, operations
from gymserve.settings import Settings, SettingsError


def record_of(env: Any, **fields: Any) -> EnvRecord:
    return EnvRecord("test.0-0." + "a" * 32, "CartPole-v1", env, ttl=60, **fields)


def local_episodes(env: gym.Env[Any, Any], seed: int, actions: list[int]) -> list[tuple[float, int]]:
    """What a plain Gymnasium loop reports for the same actions: (return, length) per finished episode."""
    env.reset(seed=seed)
    found, total, length = [], 0.0, 0
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        total, length = total + float(reward), length + 1
        if terminated or truncated:
            found.append((total, length))
            env.reset()
            total, length = 0.0, 0
    return found


def test_a_single_env_records_each_finished_episode_and_a_reset_drops_an_unfinished_one() -> None:
    record = record_of(gym.make("CartPole-v1"))
    actions = [1] * 60
    want = local_episodes(gym.make("CartPole-v1"), 5, actions)
    operations.reset(record, 5, None)
    for action in actions:
        if record.episode_over:
            operations.reset(record, None, None)
        operations.step(record, action)
    assert list(record.recent_episodes) == want and len(want) >= 3
    operations.step(record, 1) if not record.episode_over else operations.reset(record, None, None)
    operations.reset(record, None, None)  # a cut-short episode is not one
    assert list(record.recent_episodes) == want


def test_auto_reset_does_not_count_the_wrappers_reset_call_as_a_step() -> None:
    env = gym.wrappers.Autoreset(gym.make("CartPole-v1"))
    record = record_of(env, auto_reset=True)
    operations.reset(record, 2, None)
    for _ in range(40):
        operations.step(record, 0)
    want = local_episodes(gym.make("CartPole-v1"), 2, [0] * 40)
    # The local loop resets outside the step count, so the server has the same episodes (maybe fewer at the end).
    assert list(record.recent_episodes) == want[: len(record.recent_episodes)] and len(record.recent_episodes) >= 3


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_a_vector_env_records_each_sub_envs_episodes(mode: str) -> None:
    def make() -> Any:
        vector_kwargs = {"autoreset_mode": AUTORESET_MODES[mode]}
        return gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync", vector_kwargs=vector_kwargs)

    record = record_of(make(), num_envs=3, autoreset_mode=mode)
    operations.vector_reset(record, 7, None)
    rng = np.random.default_rng(0)
    moves = [rng.integers(0, 2, size=3) for _ in range(80)]
    for action in moves:
        operations.vector_step(record, action)
    # The same episodes computed from the vector env's own transitions, by the rule of its autoreset mode.
    env = make()
    env.reset(seed=7)
    totals, lengths, after_end, want = np.zeros(3), np.zeros(3, dtype=int), np.zeros(3, dtype=bool), []
    for action in moves:
        _, rewards, terminated, truncated, _ = env.step(action)
        counted = ~after_end if mode == "next_step" else np.ones(3, dtype=bool)
        totals += np.where(counted, rewards, 0)
        lengths += counted
        done = terminated | truncated
        want += [(float(totals[i]), int(lengths[i])) for i in np.flatnonzero(done)]
        totals[done], lengths[done], after_end = 0, 0, done
    assert list(record.recent_episodes) == want and len(want) >= 6
    assert all(length == ret for ret, length in want)  # CartPole: reward 1 per step


def test_the_history_is_bounded_by_the_setting() -> None:
    registry = Registry(Settings.from_env({}, episode_history=2))
    record = record_of(gym.make("CartPole-v1"))
    registry.add(record)
    operations.reset(record, 0, None)
    for _ in range(5):
        while not record.episode_over:
            operations.step(record, 0)
        operations.reset(record, None, None)
    assert len(record.recent_episodes) == 2


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("CartPole-*", "is not 'pattern=b1,b2,...'"),
        ("CartPole-*=10,x", "must be numbers"),
        ("default=5,1", "strictly increasing"),
        ("=1,2", "is not 'pattern"),
        ("default=1,nan", "finite"),
    ],
)
def test_bad_bucket_settings_stop_the_start_naming_the_variable(value: str, words: str) -> None:
    with pytest.raises(SettingsError, match="GYMSERVE_EPISODE_RETURN_BUCKETS") as err:
        Settings.from_env({"GYMSERVE_EPISODE_RETURN_BUCKETS": value})
    assert words in str(err.value)
    with pytest.raises(SettingsError, match="GYMSERVE_EPISODE_LENGTH_BUCKETS"):
        Settings.from_env({"GYMSERVE_EPISODE_LENGTH_BUCKETS": value})


def test_buckets_are_chosen_per_env_id_and_exported_under_one_name() -> None:
    settings = Settings.from_env(
        {"GYMSERVE_EPISODE_RETURN_BUCKETS": "CartPole-*=10,50,100,200,500;Pendulum-*=-1600,-800,-200,0"}
    )
    assert settings.episode_buckets("return", "CartPole-v1") == (10, 50, 100, 200, 500)
    assert settings.episode_buckets("return", "Pendulum-v1") == (-1600, -800, -200, 0)
    assert settings.episode_buckets("return", "Acrobot-v1")[0] == -1000  # no match, no default entry: built in
    metrics.EnvMeters("CartPole-v1", settings).episode_return.observe(42)
    metrics.EnvMeters("Pendulum-v1", settings).episode_return.observe(-900)
    text = metrics.exposition().decode()
    assert text.count("# TYPE gymserve_episode_return histogram") == 1
    assert 'gymserve_episode_return_bucket{env_id="CartPole-v1",le="50.0"}' in text
    assert 'gymserve_episode_return_bucket{env_id="Pendulum-v1",le="-800.0"}' in text
    assert 'gymserve_episode_return_bucket{env_id="Pendulum-v1",le="50.0"}' not in text


@pytest.fixture
def client() -> Any:
    return create_app(Settings.from_env({}, node_id="test", frame_wait_seconds=0.2)).test_client()


def test_a_frame_leaves_the_idle_clock_alone_and_render_restarts_it(client: Any) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}}).json[
        "instance_id"
    ]
    client.post(f"/v2/envs/{iid}/reset", json={"seed": 1})
    record = client.application.extensions["gymserve"].envs.registry.find(iid)
    record.last_used -= 30
    before = record.last_used
    first = client.get(f"/v2/envs/{iid}/frame")
    assert first.status_code == 200 and first.content_type == "image/png" and first.data.startswith(b"\x89PNG")
    assert client.get(f"/v2/envs/{iid}/frame").data == first.data
    assert record.last_used == before
    client.get(f"/v2/envs/{iid}/render")
    assert record.last_used > before


def test_a_frame_of_a_busy_env_is_its_last_one_or_503(client: Any) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}}).json[
        "instance_id"
    ]
    client.post(f"/v2/envs/{iid}/reset", json={"seed": 1})
    envs = client.application.extensions["gymserve"].envs
    record = envs.registry.get(iid, ANYONE)
    with record.lock:  # a long step in another thread
        started = time.monotonic()
        with pytest.raises(Unavailable):
            frames.latest(envs, iid, ANYONE, "0", 0.2)
        assert 0.2 <= time.monotonic() - started < 1
    shown = client.get(f"/v2/envs/{iid}/frame").data
    client.post(f"/v2/envs/{iid}/step", json={"action": 1})
    holder = threading.Thread(target=lambda: (record.lock.acquire(), time.sleep(0.6), record.lock.release()))
    holder.start()
    time.sleep(0.05)
    assert client.get(f"/v2/envs/{iid}/frame").data == shown  # busy: the last frame, not a wait behind the step
    holder.join()
    assert client.get(f"/v2/envs/{iid}/frame").data != shown  # free again: the frame after the step


def test_frames_of_an_env_without_a_render_mode_are_422_naming_it(client: Any) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    answer = client.get(f"/v2/envs/{iid}/frame")
    assert answer.status_code == 422 and answer.json["error"]["details"]["field"] == "render_mode"


def test_steps_past_the_end_of_an_episode_start_no_new_one() -> None:
    record = record_of(gym.make("CartPole-v1"))
    operations.reset(record, 1, None)
    while not record.episode_over:
        operations.step(record, 0)
    with warnings.catch_warnings():  # Gymnasium warns about stepping a terminated CartPole; /v1 allows it
        warnings.simplefilter("ignore")
        for _ in range(3):
            operations.step(record, 0)
    assert len(record.recent_episodes) == 1
