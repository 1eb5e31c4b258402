"""Envs outlive their replicas in compose: parked in the farm's store on SIGTERM, adopted under the same id.

A stack of its own (the session's image, another project) holds 200+ envs of five kinds (a vector env among them)
spread over two replicas, each the twin of a local `gymnasium.make` with the same seeds and actions. Then, in file
order: the replicas are recreated (new containers, new names), the farm is scaled from 2 to 1 while a learner steps
through the router, and the whole stack (router, store and key service too) is recreated. After each, every env
answers under its id and its trajectory stays bit-identical to its twin. Requests are retried as a client with a
retry window would: 503 `unavailable` (a move, or no replica yet) and connection errors, for a bounded time, after
Retry-After, always with the same body and `seq`, so that no step ever runs twice.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
import pytest

from conftest import Stack
from servers import Answer, free_port

pytestmark = pytest.mark.e2e

# (env id, how many, num_envs for a vector env): 202 envs, 232 sub-envs.
WORKLOAD = [("CartPole-v1", 60, None), ("Acrobot-v1", 40, None), ("Pendulum-v1", 40, None)]
WORKLOAD += [("FrozenLake-v1", 52, None), ("CartPole-v1", 10, 4)]
STEPS = 8  # per env, per round
RETRY_WINDOW = 90.0  # seconds a request is retried for (a drain, a start and the router's next look: well under)
THREADS = 16


@dataclass
class Retries:
    """What the retrying client met: the answers and errors it retried, by kind."""

    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1


def _once(port: int, method: str, path: str, body: Any) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Connection": "close", "Content-Type": "application/json"}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return Answer(resp.status, json.loads(raw) if raw else None, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def send(port: int, method: str, path: str, body: Any, retries: Retries) -> Answer:
    """One call, retried while the farm says "not now": 503 `unavailable` (moving, or no replica) after its
    Retry-After, and connection errors after a short pause, for at most RETRY_WINDOW seconds. The body (with its
    `seq`) is resent unchanged: a step that did run is answered again, never run twice."""
    deadline = time.monotonic() + RETRY_WINDOW
    while True:
        try:
            answer = _once(port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() > deadline:
                raise
            retries.add(type(exc).__name__)
            time.sleep(0.5)
            continue
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        if answer.status != 503 or not error or error.get("code") != "unavailable" or time.monotonic() > deadline:
            return answer
        retries.add(f"503 {error.get('details', {}).get('reason') or 'unavailable'}")
        time.sleep(min(float(answer.headers.get("retry-after", "1")), max(0.0, deadline - time.monotonic())))


def nd(value: Any) -> np.ndarray:
    """A /v2 JSON value as an array: `{"$nd": {dtype, shape, data}}` or a plain number or list."""
    if isinstance(value, dict) and "$nd" in value:
        spec = value["$nd"]
        return np.asarray(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
    return np.asarray(value)


def same(remote: np.ndarray, local: Any) -> bool:
    """Bit-identical: the same dtype kind, shape and bytes once both are in the remote's dtype."""
    local = np.asarray(local)
    return remote.dtype.kind == local.dtype.kind and remote.shape == local.shape and np.array_equal(remote, local)


@dataclass
class Twin:
    """One env on the farm (/v2, every reset and step sequenced) and its local twin with the same seeds."""

    env_id: str
    seed: int
    num_envs: int | None = None
    instance_id: str = ""
    local: Any = None
    seq: int = 0
    steps: int = 0
    problems: list[str] = field(default_factory=list)

    def create(self, port: int, retries: Retries) -> None:
        body: dict[str, Any] = {"env_id": self.env_id, "ttl": 3600}
        if self.num_envs:
            body["num_envs"] = self.num_envs
            self.local = gymnasium.make_vec(self.env_id, self.num_envs, vectorization_mode="sync")
        else:
            self.local = gymnasium.make(self.env_id)
        answer = send(port, "POST", "/v2/envs", body, retries)
        assert answer.status == 201, f"create {self.env_id}: {answer.status} {answer.body}"
        self.instance_id = answer.body["instance_id"]
        self.local.action_space.seed(self.seed)
        self.seq += 1
        answer = send(port, "POST", f"/v2/envs/{self.instance_id}/reset", {"seed": self.seed, "seq": self.seq}, retries)
        obs, _ = self.local.reset(seed=self.seed)
        self._check("reset", answer, obs)

    def step(self, port: int, retries: Retries, count: int) -> None:
        for _ in range(count):
            if self.problems:
                return
            action = self.local.action_space.sample()
            self.seq += 1
            body = {"action": action.tolist() if isinstance(action, np.ndarray) else int(action), "seq": self.seq}
            answer = send(port, "POST", f"/v2/envs/{self.instance_id}/step", body, retries)
            obs, reward, terminated, truncated, _ = self.local.step(action)
            if not self._check(f"step {self.steps}", answer, obs):
                return
            got = [nd(answer.body[k]) for k in ("reward", "terminated", "truncated")]
            # Rewards as float64 (FrozenLake's local reward is an int; the server's answer a float, as the API says).
            rewards_match = np.array_equal(got[0].astype(np.float64), np.asarray(reward, dtype=np.float64))
            if not (rewards_match and same(got[1], terminated) and same(got[2], truncated)):
                self.problems.append(f"step {self.steps}: {got} != {(reward, terminated, truncated)}")
            self.steps += 1
            if not self.num_envs and (terminated or truncated):  # a vector env resets itself (next_step)
                self.seq += 1
                answer = send(port, "POST", f"/v2/envs/{self.instance_id}/reset", {"seq": self.seq}, retries)
                self._check("reset", answer, self.local.reset()[0])

    def _check(self, where: str, answer: Answer, obs: Any) -> bool:
        if answer.status != 200:
            self.problems.append(f"{where}: {answer.status} {answer.body}")
            return False
        if answer.body.get("seq") != self.seq:
            self.problems.append(f"{where}: seq {answer.body.get('seq')}, sent {self.seq}")
        remote = nd(answer.body["observation"])
        if not same(remote, np.asarray(obs).astype(remote.dtype) if remote.dtype.kind == "f" else obs):
            self.problems.append(f"{where}: remote {remote!r} != local {obs!r}")
            return False
        return True


