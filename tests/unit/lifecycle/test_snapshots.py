"""Snapshots in one process: off without a key, bounded in size, sealed and opened only under the same key."""

from __future__ import annotations

import base64
import time
from typing import Any

import gymnasium as gym
import msgpack
import pytest

from gymserve.app import create_app
from gymserve.errors import InvalidSnapshot
from gymserve.lifecycle import copies as snapshots
from gymserve.settings import Settings, SettingsError

KEY = "unit-test-farm-key-" + "u" * 32


def _state() -> snapshots.EnvState:
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    return snapshots.EnvState("CartPole-v1", env, None, None, False, 0, False, {"run": "u"})


def test_without_a_key_snapshots_are_off_and_say_which_setting_turns_them_on(client: Any) -> None:
    instance_id = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    resp = client.get(f"/v2/envs/{instance_id}/snapshot")
    assert resp.status_code == 422 and resp.json["error"]["code"] == "not_supported"
    assert "GYMSERVE_SNAPSHOT_KEY" in resp.json["error"]["message"]


def test_a_short_key_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="GYMSERVE_SNAPSHOT_KEY"):
        snapshots.Sealer.from_environ(1 << 20, {"GYMSERVE_SNAPSHOT_KEY": "short"})


def test_a_blob_opens_only_under_the_key_that_sealed_it() -> None:
    mine = snapshots.Sealer(KEY.encode(), 1 << 20)
    blob = mine.seal(_state())
    assert mine.open(blob).labels == {"run": "u"}
    with pytest.raises(InvalidSnapshot):
        snapshots.Sealer(b"x" * 40, 1 << 20).open(blob)
    with pytest.raises(InvalidSnapshot):
        mine.open(blob[:-1] + bytes([blob[-1] ^ 1]))


def test_a_snapshot_over_the_limit_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYMSERVE_SNAPSHOT_KEY", KEY)
    client = create_app(Settings.from_env({"GYMSERVE_MAX_SNAPSHOT_BYTES": "1024"}, node_id="test")).test_client()
    instance_id = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    resp = client.get(f"/v2/envs/{instance_id}/snapshot")
    assert resp.status_code == 422 and "GYMSERVE_MAX_SNAPSHOT_BYTES" in resp.json["error"]["message"]


def test_json_carries_the_blob_in_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYMSERVE_SNAPSHOT_KEY", KEY)
    client = create_app(Settings.from_env({}, node_id="test")).test_client()
    instance_id = client.post("/v2/envs", json={"env_id": "CartPole-v1", "labels": {"run": "b64"}}).json["instance_id"]
    blob = client.get(f"/v2/envs/{instance_id}/snapshot").data
    resp = client.post("/v2/envs", json={"env_id": "CartPole-v1", "snapshot": base64.b64encode(blob).decode()})
    assert resp.status_code == 201 and resp.json["labels"] == {"run": "b64"}
    resp = client.post("/v2/envs", json={"env_id": "CartPole-v1", "snapshot": "not base64!"})
    assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "snapshot"


def test_serve_refuses_a_short_key_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gymserve.cli import main

    monkeypatch.setenv("GYMSERVE_SNAPSHOT_KEY", "short")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "GYMSERVE_SNAPSHOT_KEY" in err and "short" not in err.replace("GYMSERVE_SNAPSHOT_KEY", ""), "never echoed"


def test_a_snapshot_is_bound_to_its_tenant_and_expires() -> None:
    sealer = snapshots.Sealer(KEY.encode(), 1 << 20)
    mine, theirs = snapshots.snapshot_binding("team-a"), snapshots.snapshot_binding("team-b")
    blob = sealer.seal(_state(), mine, time.time() + 60)
    assert sealer.open(blob, mine).env_id == "CartPole-v1"
    with pytest.raises(InvalidSnapshot, match="another tenant"):
        sealer.open(blob, theirs)
    stale = sealer.seal(_state(), mine, time.time() - 1)
    with pytest.raises(InvalidSnapshot, match="expired"):
        sealer.open(stale, mine)
    forged = bytearray(stale)
    forged[36:44] = int(time.time() + 3600).to_bytes(8, "big")  # a later expiry written in: the MAC says no
    with pytest.raises(InvalidSnapshot, match="altered"):
        sealer.open(bytes(forged), mine)


def test_pickling_stops_at_the_limit_instead_of_holding_a_too_large_env() -> None:
    sealer = snapshots.Sealer(KEY.encode(), 4096)
    state = _state()
    state.env.unwrapped.ballast = bytes(1 << 20)  # what a large env holds
    from gymserve.errors import NotSupported

    with pytest.raises(NotSupported, match="over the server's limit of 4096 bytes"):
        sealer.seal(state)


def test_a_restore_passes_todays_kwargs_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYMSERVE_SNAPSHOT_KEY", KEY)
    tall = ["SF"] + ["FF"] * 98 + ["FG"]  # 100 rows: past the kwargs table's 64 (the exemption lifts it)
    loose = Settings.from_env({"GYMSERVE_ENV_KWARGS_ALLOW": "FrozenLake-v1:desc"}, node_id="a")
    client = create_app(loose).test_client()
    made = client.post("/v2/envs", json={"env_id": "FrozenLake-v1", "kwargs": {"desc": tall}})
    assert made.status_code == 201, made.json
    blob = client.get(f"/v2/envs/{made.json['instance_id']}/snapshot").data
    strict = create_app(Settings.from_env({}, node_id="b")).test_client()  # the operator took the exemption back
    body = msgpack.packb({"env_id": "FrozenLake-v1", "snapshot": blob})
    resp = strict.post("/v2/envs", data=body, content_type="application/msgpack")
    assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "kwargs.desc", resp.json
