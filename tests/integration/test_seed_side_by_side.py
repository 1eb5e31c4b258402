"""The seed server and gymserve side by side: the same /v1 requests get the same answers, bar the seed's bugs.

The seed runs on Gymnasium 0.29.1 (its positional gym.make needs it), gymserve on 1.x. For the same seed both give
the same CartPole-v1 and FrozenLake-v1 trajectories and the same CartPole frames
(test_gymnasium_versions_agree_on_seeded_trajectories pins that premise), so observations are compared value for
value, not only by shape and dtype.
"""

from __future__ import annotations

import inspect
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import requests
from seed import (
    NO_BODY,
    V1Client,
    assert_error,
    assert_observation,
    decode_frame,
    decode_observation,
    ensure_seed_venv,
    seed_venv,
    skip_without_seed,
    start_seed,
)

from servers import Server, free_port

pytestmark = pytest.mark.integration
skip_without_seed()

F32_MAX = float(np.finfo(np.float32).max)
# Keys gymserve adds to the seed's answers: reset's info, step's done, and an error's code, details, fault, retryable.
ADDITIVE = {"info", "done", "code", "details", "fault", "retryable"}
TRAJECTORIES = [
    ("CartPole-v1", 42, [0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0]),
    ("FrozenLake-v1", 5, [2, 2, 1, 1, 1, 2, 0, 3, 1, 2, 2, 1]),
]


def seeded_trajectory(env_id: str, seed: int, actions: list[int]) -> list[Any]:
    """Observations, rewards and flags of a seeded episode; also run by the seed's venv, so self-contained."""
    import gymnasium
    import numpy

    env = gymnasium.make(env_id)
    out: list[Any] = [numpy.asarray(env.reset(seed=seed)[0]).tolist()]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append([numpy.asarray(obs).tolist(), float(reward), bool(terminated), bool(truncated)])
        if terminated or truncated:
            break
    return out


@dataclass(frozen=True)
class Both:
    """The seed and gymserve; `path` may hold `{id}`, filled with each side's instance id."""

    seed: V1Client
    ours: V1Client

    def call(
        self, method: str, path: str, body: Any = NO_BODY, *, raw: str | None = None, ids: tuple[str, str] = ("", "")
    ) -> tuple[requests.Response, requests.Response]:
        return (
            self.seed.call(method, path.format(id=ids[0]), body, raw=raw),
            self.ours.call(method, path.format(id=ids[1]), body, raw=raw),
        )

    def alike(self, method: str, path: str, body: Any = NO_BODY, *, ids: tuple[str, str] = ("", "")) -> tuple[Any, Any]:
        """Both JSON answers, after checking the same status and the same keys (gymserve may add keys)."""
        seed, ours = self.call(method, path, body, ids=ids)
        assert seed.status_code == ours.status_code, (seed.text[:300], ours.text[:300])
        assert set(seed.json()) <= set(ours.json()) <= set(seed.json()) | ADDITIVE, (seed.text[:300], ours.text[:300])
        return seed.json(), ours.json()

    def create(self, env_id: str, **fields: Any) -> Pair:
        return Pair(self, (self.seed.create(env_id, **fields), self.ours.create(env_id, **fields)))


@dataclass(frozen=True)
class Pair:
    """One env created alike on both servers."""

    both: Both
    ids: tuple[str, str]

    def call(self, method: str, route: str, body: Any = NO_BODY, **kw: Any) -> tuple[requests.Response, ...]:
        return self.both.call(method, "{id}/" + route, body, ids=self.ids, **kw)

    def alike(self, method: str, route: str, body: Any = NO_BODY) -> tuple[Any, Any]:
        return self.both.alike(method, "{id}/" + route, body, ids=self.ids)

    def same_observation(self, method: str, route: str, body: Any = NO_BODY) -> tuple[Any, Any]:
        seed, ours = self.alike(method, route, body)
        assert seed["observation"]["type"] == ours["observation"]["type"]
        np.testing.assert_array_equal(decode_observation(seed["observation"]), decode_observation(ours["observation"]))
        return seed, ours


@pytest.fixture(scope="module")
def seed_python() -> Path:
    return ensure_seed_venv(seed_venv())


@pytest.fixture(scope="module")
def seed_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seed_python: Path
) -> Iterator[V1Client]:
    seed = start_seed(Server, seed_python, free_port(), tmp_path_factory.mktemp("seed") / "seed.log")
    yield V1Client(seed.url)
    seed.stop(timeout=3)  # after an rgb render SDL swallows SIGTERM; Server.stop then kills it


