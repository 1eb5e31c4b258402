"""/v1 as seed clients use it: every route over raw HTTP on a real gymserve, values checked against local envs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import Autoreset
from seed import NO_BODY, V1Client, assert_error, assert_observation, decode_frame, decode_observation

pytestmark = pytest.mark.integration

F64 = np.finfo(np.float64)
UNKNOWN_ID = "deadbeef"  # an id of the seed's shape (8 hex digits)
MISSING = "A required request parameter '{}' was not provided"


def jsonable(value: Any) -> Any:
    """A local env's value (info, transition table) as it looks after a JSON round trip."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist()))


class Twin:
    """An env on the server and the same env made locally; every answer is checked against the local env's."""

    def __init__(
        self,
        api: V1Client,
        env_id: str,
        *,
        max_episode_steps: int | None = None,
        auto_reset: bool = False,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.api = api
        local = gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
        self.local = Autoreset(local) if auto_reset else local
        fields = {"max_episode_steps": max_episode_steps, "auto_reset": auto_reset or None, "kwargs": kwargs}
        self.instance_id = api.create(env_id, **{k: v for k, v in fields.items() if v is not None})
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        answer = self.api.reset(self.instance_id, seed=seed, options=options)
        obs, info = self.local.reset(seed=seed, options=options)
        assert_observation(answer["observation"], obs)
        assert answer["info"] == jsonable(info)
        return answer

    def step(self, action: Any) -> Any:
        answer = self.api.step(self.instance_id, action)
        native = np.asarray(action, dtype=self.local.action_space.dtype) if isinstance(action, list) else action
        obs, reward, terminated, truncated, info = self.local.step(native)
        self.steps += 1
        assert_observation(answer["observation"], obs)
        got = {k: answer[k] for k in ("reward", "terminated", "truncated", "done", "info")}
        assert got == {
            "reward": float(reward),
            "terminated": terminated,
            "truncated": truncated,
            "done": terminated or truncated,
            "info": jsonable(info),
        }
        return answer


class Bystander(Twin):
    """Another client's CartPole, created before any bad request: it must go on stepping with its state intact."""

    def still_steps(self) -> None:
        if self.step(self.steps % 2)["done"]:
            self.reset(seed=self.steps)


@pytest.fixture(scope="module")
def api(server: Any) -> V1Client:
    return V1Client(server.url)


@pytest.fixture(scope="module", autouse=True)
def bystander(api: V1Client) -> Bystander:
    other = Bystander(api, "CartPole-v1")
    other.reset(seed=0)
    return other


# ---------------------------------------------------------------- create, list, get id


def test_create_answers_an_instance_id_that_list_and_get_id_report(api: V1Client, bystander: Bystander) -> None:
    created = api.ok("POST", "", {"env_id": "FrozenLake-v1"})
    assert list(created) == ["instance_id"]
    instance_id = created["instance_id"]
    assert api.ok("GET", f"{instance_id}/") == {"id": "FrozenLake-v1"}
    all_envs = api.ok("GET")["all_envs"]
    assert all_envs[instance_id] == "FrozenLake-v1"
    assert all_envs[bystander.instance_id] == "CartPole-v1"


def test_create_with_max_episode_steps_truncates_the_episode(api: V1Client) -> None:
    env = Twin(api, "CartPole-v1", max_episode_steps=3)
    env.reset(seed=0)
    answers = [env.step(a) for a in (0, 1, 0)]
    assert [(a["terminated"], a["truncated"], a["done"]) for a in answers][-1] == (False, True, True)


def test_create_with_auto_reset_starts_the_next_episode_by_itself(api: V1Client) -> None:
    env = Twin(api, "CartPole-v1", max_episode_steps=2, auto_reset=True)
    env.reset(seed=0)
    answers = [env.step(a) for a in (0, 1, 0, 1, 0)]
    assert [a["truncated"] for a in answers] == [False, True, False, False, True]
    assert answers[2]["reward"] == 0.0  # the step after the end only resets (gymnasium's next-step autoreset)


@pytest.mark.parametrize("disable_env_checker", [True, False])
def test_create_accepts_disable_env_checker(api: V1Client, disable_env_checker: bool) -> None:
    instance_id = api.create("CartPole-v1", disable_env_checker=disable_env_checker)
    api.reset(instance_id, seed=1)
    assert api.step(instance_id, 1)["done"] is False


def test_create_passes_kwargs_to_the_env(api: V1Client) -> None:
    env = Twin(api, "FrozenLake-v1", kwargs={"map_name": "8x8", "is_slippery": False})
    assert api.ok("GET", f"{env.instance_id}/observation_space/")["info"]["n"] == 64
    env.reset(seed=1)
    assert decode_observation(env.step(2)["observation"]).tolist() == [1]  # right, and no slipping


# ---------------------------------------------------------------- reset and step


@pytest.mark.parametrize(
    ("env_id", "dtype", "size", "seed", "actions"),
    [
        pytest.param("CartPole-v1", "float64", 4, 42, [0, 1, 1, 0, 0, 1, 1, 1, 0, 0], id="CartPole-float32-as-float64"),
        pytest.param("FrozenLake-v1", "int64", 1, 5, [2, 2, 1, 1, 1, 2, 0, 3], id="FrozenLake-int-as-int64"),
        pytest.param("Blackjack-v1", "int64", 3, 1, [1, 1, 0], id="Blackjack-tuple-whole-as-3-int64"),
        pytest.param("MountainCarContinuous-v0", "float64", 2, 3, [[0.5], [-1.0], [0.25]], id="MountainCarContinuous"),
    ],
)
def test_seeded_trajectory_decodes_to_the_local_envs_values(
    api: V1Client, env_id: str, dtype: str, size: int, seed: int, actions: list[Any]
) -> None:
    env = Twin(api, env_id)
    first = env.reset(seed=seed)["observation"]
    assert (first["type"], decode_observation(first).size) == (dtype, size)
    for action in actions:
        if env.step(action)["done"]:
            break


def test_reset_passes_options_to_the_env(api: V1Client) -> None:
    env = Twin(api, "CartPole-v1")
    answer = env.reset(seed=1, options={"low": -0.001, "high": 0.001})
    assert np.all(np.abs(decode_observation(answer["observation"])) <= 0.001)


def test_reset_takes_an_integer_string_seed_like_the_seed_did(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1")
    as_string = decode_observation(api.reset(instance_id, seed="7")["observation"])
    np.testing.assert_array_equal(as_string, decode_observation(api.reset(instance_id, seed=7)["observation"]))


# ---------------------------------------------------------------- render


def test_render_rgb_array_frame_is_rgba_with_opaque_alpha_and_the_local_pixels(api: V1Client) -> None:
    env = Twin(api, "CartPole-v1", kwargs={"render_mode": "rgb_array"})
    env.reset(seed=3)
    env.step(1)
    frame = api.ok("GET", f"{env.instance_id}/render/")["render_frame"]
    expected = env.local.render()
    assert (frame["rows"], frame["cols"]) == expected.shape[:2]
    rgba = decode_frame(frame)
    assert np.all(rgba[:, :, 3] == 255)
    np.testing.assert_array_equal(rgba[:, :, :3], expected)


def test_render_ansi_frame_is_the_text(api: V1Client) -> None:
    env = Twin(api, "FrozenLake-v1", kwargs={"render_mode": "ansi"})
    env.reset(seed=3)
    env.step(1)
    assert api.ok("GET", f"{env.instance_id}/render/") == {"render_frame": env.local.render()}


# ---------------------------------------------------------------- spaces


def test_discrete_action_space_info_sample_and_contains(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1")
    info = api.ok("GET", f"{instance_id}/action_space/")["info"]
    assert (info["name"], info["n"]) == ("Discrete", 2)
    samples = {api.ok("GET", f"{instance_id}/action_space/sample/")["action"] for _ in range(20)}
    assert samples <= {0, 1} and all(type(s) is int for s in samples)
    members = {x: api.ok("GET", f"{instance_id}/action_space/contains/{x}/")["member"] for x in ("0", "1", "2", "x")}
    assert members == {"0": True, "1": True, "2": False, "x": False}


def test_box_action_space_info_and_sample(api: V1Client) -> None:
    instance_id = api.create("MountainCarContinuous-v0")
    info = api.ok("GET", f"{instance_id}/action_space/")["info"]
    assert {k: info[k] for k in ("name", "shape", "low", "high")} == {
        "name": "Box",
        "shape": [1],
        "low": [-1.0],
        "high": [1.0],
    }
    for _ in range(10):
        (value,) = api.ok("GET", f"{instance_id}/action_space/sample/")["action"]
        assert -1.0 <= value <= 1.0


def test_observation_space_box_bounds_carry_float64_extremes_for_infinity(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1")
    r = api.call("GET", f"{instance_id}/observation_space/")
    assert r.status_code == 200 and "Infinity" not in r.text
    info = r.json()["info"]
    space = gym.make("CartPole-v1").observation_space
    assert np.isinf(space.high).any()  # else this test pins nothing
    assert (info["name"], info["shape"]) == ("Box", [4])
    assert info["low"] == np.where(np.isneginf(space.low), F64.min, space.low).astype(np.float64).tolist()
    assert info["high"] == np.where(np.isposinf(space.high), F64.max, space.high).astype(np.float64).tolist()


@pytest.mark.parametrize(
    ("env_id", "posted", "member"),
    [
        ("FrozenLake-v1", {"name": "Discrete", "n": 16}, True),
        ("FrozenLake-v1", {"name": "Discrete", "n": 15}, False),
        ("FrozenLake-v1", {"name": "Box"}, False),
        ("CartPole-v1", {"name": "Box", "shape": [4]}, True),
        ("CartPole-v1", {"shape": [5]}, False),
        ("CartPole-v1", {"low": [-4.800000190734863, F64.min, -0.41887903213500977, F64.min]}, True),
    ],
)
def test_observation_space_contains_compares_the_posted_properties_with_the_description(
    api: V1Client, env_id: str, posted: dict[str, Any], member: bool
) -> None:
    instance_id = api.create(env_id)
    assert api.ok("POST", f"{instance_id}/observation_space/contains/", posted) == {"member": member}


def test_observation_space_contains_accepts_the_whole_description_back(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1")
    info = api.ok("GET", f"{instance_id}/observation_space/")["info"]
    assert api.ok("POST", f"{instance_id}/observation_space/contains/", info) == {"member": True}


def test_transitions_of_frozenlake_are_the_local_table(api: V1Client) -> None:
    instance_id = api.create("FrozenLake-v1")
    table = api.ok("GET", f"{instance_id}/transitions/")["transitions"]
    local = gym.make("FrozenLake-v1").unwrapped.P
    assert table == jsonable({str(s): {str(a): moves for a, moves in row.items()} for s, row in local.items()})


# ---------------------------------------------------------------- episodes


def test_episodes_run_count_episodes_from_the_seeded_reset(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1")
    episodes = api.ok("POST", f"{instance_id}/episodes/", {"count": 3, "seed": 7})["episodes"]
    assert len(episodes) == 3
    assert_observation(episodes[0][0]["s"], gym.make("CartPole-v1").reset(seed=7)[0])
    for episode in episodes:
        assert 2 <= len(episode) <= 501
        assert [sorted(entry) for entry in episode] == [["r", "s"]] * len(episode)
        assert [entry["r"] for entry in episode] == [0.0] + [1.0] * (len(episode) - 1)
        assert {decode_observation(entry["s"]).shape for entry in episode} == {(4,)}


def test_episodes_stop_on_truncation(api: V1Client) -> None:
    instance_id = api.create("CartPole-v1", max_episode_steps=3)  # a random CartPole cannot fall in 3 steps
    episodes = api.ok("POST", f"{instance_id}/episodes/", {"count": 2, "seed": 1})["episodes"]
    assert [len(episode) for episode in episodes] == [4, 4]


def test_episodes_count_over_the_configured_limit_is_refused_naming_the_field(make_server: Any) -> None:
    api = V1Client(make_server(episodes_max_count=2).url)
    instance_id = api.create("CartPole-v1")
    r = api.call("POST", f"{instance_id}/episodes/", {"count": 3})
    assert_error(r, 400, "count", "GYMSERVE_EPISODES_MAX_COUNT")
    assert len(api.ok("POST", f"{instance_id}/episodes/", {"count": 2})["episodes"]) == 2


# ---------------------------------------------------------------- close


@pytest.mark.parametrize(("method", "route"), [("DELETE", ""), ("POST", "close/")], ids=["DELETE", "legacy-POST-close"])
def test_close_answers_200_with_an_empty_body_and_the_id_is_then_unknown(
    api: V1Client, method: str, route: str
) -> None:
    instance_id = api.create("CartPole-v1")
    r = api.call(method, f"{instance_id}/{route}")
    assert (r.status_code, r.content) == (200, b"")
    assert instance_id not in api.ok("GET")["all_envs"]
    for again in (("GET", ""), ("DELETE", ""), ("POST", "reset/")):
        assert_error(api.call(again[0], f"{instance_id}/{again[1]}", {}), 400, f"Instance_id {instance_id} unknown")


# ---------------------------------------------------------------- bad requests


@dataclass(frozen=True)
class Bad:
    """A bad request: path and body may name the `targets` ({cartpole}, {car}, {unreset}, {ghost})."""

    method: str
    path: str
    body: Any = NO_BODY
    words: tuple[str, ...] = ()
    raw: str | None = None
    status: int = 400


def unknown_id_cases(instance_id: str, label: str) -> list[Any]:
    routes = [
        ("GET", "", NO_BODY),
        ("DELETE", "", NO_BODY),
        ("POST", "close/", NO_BODY),
        ("POST", "reset/", {}),
        ("POST", "step/", {"action": 0}),
        ("GET", "render/", NO_BODY),
        ("GET", "action_space/", NO_BODY),
        ("GET", "action_space/sample/", NO_BODY),
        ("GET", "action_space/contains/1/", NO_BODY),
        ("GET", "observation_space/", NO_BODY),
        ("POST", "observation_space/contains/", {"name": "Discrete"}),
        ("GET", "transitions/", NO_BODY),
        ("POST", "episodes/", {"count": 1}),
    ]
    words = (f"Instance_id {instance_id} unknown",)
    return [
        pytest.param(Bad(method, f"{instance_id}/{route}", body, words=words), id=f"{label}-{method}-{route or 'env'}")
        for method, route, body in routes
    ]


def create(body: Any, *words: str) -> Bad:
    return Bad("POST", "", body, words=words)


def step(target: str, action: Any, *words: str) -> Bad:
    return Bad("POST", f"{{{target}}}/step/", {"action": action}, words=words or ("action",))


def post(route: str, body: Any, *words: str) -> Bad:
    return Bad("POST", f"{{cartpole}}/{route}/", body, words=words)


BAD_REQUESTS = [
    *unknown_id_cases(UNKNOWN_ID, "seed-shaped-unknown-id"),
    *unknown_id_cases("{ghost}", "well-formed-unknown-id"),
    pytest.param(create({"env_id": "Nope-v0"}, "malformed environment ID", "Nope-v0"), id="env-id-unregistered"),
    pytest.param(
        create({"env_id": "gymnasium.envs.classic_control:CartPoleEnv"}, "malformed environment ID"),
        id="env-id-module-form",
    ),
    pytest.param(create({"env_id": 42}, "malformed environment ID"), id="env-id-not-a-string"),
    pytest.param(create({}, MISSING.format("env_id")), id="env-id-missing"),
    pytest.param(
        create({"env_id": "CartPole-v1", "kwargs": {"render_mode": "human"}}, "render_mode", "human"),
        id="render-mode-human",
    ),
    pytest.param(create({"env_id": "CartPole-v1", "kwargs": {"gravity": 1}}, "gravity"), id="kwargs-unknown"),
    pytest.param(create({"env_id": "CartPole-v1", "kwargs": [1]}, "kwargs"), id="kwargs-not-an-object"),
    pytest.param(
        create({"env_id": "CartPole-v1", "max_episode_steps": "ten"}, "max_episode_steps"),
        id="max-episode-steps-string",
    ),
    pytest.param(
        create({"env_id": "CartPole-v1", "max_episode_steps": -5}, "max_episode_steps"), id="max-episode-steps-negative"
    ),
    pytest.param(create({"env_id": "CartPole-v1", "auto_reset": "yes"}, "auto_reset"), id="auto-reset-string"),
    pytest.param(
        create({"env_id": "CartPole-v1", "disable_env_checker": "no"}, "disable_env_checker"),
        id="disable-env-checker-string",
    ),
    pytest.param(Bad("POST", "", raw="not json", words=("json",)), id="create-body-not-json"),
    pytest.param(Bad("POST", "", raw="[1, 2]", words=("JSON object",)), id="create-body-not-an-object"),
    pytest.param(
        Bad("POST", "", raw=json.dumps({"env_id": "CartPole-v1", "kwargs": {"pad": "x" * (1 << 20)}}), status=413),
        id="body-over-the-1MiB-limit",
    ),
    pytest.param(post("reset", {"seed": "abc"}, "seed"), id="seed-string"),
    pytest.param(post("reset", {"seed": 1.5}, "seed"), id="seed-float"),
    pytest.param(post("reset", {"seed": -1}, "seed"), id="seed-negative"),
    pytest.param(post("reset", {"options": "fast"}, "options"), id="options-not-an-object"),
    pytest.param(Bad("POST", "{cartpole}/reset/", raw="{seed: 1}", words=("json",)), id="reset-body-not-json"),
    pytest.param(post("step", {}, MISSING.format("action")), id="action-missing"),
    pytest.param(step("cartpole", "left"), id="discrete-action-string"),
    pytest.param(step("cartpole", [1]), id="discrete-action-list"),
    pytest.param(step("cartpole", 2), id="discrete-action-too-large"),
    pytest.param(step("cartpole", -1), id="discrete-action-negative"),
    pytest.param(step("cartpole", True), id="discrete-action-bool"),
    pytest.param(step("cartpole", {"a": 1}), id="discrete-action-object"),
    pytest.param(Bad("POST", "{cartpole}/step/", raw='{"action": NaN}', words=("json",)), id="action-NaN-is-not-json"),
    pytest.param(step("car", [], MISSING.format("action")), id="box-action-too-short-empty"),
    pytest.param(step("car", [0.1, 0.2]), id="box-action-too-long"),
    pytest.param(step("car", [[0.1], [0.2]]), id="box-action-wrong-shape"),
    pytest.param(step("car", [5.0]), id="box-action-out-of-range"),
    pytest.param(step("car", "x"), id="box-action-string"),
    pytest.param(step("unreset", 0, "reset"), id="step-before-reset"),
    pytest.param(post("episodes", {}, MISSING.format("count")), id="count-missing"),
    pytest.param(post("episodes", {"count": -1}, "count"), id="count-negative"),
    pytest.param(
        post("episodes", {"count": 101}, "count", "GYMSERVE_EPISODES_MAX_COUNT"), id="count-over-default-limit"
    ),
    pytest.param(post("episodes", {"count": "2"}, "count"), id="count-string"),
    pytest.param(post("episodes", {"count": 1.5}, "count"), id="count-float"),
    pytest.param(post("episodes", {"count": 1, "seed": "x"}, "seed"), id="episodes-seed-string"),
    pytest.param(Bad("GET", "{cartpole}/transitions/", words=("transition",)), id="transitions-of-a-non-tabular-env"),
]


@pytest.fixture(scope="module")
def targets(api: V1Client, server: Any) -> dict[str, str]:
    """The envs the bad requests aim at: a reset CartPole and MountainCarContinuous, a never-reset CartPole."""
    envs = {"cartpole": "CartPole-v1", "car": "MountainCarContinuous-v0", "unreset": "CartPole-v1"}
    ids = {name: api.create(env_id) for name, env_id in envs.items()}
    for name in ("cartpole", "car"):
        api.reset(ids[name], seed=0)
    node = server.env["GYMSERVE_NODE_ID"]
    return {**ids, "ghost": f"{node}.0-0.{'0' * 32}"}  # well-formed, never minted


@pytest.mark.parametrize("bad", BAD_REQUESTS)
def test_bad_request_gets_a_json_error_naming_the_problem_and_loses_no_env(
    api: V1Client, bystander: Bystander, targets: dict[str, str], bad: Bad
) -> None:
    path = bad.path.format(**targets)
    words = [w.format(**targets) for w in bad.words]
    assert_error(api.call(bad.method, path, bad.body, raw=bad.raw), bad.status, *words)
    bystander.still_steps()


def test_env_needing_a_missing_dependency_names_it_and_is_not_called_malformed(
    api: V1Client, bystander: Bystander
) -> None:
    # The test install has MuJoCo, Box2D and ale-py, but never jax: Gymnasium's phys2d envs need it.
    assert find_spec("jax") is None, "this test needs an env family whose dependency is not installed"
    body = assert_error(api.call("POST", "", {"env_id": "phys2d/CartPole-v1"}), 400, "jax", "not installed")
    assert "malformed" not in body["message"]
    bystander.still_steps()