@dataclass
class MovesFarm:
    stack: Stack
    twins: list[Twin]
    retries: Retries = field(default_factory=Retries)

    @property
    def port(self) -> int:
        return self.stack.router_port

    def measure(self, what: str, started: float) -> None:
        self.stack.measured[f"moves: {what}"] = f"{time.monotonic() - started:.1f} s"

    def nodes(self) -> set[str]:
        """The running replicas' node names."""
        return {c.attrs["Config"]["Hostname"] for c in self.stack.containers("gymserve")}

    def wait_router_knows(self, nodes: set[str], timeout: float = 60) -> None:
        """Until the router's DNS gives exactly these replicas (HAProxy resolves the service name every second and
        health-checks each address every second): from then on the hash that places ids of gone replicas is the one
        that stays."""
        deadline = time.monotonic() + timeout
        script = "getent ahostsv4 gymserve | cut -d' ' -f1; echo --; for n in \"$@\"; do getent hosts $n; done"
        seen = ""
        while time.monotonic() < deadline:
            routers = self.stack.containers("router")
            if routers:
                seen = routers[0].exec_run(["sh", "-c", script, "sh", *sorted(nodes)]).output.decode()
                service, _, named = seen.partition("--")
                by_name = {line.split()[1]: line.split()[0] for line in named.splitlines() if line.strip()}
                if set(by_name) == nodes and set(service.split()) == set(by_name.values()):
                    time.sleep(3.0)  # the resolvers' hold (1 s), then a health check (every 1 s) marks them up
                    return
            time.sleep(0.5)
        raise AssertionError(f"the router resolves {seen!r}, replicas {sorted(nodes)}")

    def step_all(self, count: int = STEPS) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(lambda t: t.step(self.port, self.retries, count), self.twins))
        return time.monotonic() - started

    def assert_all_answer_as_their_twins(self, after: str) -> None:
        problems = {t.instance_id: t.problems[:2] for t in self.twins if t.problems}
        assert not problems, f"after {after}: {len(problems)} of {len(self.twins)} envs went wrong: " + str(
            dict(list(problems.items())[:5])
        )
        assert len({t.instance_id for t in self.twins}) == len(self.twins), "ids are unique"


@pytest.fixture(scope="module")
def farm(stack: Stack, request: pytest.FixtureRequest) -> Iterator[MovesFarm]:
    """A stack of its own on the session's image: 202 envs created, reset with their seeds and stepped."""
    router_port = int(os.environ.get("GYMSERVE_E2E_MOVES_ROUTER_PORT") or free_port({stack.router_port}))
    prometheus_port = free_port({router_port, stack.router_port, stack.prometheus_port})
    project = f"gymserve-e2e-moves-{os.getpid()}-{secrets.token_hex(3)}"
    env = dict(stack.env, GYMSERVE_ROUTER_PORT=str(router_port), PROMETHEUS_PORT=str(prometheus_port))
    st = Stack(project, env, router_port, prometheus_port, stack.docker, stack.image)
    try:
        st.compose("up", "--detach", "--wait", "--wait-timeout", "180", timeout=300)
        moves = MovesFarm(st, [])
        moves.wait_router_knows(moves.nodes())
        seeds = iter(range(10_000, 20_000, 7))
        moves.twins = [Twin(env_id, next(seeds), num) for env_id, n, num in WORKLOAD for _ in range(n)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(lambda t: t.create(router_port, moves.retries), moves.twins))
        seconds = moves.step_all()
        st.measured["moves: 202 envs created, reset and stepped"] = f"{time.monotonic() - started:.1f} s"
        st.measured["moves: one round of steps"] = f"{seconds:.1f} s"
        yield moves
    finally:
        st.down(bool(request.session.testsfailed))


