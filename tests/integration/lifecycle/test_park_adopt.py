"""Park and adopt on a real server: a restart with the same state directory and port keeps every env, under its id,
and its trajectory goes on bit for bit as a local gymnasium.make's with the same seeds and actions."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from gymserve.codec import values
from lifecycle_envs import UNCOPYABLE_ENV
from servers import Server, call, free_port, start_server

HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
SPECS: list[dict[str, Any]] = [
    {"env_id": "CartPole-v1"},
    {"env_id": "Acrobot-v1"},
    {"env_id": "Pendulum-v1"},
    {"env_id": "FrozenLake-v1", "kwargs": {"is_slippery": True}},
    {"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}, "render": True},
    {"env_id": "CartPole-v1", "num_envs": 3},
]
if HAS_MUJOCO:
    SPECS.append({"env_id": "HalfCheetah-v5"})


def _msgpack(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Accept": values.MSGPACK}
        payload = None
        if body is not None:
            payload = values.dumps(body, values.MSGPACK)
            headers["Content-Type"] = values.MSGPACK
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        kind = resp.getheader("Content-Type") or values.MSGPACK
        return resp.status, values.loads(raw, kind) if raw else None
    finally:
        conn.close()


class Trajectory:
    """One env driven remotely and locally side by side with the same seed and actions."""

    def __init__(self, spec: dict[str, Any], index: int) -> None:
        self.spec = spec
        self.seed = 100 + index
        kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if k != "render_mode"}
        if spec.get("num_envs"):
            self.local: Any = gym.make_vec(spec["env_id"], num_envs=spec["num_envs"], vectorization_mode="sync")
        else:
            self.local = gym.make(spec["env_id"], **kwargs)
        self.local.action_space.seed(index)
        self.instance_id = ""
        self.seq = 0

    def create(self, port: int) -> None:
        body = {k: v for k, v in self.spec.items() if k != "render"}
        status, answer = _msgpack(port, "POST", "/v2/envs", {**body, "labels": {"test": "park"}})
        assert status == 201, answer
        self.instance_id = answer["instance_id"]

    def _call(self, port: int, kind: str, body: dict[str, Any]) -> Any:
        self.seq += 1
        self.last = (kind, {**body, "seq": self.seq})
        status, answer = _msgpack(port, "POST", f"/v2/envs/{self.instance_id}/{kind}", self.last[1])
        assert status == 200, (self.spec, kind, status, answer)
        self.last_answer = answer
        return answer

    def reset(self, port: int) -> None:
        remote = self._call(port, "reset", {"seed": self.seed})
        local, _ = self.local.reset(seed=self.seed)
        _same(remote["observation"], local)

    def steps(self, port: int, n: int) -> None:
        for _ in range(n):
            action = self.local.action_space.sample()
            remote = self._call(port, "step", {"action": action})
            local = self.local.step(action)
            _same(remote["observation"], local[0])
            assert np.array_equal(np.asarray(remote["reward"]), np.asarray(local[1]))
            done = np.any(np.asarray(local[2]) | np.asarray(local[3]))
            if done and not self.spec.get("num_envs"):
                self.reset(port)
        if self.spec.get("render"):
            status, _ = _msgpack(port, "GET", f"/v2/envs/{self.instance_id}/render")
            assert status == 200


def _same(remote: Any, local: Any) -> None:
    assert np.array_equal(np.asarray(remote), np.asarray(local)), (remote, local)


def _stop(server: Server) -> None:
    server.signal(signal.SIGTERM)
    server.proc.wait(60)


def test_a_restart_keeps_every_env_under_its_id_and_its_trajectory_goes_on_exactly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    first = start_server(tmp_path, port=port, state_dir=str(state), drain_seconds=10)
    # Every kind of env, then enough CartPoles that both workers hold a hundred or more.
    specs = SPECS + [{"env_id": "CartPole-v1"}] * 200
    trajectories = [Trajectory(spec, i) for i, spec in enumerate(specs)]
    try:
        for i, t in enumerate(trajectories):
            t.create(port)
            t.reset(port)
            t.steps(port, 7 if i < len(SPECS) else 2)
    finally:
        _stop(first)
    counts = [tuple(map(int, m)) for m in re.findall(r"parked (\d+) envs \((\d+) lost\)", first.log())]
    assert sum(p for p, _ in counts) == len(specs) and sum(lost for _, lost in counts) == 0, counts
    second = start_server(tmp_path, port=port, state_dir=str(state), drain_seconds=10)
    try:
        for i, t in enumerate(trajectories):
            t.steps(port, 9 if i < len(SPECS) else 2)
            info = call(port, "GET", f"/v2/envs/{t.instance_id}").body
            assert info["instance_id"] == t.instance_id
            assert info["seq"] == t.seq
            assert info["labels"] == {"test": "park"}
    finally:
        _stop(second)
    third = start_server(tmp_path, port=port, state_dir=str(state), drain_seconds=10)
    try:
        # A resend of the last numbered step, after another move, gets the kept answer: it never runs twice.
        t = trajectories[0]
        kind, body = t.last
        status, again = _msgpack(port, "POST", f"/v2/envs/{t.instance_id}/{kind}", body)
        assert status == 200 and again.keys() == t.last_answer.keys()
        _same(again["observation"], t.last_answer["observation"])
        assert call(port, "GET", f"/v2/envs/{t.instance_id}").body["seq"] == t.seq
        # Closed after the move, it is gone for good.
        assert call(port, "DELETE", f"/v2/envs/{t.instance_id}").status == 204
        # (Its id names a worker of the first server: with no record left, it reads as that worker's, lost.)
        assert call(port, "POST", f"/v2/envs/{t.instance_id}/step", {"action": 0}).status == 410
    finally:
        third.stop()
    assert "adopted env" in second.log() and "adopted env" in third.log()


def test_a_record_that_fails_its_signature_is_lost_with_a_reason_and_never_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    first = start_server(tmp_path, port=port, state_dir=str(state))
    ids = [call(port, "POST", "/v2/envs", {"env_id": "CartPole-v1"}).body["instance_id"] for _ in range(2)]
    _stop(first)
    parked = state / str(port) / "parked"
    assert sorted(os.listdir(parked)) == sorted(ids)
    victim = parked / ids[0]
    raw = bytearray(victim.read_bytes())
    raw[-5] ^= 0xFF
    victim.write_bytes(bytes(raw))
    second = start_server(tmp_path, port=port, state_dir=str(state))
    try:
        bad = call(port, "POST", f"/v2/envs/{ids[0]}/reset", {})
        assert bad.status == 410 and bad.body["error"]["details"]["reason"] == "bad_record", bad.body
        assert call(port, "POST", f"/v2/envs/{ids[1]}/reset", {}).status == 200  # nothing else is affected
    finally:
        second.stop()


def test_a_server_on_another_port_never_adopts_the_envs_of_this_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    first = start_server(tmp_path, port=port, state_dir=str(state))
    instance_id = call(port, "POST", "/v2/envs", {"env_id": "CartPole-v1"}).body["instance_id"]
    _stop(first)
    other = start_server(tmp_path, state_dir=str(state))
    try:
        assert call(int(other.url.rsplit(":", 1)[1]), "POST", f"/v2/envs/{instance_id}/reset", {}).status == 410
    finally:
        other.stop()
    again = start_server(tmp_path, port=port, state_dir=str(state))
    try:
        assert call(port, "POST", f"/v2/envs/{instance_id}/reset", {}).status == 200
    finally:
        again.stop()


def test_an_idle_env_hibernates_is_listed_as_parked_and_comes_back_where_it_was(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, env_ttl_seconds=1, reaper_interval_seconds=0.2, idle_action="park", park_ttl_seconds=60
    )
    port = int(server.url.rsplit(":", 1)[1])
    try:
        t = Trajectory({"env_id": "CartPole-v1"}, 3)
        t.create(port)
        t.reset(port)
        t.steps(port, 4)
        deadline = time.monotonic() + 10
        listed: list[Any] = []
        while time.monotonic() < deadline and not listed:
            time.sleep(0.2)
            listed = [e for e in call(port, "GET", "/v2/envs").body["envs"] if e["state"] == "parked"]
        assert [e["instance_id"] for e in listed] == [t.instance_id] and listed[0]["labels"] == {"test": "park"}
        t.steps(port, 5)  # the next request brings it back, exactly where it was
        assert [e["state"] for e in call(port, "GET", "/v2/envs").body["envs"]] == ["live"]
        Trajectory({"env_id": "CartPole-v1"}, 4).create(port)
        states: list[str] = []
        while time.monotonic() < deadline + 10 and states != ["parked", "parked"]:
            time.sleep(0.2)
            states = [e["state"] for e in call(port, "GET", "/v2/envs?label=test=park").body["envs"]]
        assert states == ["parked", "parked"]
        assert call(port, "DELETE", "/v2/envs?label=test=park").body["deleted"] == 2  # parked ones too
        assert call(port, "GET", "/v2/envs").body["envs"] == []
    finally:
        server.stop()


def test_an_env_that_cannot_be_copied_says_so_and_is_lost_at_a_restart_with_that_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    state, port = tmp_path / "state", free_port()
    settings = {"state_dir": str(state), "env_modules": "lifecycle_envs"}
    first = start_server(tmp_path, port=port, allowed_envs=f"CartPole-v1,{UNCOPYABLE_ENV}", **settings)
    stuck = call(port, "POST", "/v2/envs", {"env_id": UNCOPYABLE_ENV}).body["instance_id"]
    fine = call(port, "POST", "/v2/envs", {"env_id": "CartPole-v1"}).body["instance_id"]
    assert call(port, "GET", f"/v2/envs/{stuck}").body["movable"] is False
    assert call(port, "GET", f"/v2/envs/{fine}").body["movable"] is True
    _stop(first)
    second = start_server(tmp_path, port=port, allowed_envs=f"CartPole-v1,{UNCOPYABLE_ENV}", **settings)
    try:
        gone = call(port, "POST", f"/v2/envs/{stuck}/reset", {})
        assert gone.status == 410 and gone.body["error"]["details"]["reason"] == "not_movable", gone.body
        assert call(port, "POST", f"/v2/envs/{fine}/reset", {}).status == 200
    finally:
        second.stop()


def test_a_learner_steps_through_a_restart_with_no_exception_and_the_same_trajectory(tmp_path: Path) -> None:
    from gymserve.client import RemoteEnv

    state, port = tmp_path / "state", free_port()
    first = start_server(tmp_path, port=port, state_dir=str(state))
    local = gym.make("CartPole-v1")
    remote = RemoteEnv(f"http://127.0.0.1:{port}", "CartPole-v1", retry_window=60)
    instance_id = remote.instance_id
    same = [np.array_equal(remote.reset(seed=9)[0], local.reset(seed=9)[0])]
    steps = 0
    restarted: list[Server] = []
    try:
        while steps < 60:
            if steps == 20:  # the server stops and comes back while the learner keeps stepping
                _stop(first)
                threading.Timer(
                    1.0, lambda: restarted.append(start_server(tmp_path, port=port, state_dir=str(state)))
                ).start()
            action = steps % 2
            observation, _, terminated, truncated, _ = remote.step(action)
            expected, _, done, cut, _ = local.step(action)
            same.append(np.array_equal(observation, expected))
            steps += 1
            if terminated or truncated:
                assert done or cut
                same.append(np.array_equal(remote.reset(seed=steps)[0], local.reset(seed=steps)[0]))
        assert all(same) and remote.instance_id == instance_id
    finally:
        remote.close()
        deadline = time.monotonic() + 30
        while not restarted and time.monotonic() < deadline:
            time.sleep(0.1)
        for server in restarted:
            server.stop()