@pytest.fixture(scope="module")
def both(seed_api: V1Client, server: Any) -> Both:
    return Both(seed_api, V1Client(server.url))


def test_gymnasium_versions_agree_on_seeded_trajectories(seed_python: Path) -> None:
    script = "\n".join(
        [
            "from __future__ import annotations",
            "import json, sys",
            "from typing import Any",
            inspect.getsource(seeded_trajectory),
            "print(json.dumps([seeded_trajectory(*case) for case in json.loads(sys.argv[1])]))",
        ]
    )
    cmd = [str(seed_python), "-c", script, json.dumps(TRAJECTORIES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [seeded_trajectory(*case) for case in TRAJECTORIES]


# ---------------------------------------------------------------- the same answers


@pytest.mark.parametrize(("env_id", "seed", "actions"), TRAJECTORIES, ids=[t[0] for t in TRAJECTORIES])
def test_seeded_trajectory_is_the_same_on_both(both: Both, env_id: str, seed: int, actions: list[int]) -> None:
    pair = both.create(env_id)
    pair.same_observation("POST", "reset/", {"seed": seed})
    for action in actions:
        theirs, ours = pair.same_observation("POST", "step/", {"action": action})
        assert {k: theirs[k] for k in ("reward", "terminated", "truncated")} == {
            k: ours[k] for k in ("reward", "terminated", "truncated")
        }
        assert ours["info"] == pytest.approx(theirs["info"])  # FrozenLake's "prob" differs in the last bit
        if ours["done"]:
            break


def test_create_get_id_list_and_delete_answer_alike(both: Both) -> None:
    pair = both.create("FrozenLake-v1")
    seed, ours = pair.alike("GET", "")
    assert seed == ours == {"id": "FrozenLake-v1"}
    seed, ours = both.alike("GET", "")
    assert seed["all_envs"][pair.ids[0]] == ours["all_envs"][pair.ids[1]] == "FrozenLake-v1"
    deleted = pair.call("DELETE", "")
    assert [(r.status_code, r.content) for r in deleted] == [(200, b"")] * 2
    for method, route in (("DELETE", ""), ("GET", ""), ("POST", "reset/")):
        seed, ours = pair.alike(method, route, {})
        assert seed["message"].replace(pair.ids[0], "<id>") == ours["message"].replace(pair.ids[1], "<id>")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "deadbeef/", NO_BODY),
        ("POST", "deadbeef/reset/", {"seed": 1}),
        ("POST", "deadbeef/step/", {"action": 0}),
        ("GET", "deadbeef/action_space/", NO_BODY),
        ("GET", "deadbeef/observation_space/", NO_BODY),
        ("DELETE", "deadbeef/", NO_BODY),
        ("POST", "", {"kwargs": {}}),
    ],
)
def test_client_errors_answer_alike(both: Both, method: str, path: str, body: Any) -> None:
    seed, ours = both.alike(method, path, body)
    assert seed["message"] == ours["message"]


@pytest.mark.parametrize("route", ["step/", "episodes/"])
def test_missing_parameter_answers_alike(both: Both, route: str) -> None:
    pair = both.create("FrozenLake-v1")
    pair.alike("POST", "reset/", {"seed": 0})
    seed, ours = pair.alike("POST", route, {"seed": 0})
    assert seed["message"] == ours["message"]


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CartPole-v1"])
def test_space_descriptions_answer_alike(both: Both, env_id: str) -> None:
    pair = both.create(env_id)
    for space in ("action_space/", "observation_space/"):
        seed, ours = pair.alike("GET", space)
        if seed["info"]["name"] == "Box":
            # Gymnasium 0.29.1 bounds CartPole's velocities by float32's max, 1.x by infinity (sent as float64's max).
            low, high = (np.array(ours["info"][k]) for k in ("low", "high"))
            huge = np.abs(high) >= F32_MAX
            assert huge.any() and np.array_equal(huge, np.abs(np.array(seed["info"]["high"])) >= F32_MAX)
            seed["info"]["low"] = np.where(huge, low, seed["info"]["low"]).tolist()
            seed["info"]["high"] = np.where(huge, high, seed["info"]["high"]).tolist()
        assert seed["info"] == {k: ours["info"][k] for k in seed["info"]}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("action_space/contains/3/", NO_BODY),
        ("action_space/contains/4/", NO_BODY),
        ("observation_space/contains/", {"name": "Discrete", "n": 16}),
        ("observation_space/contains/", {"name": "Discrete", "n": 15}),
    ],
)
def test_space_membership_answers_alike(both: Both, route: str, body: Any) -> None:
    seed, ours = both.create("FrozenLake-v1").alike("POST" if body is not NO_BODY else "GET", route, body)
    assert seed == ours


