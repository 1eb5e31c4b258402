"""What RL frameworks ask of an env service (issue 16), on a real two-worker server with fresh connections:
labels and bulk delete, idempotent create, fork, snapshot and restore, leases. Every answer is held to the
OpenAPI document (the Contract of test_v2_api)."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import requests
from test_v2_api import JSON, Api, Contract, expect_error

from gymserve.client import RemoteEnv, RemoteError, RemoteVectorEnv
from gymserve.lifecycle import idempotency
from gymserve.lifecycle.copies import EnvState, Sealer
from lifecycle_envs import DICT_ENV, UNCOPYABLE_ENV
from servers import Server, start_server

pytestmark = pytest.mark.integration

SNAPSHOT_KEY = "test-farm-key-" + "k" * 32


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers that also serve the test's Dict-observation env (GYMSERVE_ENV_MODULES=lifecycle_envs)."""
    tests = str(Path(__file__).resolve().parents[2])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
        srv = start_server(
            tmp_path_factory.mktemp("lifecycle"),
            workers=2,
            snapshot_key=SNAPSHOT_KEY,
            env_modules="lifecycle_envs",
            allowed_envs=f"CartPole-v1,Acrobot-v1,{DICT_ENV},{UNCOPYABLE_ENV}",
        )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(farm: Server) -> Api:
    return Api(farm.url, Contract(requests.get(farm.url + "/v2/openapi.json", timeout=30).json()))


def _run() -> str:
    return "run-" + uuid.uuid4().hex[:12]


def _ids(api: Api, *selectors: str) -> set[str]:
    query = "&".join(f"label={s}" for s in selectors)
    resp, listed = api.call("GET", "/v2/envs" + (f"?{query}" if query else ""))
    assert resp.status_code == 200, resp.text
    return {e["instance_id"] for e in listed["envs"]}


# --- labels and bulk delete ---


def test_labels_are_kept_shown_and_select_envs_on_every_worker(api: Api) -> None:
    run, other = _run(), _run()
    mine = {api.create(labels={"run": run, "role": "actor" if i % 2 else "learner"}) for i in range(6)}
    theirs = {api.create(labels={"run": other}) for _ in range(2)}
    owners = {i.split(".")[1].split("-")[0] for i in mine}
    assert len(owners) == 2, "fresh connections should have reached both workers"
    resp, info = api.call("GET", f"/v2/envs/{next(iter(mine))}")
    assert info["labels"]["run"] == run
    assert _ids(api, f"run={run}") == mine
    assert len(_ids(api, f"run={run}", "role=actor")) == 3
    assert _ids(api, f"run={other}") == theirs
    resp, answer = api.call("DELETE", f"/v2/envs?label=run={run}&label=role=actor")
    assert resp.status_code == 200 and answer == {"deleted": 3}
    resp, answer = api.call("DELETE", f"/v2/envs?label=run={run}")
    assert answer == {"deleted": 3}
    assert _ids(api, f"run={run}") == set()
    assert _ids(api, f"run={other}") == theirs, "a bulk delete closes exactly the matching envs"
    api.call("DELETE", f"/v2/envs?label=run={other}")


def test_a_bulk_delete_without_a_selector_or_with_bad_labels_is_refused(api: Api) -> None:
    keep = api.create(labels={"run": _run()})
    expect_error(api.call("DELETE", "/v2/envs")[0], 422, "invalid_value", "label")
    expect_error(api.call("DELETE", "/v2/envs?label=run")[0], 422, "invalid_value", "label")
    expect_error(api.call("GET", "/v2/envs?label=a%20b=c")[0], 422, "invalid_value", "label")
    assert api.call("GET", f"/v2/envs/{keep}")[0].status_code == 200, "nothing was deleted"
    for labels in ({"bad key": "x"}, {"run": "has space"}, {f"k{i}": "v" for i in range(17)}, {"run": 3}):
        resp, _ = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1", "labels": labels})
        expect_error(resp, 422, "invalid_value", "labels")
    api.call("DELETE", f"/v2/envs/{keep}")


