"""`docker compose up` end to end: the image, the sticky router over replicas, a stopped replica, Prometheus, teardown.

Every request goes through the router's published port on a fresh connection, so each one is routed
on its own. The tests run in file order on one stack: later ones build on the envs of earlier ones.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import pytest

from gymserve.client import RemoteEnv
from gymserve.routing import ids
from gymserve.settings import Settings

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.e2e

# Envs whose ids and dynamics are stable across Gymnasium 1.x: Box and Discrete actions and
# observations, and a Tuple observation (Blackjack).
WORKLOAD = ["CartPole-v1", "Acrobot-v1", "MountainCarContinuous-v0", "Pendulum-v1", "FrozenLake-v1", "Blackjack-v1"]
ENVS_PER_ID = 8
STEPS_PER_ENV = 40
ID_RE = re.compile(r"(?P<node>[0-9a-f]{12})\.[0-9]{1,3}-[0-9]{1,9}\.[0-9a-f]{32}")


def decode_observation(obs: dict[str, Any]) -> np.ndarray:
    """The seed's observation encoding: base64(zlib(little-endian bytes)) of the flattened observation."""
    raw = zlib.decompress(base64.b64decode(obs["data"]))
    return np.frombuffer(raw, dtype=np.dtype(obs["type"]).newbyteorder("<"))


def flatten(obs: Any) -> np.ndarray:
    """A local observation flattened the way /v1 sends it (Tuple and Dict parts concatenated)."""
    if isinstance(obs, tuple):
        return np.concatenate([flatten(part) for part in obs])
    if isinstance(obs, dict):
        return np.concatenate([flatten(obs[key]) for key in obs])
    return np.asarray(obs).ravel()


def jsonable(action: Any) -> Any:
    return action.tolist() if isinstance(action, np.ndarray) else int(action)


@dataclass
class Trajectory:
    """One env on the farm and its twin made locally with the same seed: every answer must match the twin."""

    env_id: str
    seed: int
    instance_id: str = ""
    local: Any = None
    steps: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.instance_id.split(".", 1)[0]

    def create(self, stack: Stack) -> None:
        answer = stack.call("POST", "/v1/envs/", {"env_id": self.env_id})
        assert answer.status == 200, f"create {self.env_id}: {answer.status} {answer.body}"
        self.instance_id = answer.body["instance_id"]
        assert ID_RE.fullmatch(self.instance_id), self.instance_id
        self.local = gymnasium.make(self.env_id)
        self.local.action_space.seed(self.seed)

    def reset(self, stack: Stack, seed: int | None) -> None:
        answer = stack.call("POST", f"/v1/envs/{self.instance_id}/reset/", {"seed": seed})
        obs, _ = self.local.reset(seed=seed)
        if answer.status != 200:
            self.mismatches.append(f"reset: {answer.status} {answer.body}")
            return
        self._compare("reset", decode_observation(answer.body["observation"]), flatten(obs))

    def step(self, stack: Stack, count: int) -> None:
        """`count` steps with actions from the seeded action space, resetting both sides at episode ends."""
        for _ in range(count):
            action = self.local.action_space.sample()
            answer = stack.call("POST", f"/v1/envs/{self.instance_id}/step/", {"action": jsonable(action)})
            if answer.status != 200:
                self.mismatches.append(f"step {self.steps}: {answer.status} {answer.body}")
                return
            # The sample itself: the server decodes the JSON list back to the same float32 values.
            obs, reward, terminated, truncated, _ = self.local.step(action)
            body = answer.body
            self._compare(f"step {self.steps}", decode_observation(body["observation"]), flatten(obs))
            if (body["reward"], body["terminated"], body["truncated"]) != (float(reward), terminated, truncated):
                self.mismatches.append(f"step {self.steps}: {body['reward'], body['terminated'], body['truncated']}")
            self.steps += 1
            if terminated or truncated:
                self.reset(stack, None)

    def _compare(self, where: str, remote: np.ndarray, local: np.ndarray) -> None:
        if remote.dtype.kind != local.dtype.kind or not np.array_equal(remote, local):
            self.mismatches.append(f"{where}: remote {remote!r} != local {local!r}")