def test_action_sample_answers_alike(both: Both) -> None:
    seed, ours = both.create("FrozenLake-v1").alike("GET", "action_space/sample/")
    assert {type(seed["action"]), type(ours["action"])} == {int} and 0 <= ours["action"] < 4


def test_transitions_answer_alike(both: Both) -> None:
    seed, ours = both.create("FrozenLake-v1").alike("GET", "transitions/")
    # The same table; 1.x computes the slip probabilities one way, 0.29.1 another, equal to the last bit.
    assert ours["transitions"].keys() == seed["transitions"].keys()
    for state, row in seed["transitions"].items():
        assert ours["transitions"][state].keys() == row.keys()
        for action, moves in row.items():
            np.testing.assert_allclose(np.array(ours["transitions"][state][action], dtype=float), moves, rtol=1e-15)


@pytest.mark.parametrize(
    ("env_id", "render_mode"), [("FrozenLake-v1", "ansi"), ("CartPole-v1", "rgb_array")], ids=["ansi", "rgb"]
)
def test_render_answers_alike(both: Both, env_id: str, render_mode: str) -> None:
    pair = both.create(env_id, kwargs={"render_mode": render_mode})
    pair.same_observation("POST", "reset/", {"seed": 3})
    pair.same_observation("POST", "step/", {"action": 1})
    seed, ours = pair.alike("GET", "render/")
    if render_mode == "ansi":
        assert seed == ours
    else:
        assert (seed["render_frame"]["rows"], seed["render_frame"]["cols"]) == (400, 600)
        np.testing.assert_array_equal(decode_frame(seed["render_frame"]), decode_frame(ours["render_frame"]))


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CartPole-v1"])
def test_episodes_answer_alike(both: Both, env_id: str) -> None:
    """Random actions differ, so compare the shape of the answer and the seeded start of the first episode.

    (The seed re-seeds every episode with the same seed; gymserve seeds the first one only.)
    """
    seed, ours = both.create(env_id).alike("POST", "episodes/", {"count": 2, "seed": 3})
    assert len(seed["episodes"]) == len(ours["episodes"]) == 2
    for answer in (seed, ours):
        assert all(sorted(entry) == ["r", "s"] for episode in answer["episodes"] for entry in episode)
    assert seed["episodes"][0][0]["r"] == ours["episodes"][0][0]["r"] == 0.0
    start = [decode_observation(answer["episodes"][0][0]["s"]) for answer in (seed, ours)]
    np.testing.assert_array_equal(*start)


# ---------------------------------------------------------------- the seed's bugs and gymserve's fixes


def test_blackjack_seed_fails_the_reset_and_cuts_the_tuple_ours_keeps_all_three_values(both: Both) -> None:
    pair = both.create("Blackjack-v1")
    local = gym.make("Blackjack-v1")
    seed, ours = pair.call("POST", "reset/", {"seed": 1})
    assert (seed.status_code, ours.status_code) == (500, 200)  # the seed cannot encode a tuple observation
    assert_observation(ours.json()["observation"], local.reset(seed=1)[0])
    seed, ours = pair.alike("POST", "step/", {"action": 0})
    obs = local.step(0)[0]
    np.testing.assert_array_equal(decode_observation(seed["observation"]), [obs[0]])  # the seed's bug: 1 of 3
    assert_observation(ours["observation"], obs)


def test_taxi_info_with_a_numpy_array_seed_fails_ours_sends_a_list(both: Both) -> None:
    # Gymnasium 0.29.1 has only Taxi-v3, 1.x only Taxi-v4: the same env, its info holds a numpy action_mask.
    seed = both.seed.create("Taxi-v3")
    ours = both.ours.create("Taxi-v4")
    local = gym.make("Taxi-v4")
    local.reset(seed=1)
    both.alike("POST", "{id}/reset/", {"seed": 1}, ids=(seed, ours))
    seed_step, ours_step = both.call("POST", "{id}/step/", {"action": 0}, ids=(seed, ours))
    assert (seed_step.status_code, ours_step.status_code) == (500, 200)
    assert ours_step.json()["info"] == {"prob": 1.0, "action_mask": local.step(0)[4]["action_mask"].tolist()}