def test_clients_pass_labels(farm: Server) -> None:
    run = _run()
    with RemoteEnv(farm.url, "CartPole-v1", labels={"run": run}) as env:
        vec = RemoteVectorEnv(farm.url, "CartPole-v1", 2, labels={"run": run})
        assert env._remote.info()["labels"] == {"run": run}  # type: ignore[attr-defined]
        assert vec.info()["labels"] == {"run": run}
        assert requests.delete(f"{farm.url}/v2/envs?label=run={run}", timeout=30).json() == {"deleted": 2}
        vec.close()  # already gone: closing says nothing


# --- idempotent create ---


def test_the_same_key_and_body_give_the_same_env_on_any_worker(api: Api) -> None:
    run, key = _run(), str(uuid.uuid4())
    body = {"env_id": "CartPole-v1", "labels": {"run": run}}
    answers = [api.call("POST", "/v2/envs", body, headers={"Idempotency-Key": key}) for _ in range(6)]
    assert {resp.status_code for resp, _ in answers} == {201}
    assert len({info["instance_id"] for _, info in answers}) == 1
    assert answers[0][0].content == answers[-1][0].content, "a resend gets the first answer again"
    assert [resp.headers.get("Idempotent-Replayed") for resp, _ in answers] == [None] + ["true"] * 5
    assert len(_ids(api, f"run={run}")) == 1, "one env, however many workers the resends reached"
    other, _ = api.call("POST", "/v2/envs", {**body, "ttl": 60}, headers={"Idempotency-Key": key})
    expect_error(other, 422, "idempotency_mismatch", "Idempotency-Key")
    assert (
        api.call("POST", "/v2/envs", body, send_as="application/msgpack", headers={"Idempotency-Key": key})[
            0
        ].status_code
        == 422
    ), "the same body means the same bytes in the same encoding"
    api.call("DELETE", f"/v2/envs/{answers[0][1]['instance_id']}")
    resp, again = api.call("POST", "/v2/envs", body, headers={"Idempotency-Key": key})
    assert resp.status_code == 201 and again["instance_id"] != answers[0][1]["instance_id"], "forgotten with its env"
    api.call("DELETE", f"/v2/envs?label=run={run}")


def test_a_bad_key_is_refused_naming_the_header(api: Api) -> None:
    resp, _ = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1"}, headers={"Idempotency-Key": "x" * 201})
    expect_error(resp, 422, "invalid_value", "Idempotency-Key")


# --- fork ---


def _trajectory(env: Any, actions: list[Any]) -> list[Any]:
    """The transitions of `actions`, up to the end of the episode (a single env's)."""
    out = []
    for action in actions:
        out.append(env.step(action))
        if out[-1][2] is True or out[-1][3] is True:
            break
    return out