@pytest.fixture(scope="module")
def farm(stack: Stack) -> list[Trajectory]:
    """Many envs, each created, reset and stepped with its own connection per request, eight at a time."""
    trajectories = [
        Trajectory(env_id, seed=1000 * i + k) for i, env_id in enumerate(WORKLOAD) for k in range(ENVS_PER_ID)
    ]

    def run(t: Trajectory) -> None:
        t.create(stack)
        t.reset(stack, t.seed)
        t.step(stack, STEPS_PER_ENV)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, trajectories))
    seconds = time.monotonic() - started
    requests = sum(2 + t.steps for t in trajectories)
    stack.measured["workload through the router"] = f"{requests} requests on fresh connections in {seconds:.1f} s"
    return trajectories


def _image_gymnasium(stack: Stack) -> str:
    out = stack.docker.containers.run(
        stack.image,
        entrypoint=["python", "-c", "import gymnasium, numpy; print(gymnasium.__version__, numpy.__version__)"],
        remove=True,
    )
    return out.decode().strip()


def _prometheus(stack: Stack, query: str) -> list[dict[str, Any]]:
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


# --- the image -------------------------------------------------------------------------------------


def test_image_is_labelled_non_root_and_checks_its_own_health(stack: Stack) -> None:
    image = stack.docker.images.get(stack.image)
    config = image.attrs["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == stack.env["GYMSERVE_VERSION"]
    assert labels["org.opencontainers.image.revision"] == stack.env["GYMSERVE_REVISION"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["gymserve"] and config["Cmd"] == ["serve"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Env"] and "PROMETHEUS_MULTIPROC_DIR=/tmp/gymserve-metrics" in config["Env"]
    for container in stack.replicas().values():
        container.reload()
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True


def test_stop_grace_period_is_derived_from_the_drain(stack: Stack) -> None:
    config = json.loads(stack.compose("config", "--format", "json").stdout)
    gymserve = config["services"]["gymserve"]
    assert gymserve["environment"]["GYMSERVE_DRAIN_SECONDS"] == str(stack.drain_seconds)
    assert gymserve["stop_grace_period"] == f"{stack.drain_seconds + 10}s"
    for container in stack.replicas().values():
        assert container.attrs["Config"]["StopTimeout"] == stack.drain_seconds + 10


def test_compose_file_is_valid_with_and_without_grafana(stack: Stack) -> None:
    stack.compose("config", "--quiet")
    stack.compose("--profile", "grafana", "config", "--quiet")


# --- sticky routing across replicas ----------------------------------------------------------------


def test_many_envs_step_through_the_router_on_every_replica(stack: Stack, farm: list[Trajectory]) -> None:
    problems = {t.instance_id or t.env_id: t.mismatches for t in farm if t.mismatches}
    assert not problems, (
        f"{len(problems)} of {len(farm)} envs went wrong (image has gymnasium, numpy {_image_gymnasium(stack)}; "
        f"tests have {gymnasium.__version__}, {np.__version__}): {dict(list(problems.items())[:5])}"
    )
    assert all(t.steps == STEPS_PER_ENV for t in farm)
    nodes = {t.node for t in farm}
    assert nodes == set(stack.replica_ids), f"envs landed on {nodes}, replicas are {stack.replica_ids}"


def test_python_client_works_through_the_router(stack: Stack) -> None:
    local = gymnasium.make("CartPole-v1")
    with RemoteEnv(stack.router_url, "CartPole-v1") as env:
        obs, _ = env.reset(seed=7)
        expected, _ = local.reset(seed=7)
        assert np.array_equal(obs, expected)
        for action in [0, 1, 1, 0, 1] * 4:
            obs, reward, terminated, truncated, _ = env.step(action)
            expected, local_reward, local_terminated, local_truncated, _ = local.step(action)
            assert np.array_equal(obs, expected) and (reward, terminated, truncated) == (
                local_reward,
                local_terminated,
                local_truncated,
            )


def test_the_step_stream_upgrades_through_the_router(stack: Stack) -> None:
    """The router passes the WebSocket upgrade to the worker that holds the env (its own port), and frames both ways."""
    local = gymnasium.make("CartPole-v1")
    with RemoteEnv(stack.router_url, "CartPole-v1", stream=True) as env:  # True: no HTTP fallback at the upgrade
        assert env._remote.stream is not None  # type: ignore[attr-defined]
        assert np.array_equal(env.reset(seed=9)[0], local.reset(seed=9)[0])
        for action in [1, 0, 1, 1, 0] * 3:
            assert np.array_equal(env.step(action)[0], local.step(action)[0])
        assert env._remote.stream is not None  # type: ignore[attr-defined]  # every step came over the stream


def _keyed_create(stack: Stack, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A create with an Idempotency-Key through the router, on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.router_port, timeout=30)
    try:
        headers = {"Connection": "close", "Content-Type": "application/json", "Idempotency-Key": key}
        conn.request("POST", "/v2/envs", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_key_reaches_the_same_env_through_the_router_and_keys_spread_over_replicas(stack: Stack) -> None:
    body = {"env_id": "CartPole-v1", "labels": {"run": "e2e-keys"}}
    answers = [_keyed_create(stack, "e2e-key-0", body) for _ in range(12)]
    assert {status for status, _ in answers} == {201}, answers[0]
    assert len({info["instance_id"] for _, info in answers}) == 1, "one env, however often the create is resent"
    status, error = _keyed_create(stack, "e2e-key-0", {**body, "ttl": 60})
    assert (status, error["error"]["code"]) == (422, "idempotency_mismatch")
    nodes = {_keyed_create(stack, f"e2e-key-{i}", body)[1]["instance_id"].split(".")[0] for i in range(1, 30)}
    assert nodes == set(stack.replica_ids), f"keyed creates landed on {nodes}, replicas are {stack.replica_ids}"
    deleted = sum(stack.call("DELETE", "/v2/envs?label=run=e2e-keys").body["deleted"] for _ in range(6))
    assert 0 < deleted <= 30


def test_a_fork_through_the_router_follows_its_original(stack: Stack) -> None:
    with RemoteEnv(stack.router_url, "CartPole-v1") as original:
        original.reset(seed=3)
        original.step(0)
        with original.fork() as fork:
            assert fork.instance_id is not None and original.instance_id is not None
            assert fork.instance_id.split(".")[0] == original.instance_id.split(".")[0], "the same replica"
            for action in [1, 0, 1, 1, 0, 0, 1, 0] * 2:
                theirs, mine = fork.step(action), original.step(action)
                assert theirs[0].tobytes() == mine[0].tobytes() and theirs[1:4] == mine[1:4]
                if mine[2] or mine[3]:
                    break


def test_the_ui_page_and_each_envs_frame_come_through_the_router(stack: Stack) -> None:
    """The image carries the page's files (package data); the router sends each frame to the env's replica."""
    for name, kind in (("", "text/html"), ("app.js", "text/javascript"), ("style.css", "text/css")):
        with urllib.request.urlopen(f"{stack.router_url}/ui/{name}", timeout=30) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind), name
    nodes: set[str] = set()
    for _ in range(20):  # fresh connections: the creates land on any replica, until two have answered
        if len(nodes) > 1:
            break
        created = stack.call("POST", "/v2/envs", {"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}})
        assert created.status == 201, created.body
        iid = created.body["instance_id"]
        nodes.add(ID_RE.fullmatch(iid)["node"])
        assert stack.call("POST", f"/v2/envs/{iid}/reset", {"seed": 1}).status == 200
        with urllib.request.urlopen(f"{stack.router_url}/v2/envs/{iid}/frame", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "image/png" and resp.read().startswith(b"\x89PNG")
        listed = stack.call("GET", f"/v2/envs/{iid}").body
        assert listed["render_mode"] == "rgb_array" and listed["last_episode"] is None
        assert stack.call("DELETE", f"/v2/envs/{iid}").status == 204
    assert len(nodes) > 1, f"all creates landed on {nodes}: the frames did not cross replicas"


# A replica's ports: the shared one, and its workers' own (compose's GYMSERVE_WORKER_PORT_BASE, every slot).
REPLICA_PORTS = {8000, *range(8100, 8100 + Settings.from_env({}).worker_slots)}


def _router_sockets_to_replicas(stack: Stack) -> int:
    """TCP sockets in the router's network namespace whose far end is a replica's port (the shared one or a
    worker's own), in any state (TIME_WAIT included: a connection closed within the last minute still counts)."""
    router = stack.containers("router")[0]
    out = router.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"]).output.decode()
    rows = [line.split() for line in out.splitlines() if line.strip() and not line.lstrip().startswith("sl")]
    return sum(1 for row in rows if int(row[2].rsplit(":", 1)[1], 16) in REPLICA_PORTS)


def test_steps_through_the_router_reach_the_worker_that_holds_the_env(stack: Stack) -> None:
    """Each worker listens on a port of its own and the router has a pool per worker: no step takes a hop between
    the workers of a replica (the answer of one that did carries X-Gymserve-Forwarded)."""
    held: dict[str, str] = {}  # "<node>.<slot>" -> an env there
    for _ in range(60):  # fresh connections: creates spread over every worker of every replica
        iid = stack.call("POST", "/v2/envs", {"env_id": "CartPole-v1"}).body["instance_id"]
        owner = ids.parse(iid)
        assert owner is not None, iid
        held.setdefault(f"{owner.node}.{owner.slot}", iid)
        if len(held) == 2 * len(stack.replica_ids):
            break
    assert len(held) == 2 * len(stack.replica_ids), f"60 creates reached only the workers {sorted(held)}"
    hops = 0
    for iid in held.values():
        assert stack.call("POST", f"/v2/envs/{iid}/reset", {}).status == 200
        for action in (0, 1) * 5:
            answer = stack.call("POST", f"/v2/envs/{iid}/step", {"action": action})
            assert answer.status == 200, answer.body
            hops += answer.headers.get("x-gymserve-forwarded") == "1"
    assert hops == 0, f"{hops} of {10 * len(held)} steps took a hop between workers"
    for iid in held.values():
        stack.call("DELETE", f"/v2/envs/{iid}")


def test_router_reuses_pooled_connections_to_the_replicas(stack: Stack) -> None:
    # Envs of this test's own (the farm's twins must stay in step), every request on a fresh client
    # connection, each routed on its own.
    before = _router_sockets_to_replicas(stack)
    ids = [stack.call("POST", "/v1/envs/", {"env_id": "CartPole-v1"}).body["instance_id"] for _ in range(8)]
    requests = len(ids)
    for iid in ids:
        assert stack.call("POST", f"/v1/envs/{iid}/reset/", {}).status == 200
        requests += 1
    for i in range(300):
        iid = ids[i % len(ids)]
        answer = stack.call("POST", f"/v1/envs/{iid}/step/", {"action": i % 2})
        assert answer.status == 200, answer.body
        requests += 1
        if answer.body["done"]:
            assert stack.call("POST", f"/v1/envs/{iid}/reset/", {}).status == 200
            requests += 1
    for iid in ids:
        assert stack.call("DELETE", f"/v1/envs/{iid}/").status in (200, 204)
        requests += 1
    after = _router_sockets_to_replicas(stack)
    stack.measured[f"router sockets to replicas for {requests} requests (pooled)"] = f"{before} before, {after} after"
    # Without pools each request opened (and left in TIME_WAIT) a connection of its own: 300 or more. Creates
    # and lists are pooled too, so even everything since the stack started (the farm's 48 creates and
    # 2,000 steps) left few.
    assert after - before < requests / 10, (before, after, requests)
    assert after < 64, (before, after, requests)


def test_batches_and_lists_through_the_router_reach_every_replica(stack: Stack) -> None:
    # Envs on both replicas (creates spread over them), each reset with its own seed.
    by_node: dict[str, list[str]] = {}
    for _ in range(40):
        iid = stack.call("POST", "/v2/envs", {"env_id": "CartPole-v1"}).body["instance_id"]
        by_node.setdefault(iid.split(".")[0], []).append(iid)
        if len(by_node) == len(stack.replica_ids) and all(len(v) >= 3 for v in by_node.values()):
            break
    assert set(by_node) == set(stack.replica_ids), by_node
    ids = [iid for group in by_node.values() for iid in group[:3]]
    for seed, iid in enumerate(ids):
        assert stack.call("POST", f"/v2/envs/{iid}/reset", {"seed": seed}).status == 200
    answer = stack.call("POST", "/v2/batch/step", {"items": [{"id": iid, "action": 1} for iid in ids]})
    assert answer.status == 200, answer.body
    for seed, result in enumerate(answer.body["results"]):
        assert "error" not in result, result
        local = gymnasium.make("CartPole-v1")
        local.reset(seed=seed)
        assert np.allclose(result["observation"]["$nd"]["data"], local.step(1)[0]), (seed, result)
    # An item whose node matches the pattern but is no replica (Prometheus shares the replicas' metrics
    # network): not reached, lost.
    prometheus = stack.containers("prometheus")[0].attrs["Config"]["Hostname"]
    forged = f"{prometheus}.0-1.{'0' * 32}"
    answer = stack.call("POST", "/v2/batch/step", {"items": [{"id": forged, "action": 0}, {"id": ids[0], "action": 0}]})
    assert answer.body["results"][0]["error"]["code"] == "instance_lost", answer.body
    assert "error" not in answer.body["results"][1]
    # A list through the router shows the envs of every replica, whichever replica it reaches.
    for _ in range(4):
        listed = {e["instance_id"] for e in stack.call("GET", "/v2/envs").body["envs"]}
        assert set(ids) <= listed
        assert set(stack.call("GET", "/v1/envs/").body["all_envs"]) >= set(ids)
    for iid in [i for group in by_node.values() for i in group]:
        stack.call("DELETE", f"/v2/envs/{iid}")


def test_router_is_not_an_open_proxy(stack: Stack) -> None:
    token = "0123456789abcdef" * 2
    prometheus = stack.containers("prometheus")[0].attrs["Config"]["Hostname"]
    router = stack.containers("router")[0].attrs["Config"]["Hostname"]
    # Not one of our ids: never resolved; the router sends it to the replica a hash of it picks, which answers.
    for path in [
        "/v1/envs/bogus/",
        "/v1/envs/evil.example:80/step/",
        f"/v1/envs/prometheus.0-1.{token}/",
        f"/v1/envs/gymserve.0-1.{token}/",
        f"/v1/envs/{next(iter(stack.replica_ids))}.0-1.{token}@evil.example/",
        f"/v1/envs/{next(iter(stack.replica_ids))}.0-1.{token[:-1]}/",
    ]:
        # Each with its route's method: the replica answers, and a step is a POST.
        method, body = ("POST", {"action": 0}) if path.endswith("/step/") else ("GET", None)
        answer = stack.call(method, path, body)
        assert (answer.status, answer.body["code"]) == (400, "unknown_instance"), path
        # /v2 in its own error shape and status (its env paths have no trailing slash).
        v2 = stack.call(method, path.replace("/v1/", "/v2/", 1).rstrip("/"), body)
        assert (v2.status, v2.body["error"]["code"]) == (404, "unknown_instance"), path
    # Well-formed ids whose node is not a running replica of this stack (Prometheus is not on the router's network;
    # the router's own name resolves, but nothing listens on a worker port there): the router sends them to the
    # replica a hash of the id picks, which finds no parked or moved env under them and says so in its own words.
    # The router never answers lost itself.
    for node in ["0123456789ab", prometheus, router]:
        answer = stack.call("POST", f"/v1/envs/{node}.0-1.{token}/step/", {"action": 0})
        assert (answer.status, answer.body["code"]) == (400, "unknown_instance"), node
        v2 = stack.call("GET", f"/v2/envs/{node}.0-1.{token}")
        assert (v2.status, v2.body["error"]["code"]) == (404, "unknown_instance"), node
        assert v2.body["error"]["details"] == {"instance_id": f"{node}.0-1.{token}"}
    metrics = stack.call("GET", "/metrics")
    assert (metrics.status, metrics.body["code"]) == (404, "not_found")


# --- Prometheus ------------------------------------------------------------------------------------


# Each replica's node name (the one in its instance ids), joined on `instance` from its own gymserve_build_info:
# compose's Prometheus finds replicas by address, so no target label carries it (the dashboard's queries do the same).
BY_NODE = " * on (instance) group_left (node) max by (instance, node) (gymserve_build_info)"


def test_prometheus_scrapes_every_replica_by_node_and_sees_the_steps(stack: Stack, farm: list[Trajectory]) -> None:
    # Prometheus finds the replicas through Docker's DNS (dns_sd_configs): targets are their addresses.
    replicas = len(stack.replica_ids)
    # Every step the test took on a replica, at least (a scrape may predate the last ones: wait for the next).
    taken = {node: float(sum(t.steps for t in farm if t.node == node)) for node in stack.replica_ids}
    query = f'sum by (node) (gymserve_steps_total{{job="gymserve"}}{BY_NODE})'
    deadline = time.monotonic() + 90
    while True:
        up = [r["value"][1] for r in _prometheus(stack, 'up{job="gymserve"}')]
        steps = {r["metric"].get("node"): float(r["value"][1]) for r in _prometheus(stack, query)}
        counted = set(steps) == set(taken) and all(steps[n] >= count for n, count in taken.items())
        if (up == ["1"] * replicas and counted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up == ["1"] * replicas, f"targets up {up}, replicas {sorted(stack.replica_ids)}"
    assert counted, f"gymserve_steps_total by node: {steps}; steps the test took: {taken}"
    assert not any("node" in r["metric"] for r in _prometheus(stack, 'up{job="gymserve"}'))
    # Live envs per worker slot of each node (the dashboard's placement panel).
    placement = f"sum by (node, slot) (gymserve_worker_envs{BY_NODE})"
    slots = {(r["metric"]["node"], r["metric"]["slot"]) for r in _prometheus(stack, placement)}
    assert {node for node, _ in slots} == set(stack.replica_ids), slots


# --- a replica that stops, and comes back ----------------------------------------------------------


def _step_when_moved(stack: Stack, t: Trajectory, deadline: float) -> None:
    """One step of `t`, resent (same body) while its env moves: 503 unavailable, never a lost or unknown answer."""
    action = t.local.action_space.sample()
    while True:
        answer = stack.call("POST", f"/v1/envs/{t.instance_id}/step/", {"action": jsonable(action)})
        if answer.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(float(answer.headers.get("retry-after", "1")))
    assert answer.status == 200, answer.body
    obs, reward, terminated, truncated, _ = t.local.step(action)
    t._compare(f"step {t.steps}", decode_observation(answer.body["observation"]), flatten(obs))
    if answer.body["reward"] != float(reward):
        t.mismatches.append(f"step {t.steps}: reward {answer.body['reward']} != {reward}")
    t.steps += 1
    if terminated or truncated:
        t.reset(stack, None)


def test_a_stopped_replicas_envs_move_to_the_others_under_their_ids(stack: Stack, farm: list[Trajectory]) -> None:
    """A replica that stops parks its envs in the store; the replica the router picks for them adopts each one,
    and its trajectory goes on as if nothing happened (the router no longer answers lost for a gone replica)."""
    replicas = stack.replicas()
    gone_node = farm[0].node
    gone = replicas[gone_node]
    gone_envs = [t for t in farm if t.node == gone_node]
    kept_envs = [t for t in farm if t.node != gone_node]
    assert gone_envs and kept_envs

    started = time.monotonic()
    gone.stop(timeout=stack.drain_seconds + 10)
    stack.measured[f"replica stop while holding envs (drain {stack.drain_seconds} s)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    started = time.monotonic()
    deadline = started + 60
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda t: _step_when_moved(stack, t, deadline), gone_envs))
    stack.measured[f"{len(gone_envs)} envs of a stopped replica adopted"] = f"{time.monotonic() - started:.1f} s"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda t: t.step(stack, 10), farm))
    problems = {t.instance_id: t.mismatches for t in farm if t.mismatches}
    assert not problems, problems
    # Creates go to the replicas that are left, without an error.
    for _ in range(10):
        answer = stack.call("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
        assert answer.status == 200, answer.body
        assert answer.body["instance_id"].split(".")[0] != gone_node
    # The stopped container is removed (a replica that comes back under the same name would take its ids back
    # from the router while another replica holds their envs); `up` makes a new one in its place.
    gone.remove()
    stack.compose("up", "--detach", "--wait", "--no-recreate", "gymserve")
    stack.replica_ids = {node: c.name for node, c in stack.replicas().items()}
    assert gone_node not in stack.replica_ids and len(stack.replica_ids) == len(replicas)


def test_a_new_replica_gets_a_pool_without_a_router_restart(stack: Stack) -> None:
    router = stack.containers("router")[0]
    started_at = router.attrs["State"]["StartedAt"]
    before = set(stack.replicas())
    stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", f"gymserve={len(before) + 1}", "gymserve")
    (node,) = set(stack.replicas()) - before
    started = time.monotonic()
    back = None
    # The router finds it through Docker's DNS (server-template) and its health check, with no restart: creates
    # spread over the replicas, and one lands on the new one.
    for seed in range(600):
        if time.monotonic() - started > 30:
            break
        t = Trajectory("CartPole-v1", seed=seed)
        t.create(stack)
        if t.node == node:
            back = t
            stack.measured["a new replica reached through the router"] = f"{time.monotonic() - started:.1f} s"
            break
        stack.call("DELETE", f"/v1/envs/{t.instance_id}/")
    assert back is not None, f"no create landed on the new replica {node}"
    back.reset(stack, back.seed)
    back.step(stack, 20)
    assert not back.mismatches, back.mismatches
    router.reload()
    assert router.attrs["State"]["StartedAt"] == started_at, "the router was restarted"


# --- teardown --------------------------------------------------------------------------------------


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    started = time.monotonic()
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", str(stack.drain_seconds + 10), timeout=180)
    stack.measured["stack down -v"] = f"{time.monotonic() - started:.1f} s"
    label = {"label": [f"com.docker.compose.project={stack.project}"]}
    assert stack.docker.containers.list(all=True, filters=label) == []
    assert stack.docker.networks.list(filters=label) == []
    assert stack.docker.volumes.list(filters=label) == []