def test_episodes_seed_runs_past_truncation_ours_stops(both: Both) -> None:
    # CartPole falls within a few dozen random steps, so the seed stops there; an env that never terminates
    # (Pendulum) would loop the seed forever and is sent to gymserve alone.
    pair = both.create("CartPole-v1", max_episode_steps=3)
    seed, ours = pair.alike("POST", "episodes/", {"count": 1, "seed": 1})
    assert len(seed["episodes"][0]) > 4
    assert len(ours["episodes"][0]) == 4
    pendulum = both.ours.create("Pendulum-v1")
    episodes = both.ours.ok("POST", f"{pendulum}/episodes/", {"count": 2})["episodes"]
    assert [len(episode) for episode in episodes] == [201, 201]


@dataclass(frozen=True)
class Divergence:
    """One request on fresh envs: the seed's answer (its bug) and gymserve's answer instead."""

    env_id: str | None  # None: the path names no env
    method: str
    route: str
    body: Any
    seed: tuple[Any, ...]  # (status, words in the answer's text...)
    ours: tuple[Any, ...]  # (status, words in the message...) for an error; (200, body) for an answer
    raw: str | None = None
    reset: bool = True


def lake(method: str, route: str, body: Any, seed: tuple[Any, ...], ours: tuple[Any, ...], **kw: Any) -> Divergence:
    return Divergence("FrozenLake-v1", method, route, body, seed, ours, **kw)


CRASH = (500, "Internal Server Error")
DIVERGENCES = [
    pytest.param(lake("POST", "step/", {"action": 0}, CRASH, (400, "reset"), reset=False), id="step-before-reset"),
    pytest.param(lake("POST", "step/", {"action": "x"}, CRASH, (400, "action")), id="action-a-string"),
    pytest.param(lake("POST", "step/", {"action": 99}, CRASH, (400, "action")), id="action-out-of-range"),
    pytest.param(lake("POST", "step/", None, CRASH, (400, "JSON object"), raw="[1]"), id="body-a-list"),
    pytest.param(lake("POST", "step/", None, (400, "Bad Request"), (400, "json"), raw="no json"), id="body-not-json"),
    pytest.param(lake("GET", "action_space/contains/x/", NO_BODY, CRASH, (200, {"member": False})), id="contains-text"),
    pytest.param(
        lake("POST", "observation_space/contains/", {"nope": 1}, CRASH, (200, {"member": False})),
        id="contains-unknown-property",
    ),
    pytest.param(lake("POST", "episodes/", {"count": -1}, (200, '"episodes":[]'), (400, "count")), id="count-negative"),
    pytest.param(
        Divergence(None, "POST", "", {"env_id": "CartPole-v1", "kwargs": {"foo": 1}}, CRASH, (400, "foo")),
        id="kwargs-unknown",
    ),
    # The seed calls a well-formed id it does not know "malformed"; gymserve keeps those words for seed
    # clients and says what is really wrong, with the id the client probably meant.
    pytest.param(
        Divergence(
            None,
            "POST",
            "",
            {"env_id": "Nope-v0"},
            (400, "malformed environment ID 'Nope-v0'"),
            (400, "malformed environment ID 'Nope-v0'", "no env of that id is registered"),
        ),
        id="env-id-unknown",
    ),
    pytest.param(
        Divergence(
            None,
            "POST",
            "",
            {"env_id": "Cartpole-v1"},
            (400, "malformed environment ID 'Cartpole-v1'"),
            (400, "malformed environment ID 'Cartpole-v1'", "did you mean CartPole-v1?"),
        ),
        id="env-id-case-typo",
    ),
    pytest.param(
        # Never installed here (MuJoCo, Box2D and ale-py are): Gymnasium's phys2d envs need jax. The seed crashes.
        Divergence(None, "POST", "", {"env_id": "phys2d/CartPole-v1"}, (500, "Internal Server Error"), (400, "jax")),
        id="missing-dependency",
    ),
]


@pytest.mark.parametrize("case", DIVERGENCES)
def test_seed_bug_and_gymserve_fix_side_by_side(both: Both, case: Divergence) -> None:
    path, ids = case.route, ("", "")
    if case.env_id is not None:
        pair = both.create(case.env_id)
        if case.reset:
            pair.alike("POST", "reset/", {"seed": 0})
        path, ids = "{id}/" + case.route, pair.ids
    seed, ours = both.call(case.method, path, case.body, raw=case.raw, ids=ids)
    assert seed.status_code == case.seed[0], seed.text[:300]
    assert all(word in seed.text for word in case.seed[1:]), seed.text[:300]
    status, *expected = case.ours
    if status == 200:
        assert (ours.status_code, ours.json()) == (200, expected[0])
    else:
        assert_error(ours, status, *expected)