def _assert_bit_identical(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_bit_identical(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_bit_identical(x, y)
    elif isinstance(a, np.ndarray) and a.dtype == object:  # a vector env's final_obs: one per sub-env
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            _assert_bit_identical(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("env_id", ["CartPole-v1", DICT_ENV])
def test_a_fork_follows_the_same_trajectory_and_never_moves_the_original(farm: Server, env_id: str) -> None:
    with RemoteEnv(farm.url, env_id, labels={"run": "fork"}) as original:
        original.reset(seed=11)
        rng = np.random.default_rng(0)
        _trajectory(original, [0, 1, 0])
        fork = original.fork()
        with fork:
            assert fork.instance_id != original.instance_id
            info = fork._remote.info()  # type: ignore[attr-defined]
            assert info["seq"] == 0 and info["labels"] == {"run": "fork"}
            assert info["owner"] == original._remote.info()["owner"], "a fork lives on its original's worker"  # type: ignore[attr-defined]
            actions = [int(a) for a in rng.integers(0, 2, 20)]
            theirs = _trajectory(fork, actions)  # the fork first: stepping it must not move the original
            mine = _trajectory(original, actions)
            _assert_bit_identical(theirs, mine)
            relabelled = fork.fork(labels={"run": "other"})
            assert relabelled._remote.info()["labels"] == {"run": "other"}  # type: ignore[attr-defined]
            relabelled.close()


def test_a_fork_taken_as_an_auto_reset_episode_ends_resets_like_its_original(api: Api) -> None:
    instance_id = api.create(auto_reset=True)
    api.call("POST", f"/v2/envs/{instance_id}/reset", {"seed": 4})
    for _ in range(200):  # one action only: the pole falls within a few dozen steps
        _, step = api.call("POST", f"/v2/envs/{instance_id}/step", {"action": 1})
        if step["terminated"] or step["truncated"]:
            break
    else:
        raise AssertionError("the episode never ended")
    _, fork = api.call("POST", f"/v2/envs/{instance_id}/fork")
    for action in [0, 1, 0, 1, 1]:  # the first of these is the Autoreset wrapper's reset on both
        _, theirs = api.call("POST", f"/v2/envs/{fork['instance_id']}/step", {"action": action})
        _, mine = api.call("POST", f"/v2/envs/{instance_id}/step", {"action": action})
        theirs.pop("seq")
        mine.pop("seq")
        _assert_bit_identical(theirs, mine)
    _, fork_info = api.call("GET", f"/v2/envs/{fork['instance_id']}")
    _, info = api.call("GET", f"/v2/envs/{instance_id}")
    assert fork_info["last_episode"] is None and info["last_episode"] is not None, "the fork's own statistics"


def test_a_vector_fork_follows_the_same_trajectories(farm: Server) -> None:
    with RemoteVectorEnv(farm.url, "CartPole-v1", 3, autoreset_mode="same_step") as original:
        original.reset(seed=5)
        original.step(np.array([0, 1, 0]))
        with original.fork() as fork:
            assert fork.num_envs == 3 and fork.metadata == original.metadata
            actions = [np.array(a) for a in np.random.default_rng(1).integers(0, 2, (40, 3))]
            _assert_bit_identical(_trajectory(fork, actions), _trajectory(original, actions))


def test_a_fork_counts_against_capacity_as_its_sub_envs(make_server: Any) -> None:
    srv = make_server(workers=1, max_envs_per_worker=5, max_envs=5)
    with RemoteVectorEnv(srv.url, "CartPole-v1", 3) as vec:
        with pytest.raises(RemoteError) as full:
            vec.fork()
        assert full.value.status == 503 and full.value.code == "capacity_exceeded"
        assert full.value.fault == "infrastructure" and full.value.retryable


def test_an_env_that_cannot_be_copied_is_422_not_supported_saying_why(api: Api) -> None:
    instance_id = api.create(env_id=UNCOPYABLE_ENV)  # it holds a lock
    api.call("POST", f"/v2/envs/{instance_id}/reset", {"seed": 1})
    resp, _ = api.call("POST", f"/v2/envs/{instance_id}/fork")
    error = expect_error(resp, 422, "not_supported", "instance_id")
    assert "cannot be copied" in error["message"] and "lock" in error["message"]
    rendered = api.create(kwargs={"render_mode": "rgb_array"})
    api.call("POST", f"/v2/envs/{rendered}/reset", {"seed": 1})
    api.call("GET", f"/v2/envs/{rendered}/render")  # its renderer (a pygame surface and clock) is left out of a copy
    assert api.call("POST", f"/v2/envs/{rendered}/fork")[0].status_code == 201
    resp, forked = api.call("POST", f"/v2/envs/{api.create()}/fork", {"ttl": 30, "labels": {"run": "x"}})
    assert resp.status_code == 201 and forked["ttl"] == 30 and forked["labels"] == {"run": "x"}
    api.call("DELETE", f"/v2/envs/{instance_id}")
    expect_error(api.call("POST", f"/v2/envs/{instance_id}/fork")[0], 404, "unknown_instance")


# --- snapshot and restore ---


def _snapshot_of(api: Api, instance_id: str) -> bytes:
    resp = requests.get(f"{api.url}/v2/envs/{instance_id}/snapshot", timeout=30)
    api.contract.check(resp)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/octet-stream"
    return resp.content


@pytest.mark.parametrize("env_id", ["CartPole-v1", DICT_ENV])
def test_a_restored_snapshot_follows_the_same_trajectory_on_any_worker(farm: Server, env_id: str) -> None:
    with RemoteEnv(farm.url, env_id, labels={"run": "snap"}) as original:
        original.reset(seed=3)
        _trajectory(original, [0, 1, 0, 1])
        blob = original.snapshot()
        restored = [RemoteEnv(farm.url, env_id, snapshot=blob, ttl=60) for _ in range(3)]
        try:
            info = restored[0]._remote.info()  # type: ignore[attr-defined]
            assert info["labels"] == {"run": "snap"} and info["ttl"] == 60 and info["seq"] == 0
            actions = [i % 2 for i in range(30)]
            want = _trajectory(original, actions)
            for env in restored:
                _assert_bit_identical(_trajectory(env, actions), want)
        finally:
            for env in restored:
                env.close()


def test_a_snapshot_restores_on_every_worker(api: Api) -> None:
    """Idempotency keys chosen to hash to each worker: whichever worker restores the blob opens it."""
    blob = _snapshot_of(api, api.create())
    data = msgspec.msgpack.encode({"env_id": "CartPole-v1", "snapshot": blob})
    for slot in (0, 1):
        key = next(k for k in (str(uuid.uuid4()) for _ in range(100)) if idempotency.slot_of(k, [0, 1]) == slot)
        headers = {"Content-Type": "application/msgpack", "Idempotency-Key": key}
        resp, info = api.call("POST", "/v2/envs", data=data, headers=headers)
        assert resp.status_code == 201 and info["owner"]["worker"] == slot


def test_a_vector_snapshot_restores_every_sub_env(farm: Server) -> None:
    with RemoteVectorEnv(farm.url, "CartPole-v1", 3) as original:
        original.reset(seed=9)
        original.step(np.array([1, 0, 1]))
        blob = original.snapshot()
        with RemoteVectorEnv(farm.url, "CartPole-v1", 3, snapshot=blob) as restored:
            actions = [np.array(a) for a in np.random.default_rng(2).integers(0, 2, (30, 3))]
            _assert_bit_identical(_trajectory(restored, actions), _trajectory(original, actions))
        with pytest.raises(RemoteError) as wrong:
            RemoteVectorEnv(farm.url, "CartPole-v1", 4, snapshot=blob)
        assert wrong.value.status == 422 and wrong.value.details["field"] == "num_envs"


def test_a_tampered_or_foreign_blob_is_422_and_never_unpickled(api: Api, tmp_path: Path) -> None:
    blob = _snapshot_of(api, api.create())
    tampered = bytearray(blob)
    tampered[-5] ^= 0x01
    # A pickle that would leave a file behind if it were ever loaded, sealed with another farm's key.
    marker = tmp_path / "unpickled"
    trap = EnvState("CartPole-v1", _Trap(str(marker)), None, None, False, None, False, {})
    forged = Sealer(b"another-farm-key-" + b"x" * 32, 1 << 20).seal(trap)
    for bad in (bytes(tampered), forged, b"not a snapshot", blob[:40]):
        for media_type in (JSON, "application/msgpack"):
            body = {"env_id": "CartPole-v1", "snapshot": bad}
            data = (msgspec.json if media_type == JSON else msgspec.msgpack).encode(body)
            resp, _ = api.call("POST", "/v2/envs", data=data, headers={"Content-Type": media_type})
            expect_error(resp, 422, "invalid_snapshot", "snapshot")
    assert not marker.exists(), "a blob the farm did not sign must never be unpickled"
    typed = {"Content-Type": JSON}  # a body without a type is a 415 (what a web page may send unasked)
    data = msgspec.json.encode({"env_id": "Acrobot-v1", "snapshot": blob})
    expect_error(api.call("POST", "/v2/envs", data=data, headers=typed)[0], 422, "invalid_value", "env_id")
    data = msgspec.json.encode({"env_id": "CartPole-v1", "snapshot": blob, "kwargs": {"render_mode": "ansi"}})
    expect_error(api.call("POST", "/v2/envs", data=data, headers=typed)[0], 422, "invalid_value", "kwargs")
    data = msgspec.json.encode({"env_id": "CartPole-v1", "snapshot": blob})
    resp, restored = api.call("POST", "/v2/envs", data=data, headers=typed)
    assert resp.status_code == 201 and restored["env_id"] == "CartPole-v1"


class _Trap:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


# --- leases ---


@pytest.fixture(scope="module")
def short_ttl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("lease"), workers=2, env_ttl_seconds=1.5, reaper_interval_seconds=0.1)
    yield srv
    srv.stop()


def test_a_client_keeps_its_env_alive_through_a_long_pause(short_ttl: Server) -> None:
    leased = RemoteEnv(short_ttl.url, "CartPole-v1")
    unleased = RemoteEnv(short_ttl.url, "CartPole-v1", keepalive=False)
    vec = RemoteVectorEnv(short_ttl.url, "CartPole-v1", 2)
    try:
        assert leased._lease is not None and leased._lease.thread.daemon  # never keeps the process alive
        leased.reset(seed=0)
        vec.reset(seed=0)
        time.sleep(4)  # more than twice the TTL: a learner updating its model
        leased.step(0)
        vec.step(np.array([0, 1]))
        with pytest.raises(RemoteError) as reaped:
            unleased.reset(seed=0)
        assert reaped.value.status == 404
    finally:
        for env in (leased, unleased, vec):
            env.close()
    assert leased._lease is not None
    leased._lease.thread.join(5)
    assert not leased._lease.thread.is_alive(), "close() stops the keepalives"


def test_a_dropped_client_lets_its_lease_end_and_the_env_expire(short_ttl: Server) -> None:
    env = RemoteEnv(short_ttl.url, "CartPole-v1")
    instance_id, lease = env.instance_id, env._lease
    assert lease is not None
    del env
    gc.collect()
    lease.thread.join(5)
    assert not lease.thread.is_alive(), "the lease holds only a weak reference to the env"
    time.sleep(2.5)
    assert requests.get(f"{short_ttl.url}/v2/envs/{instance_id}", timeout=30).status_code == 404


def test_a_keyed_create_whose_worker_is_full_is_made_by_a_sibling_and_resends_find_it(make_server: Any) -> None:
    srv = make_server(workers=2, max_envs_per_worker=1, max_envs=2)

    def keyed(key: str) -> requests.Response:
        return requests.post(
            f"{srv.url}/v2/envs", json={"env_id": "CartPole-v1"}, headers={"Idempotency-Key": key}, timeout=30
        )

    first, second = (
        next(k for k in (str(uuid.uuid4()) for _ in range(100)) if idempotency.slot_of(k, [0, 1]) == 0)
        for _ in range(2)
    )
    assert keyed(first).json()["owner"]["worker"] == 0  # worker 0 is now full
    made = keyed(second)
    assert made.status_code == 201 and made.json()["owner"]["worker"] == 1, "passed on to the worker with room"
    for _ in range(4):
        again = keyed(second)
        assert again.status_code == 201 and again.json()["instance_id"] == made.json()["instance_id"]
        assert again.headers.get("Idempotent-Replayed") == "true"


def test_a_snapshot_restores_on_another_replica_with_the_farms_key_only(make_server: Any, farm: Server) -> None:
    """Another replica of the same farm (same key) restores it; a replica of another farm refuses it unopened."""
    same_farm = make_server(workers=1, node_id="replica-b", snapshot_key=SNAPSHOT_KEY)
    other_farm = make_server(workers=1, node_id="other-farm", snapshot_key="another-farm-" + "o" * 32)
    with RemoteEnv(farm.url, "CartPole-v1") as original:
        original.reset(seed=21)
        original.step(1)
        blob = original.snapshot()
        with RemoteEnv(same_farm.url, "CartPole-v1", snapshot=blob) as restored:
            assert restored.instance_id is not None and restored.instance_id.startswith("replica-b.")
            actions = [0, 1, 1, 0, 1, 0]
            _assert_bit_identical(_trajectory(restored, actions), _trajectory(original, actions))
        with pytest.raises(RemoteError) as foreign:
            RemoteEnv(other_farm.url, "CartPole-v1", snapshot=blob)
        assert (foreign.value.status, foreign.value.code) == (422, "invalid_snapshot")