def test_envs_spread_over_both_replicas_and_match_their_twins(farm: MovesFarm) -> None:
    farm.assert_all_answer_as_their_twins("the first round")
    placed = {t.instance_id.split(".")[0] for t in farm.twins}
    assert placed == farm.nodes(), f"envs landed on {placed}, replicas are {farm.nodes()}"
    vector = [t for t in farm.twins if t.num_envs]
    assert vector and all(t.steps == STEPS for t in vector)


def test_the_key_and_the_store_are_the_farms_own(farm: MovesFarm) -> None:
    """The keygen service wrote one key (0600, the image's user) that every replica reads from a read-only mount."""
    (keygen,) = farm.stack.containers("keygen", all=True)
    assert keygen.attrs["State"]["ExitCode"] == 0
    check = (
        "import os; p = os.environ['GYMSERVE_SNAPSHOT_KEY_FILE']; s = os.stat(p);"
        "print(s.st_uid, oct(s.st_mode & 0o777), len(open(p).read().strip()))"
    )
    for replica in farm.stack.containers("gymserve"):
        out = replica.exec_run(["python", "-c", check]).output.decode().split()
        assert out == ["10001", "0o600", "64"], out
        mounts = {m["Destination"]: m for m in replica.attrs["Mounts"]}
        assert mounts["/var/lib/gymserve/farm-key"]["RW"] is False
    (store,) = farm.stack.containers("store")
    # The store asks for its password (keygen wrote it too): a client on its network without it is refused.
    refused = store.exec_run(["valkey-cli", "config", "get", "appendonly"]).output.decode()
    assert "NOAUTH" in refused, refused
    with_password = 'valkey-cli -a "$(cat /var/lib/gymserve/farm-key/store-password)" --no-auth-warning'
    answer = store.exec_run(["sh", "-c", f"{with_password} config get appendonly"]).output.decode().split()
    assert answer == ["appendonly", "yes"], answer


def test_recreated_replicas_adopt_every_env_under_its_id(farm: MovesFarm) -> None:
    before = {c.name: c.attrs["Config"]["Hostname"] for c in farm.stack.containers("gymserve")}
    started = time.monotonic()
    farm.stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--force-recreate", "gymserve")
    farm.stack.measured["moves: replicas recreated (up --force-recreate gymserve)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    after = farm.nodes()
    assert len(after) == 2 and not after & set(before.values()), (before, after)
    farm.wait_router_knows(after)
    seconds = farm.step_all()
    farm.stack.measured["moves: a round of steps that adopts 202 envs"] = f"{seconds:.1f} s"
    farm.assert_all_answer_as_their_twins("the replicas were recreated")
    farm.step_all()
    farm.assert_all_answer_as_their_twins("a second round on the adopters")


def test_scale_down_moves_envs_while_a_learner_steps_through_the_router(farm: MovesFarm) -> None:
    learner = [t for t in farm.twins if t.env_id == "CartPole-v1" and not t.num_envs][:12]
    others = [t for t in farm.twins if t not in learner]
    stop = threading.Event()
    errors: list[BaseException] = []
    learner_steps = 0

    def learn() -> None:
        nonlocal learner_steps
        try:
            while not stop.is_set():
                for twin in learner:
                    twin.step(farm.port, farm.retries, 1)
                    learner_steps += 1
        except BaseException as exc:  # the learner must never see one
            errors.append(exc)

    thread = threading.Thread(target=learn, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        time.sleep(1.0)
        farm.stack.compose(
            "up", "--detach", "--wait", "--wait-timeout", "120", "--no-recreate", "--scale", "gymserve=1"
        )
        farm.stack.measured["moves: scale 2 -> 1 (up --scale gymserve=1)"] = f"{time.monotonic() - started:.1f} s"
        farm.wait_router_knows(farm.nodes())
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join(timeout=RETRY_WINDOW + 30)
    assert not errors, f"the learner saw {errors[0]!r}"
    assert learner_steps > 0
    farm.stack.measured["moves: learner during the scale-down"] = (
        f"{learner_steps} steps, retried {farm.retries.counts}"
    )
    farm.step_all()
    farm.assert_all_answer_as_their_twins("the scale-down (learner: 12 envs)")
    assert len(farm.nodes()) == 1
    assert len(others) + len(learner) == len(farm.twins) >= 200


def test_the_whole_stack_recreated_keeps_every_env(farm: MovesFarm) -> None:
    before = {c.id for c in farm.stack.containers()}
    started = time.monotonic()
    farm.stack.compose("up", "--detach", "--wait", "--wait-timeout", "180", "--force-recreate", timeout=400)
    farm.stack.measured["moves: the whole stack recreated (up --force-recreate)"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    now = farm.stack.containers()
    assert {c.labels["com.docker.compose.service"] for c in now} >= {"gymserve", "router", "store", "prometheus"}
    assert not {c.id for c in now} & before, "every container is a new one"
    nodes = farm.nodes()
    assert len(nodes) == 2, nodes  # GYMSERVE_REPLICAS again
    farm.wait_router_knows(nodes)
    farm.step_all()
    farm.assert_all_answer_as_their_twins("the whole stack was recreated")
    total = sum(t.steps for t in farm.twins)
    farm.stack.measured["moves: steps checked against local twins"] = f"{total}, retried {farm.retries.counts}"
