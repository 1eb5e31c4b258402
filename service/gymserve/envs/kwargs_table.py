"""The constructor arguments a client may pass to each served env family, with their types and bounds.

Names are a contract: an argument that is not listed here (or declared by an operator module, see
`from_declaration`) is refused. Bounds keep one env's cost sane, not its physics plausible; each says why.
The documented arguments come from Gymnasium's env pages (gymnasium.farama.org/environments/) and
ale-py's (ale.farama.org/environments/); `render_mode` is not listed: every env takes the non-human modes of
its own `metadata["render_modes"]` (the policy reads them).

Documented arguments left out on purpose, and why:
  - `xml_file` (MuJoCo v4/v5): a path the server would read (GYMSERVE_ENV_KWARGS_ALLOW reopens it);
  - `main_body` (MuJoCo v5 Ant, ...): names a body of a custom model; a bad id fails at the first step, not at create;
  - `default_camera_config`, `visual_options` (MuJoCo): maps of renderer fields and flags, not plain values;
  - `game` (ALE): the env id chooses the game;
  - `verbose` (CarRacing): prints into the server's log on every tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Arg:
    """One argument's type and bounds: `why(value)` says what is wrong, or None; `legal`/`past` are test values."""

    def why(self, value: Any) -> str | None:
        raise NotImplementedError

    def legal(self) -> Any:
        """A value inside the bounds (the test makes every env with it)."""
        raise NotImplementedError

    def past(self) -> Any:
        """A value just past a bound, or of the wrong type when there is no bound (the test expects a 422)."""
        raise NotImplementedError


def _number(value: Any, integral: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (not integral and isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class Int(Arg):
    low: int
    high: int
    example: int | None = None  # a legal value every env takes, when not every value in bounds is (ALE's modes)

    def why(self, value: Any) -> str | None:
        if not _number(value, integral=True) or not self.low <= value <= self.high:
            return f"expected an integer from {self.low} to {self.high}, got {value!r}"
        return None

    def legal(self) -> int:
        return self.high if self.example is None else self.example

    def past(self) -> int:
        return self.high + 1


@dataclass(frozen=True)
class Float(Arg):
    low: float
    high: float

    def why(self, value: Any) -> str | None:
        if not _number(value, integral=False) or not self.low <= value <= self.high:
            return f"expected a number from {self.low:g} to {self.high:g}, got {value!r}"
        return None

    def legal(self) -> float:
        return self.high

    def past(self) -> float:
        return self.high + max(1.0, abs(self.high))


@dataclass(frozen=True)
class Bool(Arg):
    def why(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"

    def legal(self) -> bool:
        return True

    def past(self) -> int:
        return 2


@dataclass(frozen=True)
class Choice(Arg):
    values: tuple[Any, ...]

    def why(self, value: Any) -> str | None:
        if isinstance(value, bool) or value not in self.values:  # True == 1: a bool is never a choice's number
            return f"expected one of {', '.join(map(repr, self.values))}, got {value!r}"
        return None

    def legal(self) -> Any:
        return self.values[-1]

    def past(self) -> str:
        return "none of those"


@dataclass(frozen=True)
class Pair(Arg):
    """Two values of `item` in order (low, high): a range such as `healthy_z_range`; a list or a $tuple."""

    item: Int | Float

    def why(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or len(value) != 2:
            return f"expected a pair [low, high], got {value!r}"
        for part in value:
            why = self.item.why(part)
            if why:
                return why
        return None if value[0] <= value[1] else f"expected low <= high, got {value!r}"

    def legal(self) -> tuple[Any, Any]:
        return (self.item.low, self.item.high)

    def past(self) -> tuple[Any, Any]:
        return (self.item.low, self.item.past())


@dataclass(frozen=True)
class Triple(Arg):
    """Three values of `item`, such as FrozenLake's `reward_schedule` (goal, hole, frozen)."""

    item: Float

    def why(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple) or len(value) != 3:
            return f"expected three numbers, got {value!r}"
        return next(filter(None, (self.item.why(part) for part in value)), None)

    def legal(self) -> tuple[float, float, float]:
        return (self.item.high, 0.0, self.item.low)

    def past(self) -> tuple[float, float, float]:
        return (self.item.past(), 0.0, 0.0)


@dataclass(frozen=True)
class OneOf(Arg):
    """Either of two shapes, such as ALE's `frameskip` (a fixed skip, or a [low, high) range to draw from)."""

    first: Arg
    second: Arg

    def why(self, value: Any) -> str | None:
        first = self.first.why(value)
        second = None if first is None else self.second.why(value)
        return None if first is None or second is None else f"{first}; or {second}"

    def legal(self) -> Any:
        return self.second.legal()

    def past(self) -> Any:
        return self.first.past()


@dataclass(frozen=True)
class Grid(Arg):
    """A map given as rows of equal length over `tiles`, with exactly one `start` tile, at most `side` by `side`."""

    side: int
    tiles: str
    start: str

    def why(self, value: Any) -> str | None:
        shape = f"a list of at most {self.side} strings of {self.tiles} of one length, at most {self.side} each"
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= self.side:
            return f"expected {shape}"
        if not all(isinstance(row, str) and 1 <= len(row) <= self.side for row in value):
            return f"expected {shape}"
        if len({len(row) for row in value}) != 1 or set("".join(value)) - set(self.tiles):
            return f"expected {shape}"
        if "".join(value).count(self.start) != 1:
            return f"expected exactly one start tile {self.start!r}"
        return None

    def legal(self) -> list[str]:
        rows = ["F" * self.side for _ in range(self.side)]
        return ["S" + rows[0][1:], *rows[1:-1], rows[-1][:-1] + "G"]

    def past(self) -> list[str]:
        side = self.side + 1
        return ["S" + "F" * (side - 1)] + ["F" * side] * (side - 2) + ["F" * (side - 1) + "G"]


Table = Mapping[str, Arg]

# --- shared bounds, each with its reason ---------------------------------------------------------------------
# A step costs frame_skip physics (or emulator) steps: 20 keeps a step within ~5x the families' defaults (4-5).
FRAME_SKIP = Int(1, 20)
# A rendered frame is width x height x 3 bytes and MuJoCo grows its offscreen buffer to match: 2048 x 2048 is
# 12 MiB a frame, already past what GYMSERVE_MAX_ANSWER_BYTES lets an answer carry by default.
RENDER_SIDE = Int(1, 2048)
# Scene buffer of MuJoCo's renderer (default 1000 geoms); memory grows with it.
MAX_GEOM = Int(1, 10_000)
# Reward weights and noise scales cost nothing; they are bounded so that a reward stays a usable float.
WEIGHT = Float(-1_000.0, 1_000.0)
NOISE = Float(0.0, 10.0)
RANGE = Pair(Float(-1_000.0, 1_000.0))
PROBABILITY = Float(0.0, 1.0)
# A FrozenLake map of n x n builds n^2 x 4 x 3 transitions at create and an ansi render of n^2 characters:
# 64 x 64 (16 times the 8x8 map) stays well under a millisecond and a few KB; 126 x 126 would not.
FROZEN_LAKE_MAP = Grid(64, "SFHG", "S")


def _mujoco(cameras: tuple[str, ...], count: int, **own: Arg) -> dict[str, Arg]:
    """MujocoEnv's render arguments (v4 and v5 take them), and the env's own. A camera id past the model's last
    camera aborts the whole process inside MuJoCo, so ids and names are the model's own."""
    args: dict[str, Arg] = {"width": RENDER_SIDE, "height": RENDER_SIDE, "max_geom": MAX_GEOM}
    args["camera_id"] = Int(-1, count - 1)  # -1: MuJoCo's free camera
    if cameras:
        args["camera_name"] = Choice(cameras)
    return args | own


def _mujoco_v5(cameras: tuple[str, ...], count: int, **own: Arg) -> dict[str, Arg]:
    return _mujoco(cameras, count, frame_skip=FRAME_SKIP, **own)


_LOCOMOTION = {
    "forward_reward_weight": WEIGHT,
    "ctrl_cost_weight": WEIGHT,
    "reset_noise_scale": NOISE,
    "exclude_current_positions_from_observation": Bool(),
}
_HEALTHY = {"healthy_reward": WEIGHT, "terminate_when_unhealthy": Bool(), "healthy_z_range": RANGE}
_HUMANOID_V5 = {
    "include_cinert_in_observation": Bool(),
    "include_cvel_in_observation": Bool(),
    "include_qfrc_actuator_in_observation": Bool(),
    "include_cfrc_ext_in_observation": Bool(),
}
_ANT = {**_LOCOMOTION, **_HEALTHY, "contact_cost_weight": WEIGHT, "contact_force_range": RANGE}
_ANT_V4 = {k: v for k, v in _ANT.items() if k != "forward_reward_weight"}  # v5 added it
_HOPPER = {**_LOCOMOTION, **_HEALTHY, "healthy_state_range": RANGE, "healthy_angle_range": RANGE}
_WALKER = {**_LOCOMOTION, **_HEALTHY, "healthy_angle_range": RANGE}
_HUMANOID = {**_LOCOMOTION, **_HEALTHY}
_TRACK = ("track",)

_M = "gymnasium.envs.mujoco."
_CC = "gymnasium.envs.classic_control."
_TT = "gymnasium.envs.toy_text."
_B2 = "gymnasium.envs.box2d."

# Keyed by entry point: the arguments belong to the constructor, whatever id registered it.
FAMILY_KWARGS: dict[str, Table] = {
    # classic-control
    f"{_CC}acrobot:AcrobotEnv": {},
    f"{_CC}cartpole:CartPoleEnv": {"sutton_barto_reward": Bool()},
    # The car's speed never exceeds 0.07, so a larger goal velocity only makes the goal unreachable.
    f"{_CC}mountain_car:MountainCarEnv": {"goal_velocity": Float(-0.07, 0.07)},
    f"{_CC}continuous_mountain_car:Continuous_MountainCarEnv": {"goal_velocity": Float(-0.07, 0.07)},
    f"{_CC}pendulum:PendulumEnv": {"g": Float(0.0, 100.0)},
    # toy-text
    f"{_TT}blackjack:BlackjackEnv": {"natural": Bool(), "sab": Bool()},
    f"{_TT}cliffwalking:CliffWalkingEnv": {"is_slippery": Bool()},
    f"{_TT}frozen_lake:FrozenLakeEnv": {
        "desc": FROZEN_LAKE_MAP,
        "map_name": Choice(("4x4", "8x8")),
        "is_slippery": Bool(),
        "success_rate": PROBABILITY,
        "reward_schedule": Triple(WEIGHT),
    },
    f"{_TT}taxi:TaxiEnv": {
        "is_rainy": Bool(),
        "fickle_passenger": Bool(),
        "rainy_probability": PROBABILITY,
        "fickle_probability": PROBABILITY,
    },
    # box2d: the bounds Gymnasium's LunarLander documents (it warns or asserts outside them)
    f"{_B2}lunar_lander:LunarLander": {
        "continuous": Bool(),
        "gravity": Float(-11.99, -0.01),  # asserted strictly between -12 and 0
        "enable_wind": Bool(),
        "wind_power": Float(0.0, 20.0),
        "turbulence_power": Float(0.0, 2.0),
    },
    f"{_B2}bipedal_walker:BipedalWalker": {"hardcore": Bool()},
    f"{_B2}car_racing:CarRacing": {
        "lap_complete_percent": PROBABILITY,
        "domain_randomize": Bool(),
        "continuous": Bool(),
    },
    # mujoco v5
    f"{_M}ant_v5:AntEnv": _mujoco_v5(_TRACK, 1, **_ANT, include_cfrc_ext_in_observation=Bool()),
    f"{_M}half_cheetah_v5:HalfCheetahEnv": _mujoco_v5(_TRACK, 1, **_LOCOMOTION),
    f"{_M}hopper_v5:HopperEnv": _mujoco_v5(_TRACK, 1, **_HOPPER),
    f"{_M}humanoid_v5:HumanoidEnv": _mujoco_v5(
        _TRACK, 2, **_HUMANOID, **_HUMANOID_V5, contact_cost_weight=WEIGHT, contact_cost_range=RANGE
    ),
    f"{_M}humanoidstandup_v5:HumanoidStandupEnv": _mujoco_v5(
        _TRACK,
        2,
        **_HUMANOID_V5,
        uph_cost_weight=WEIGHT,
        ctrl_cost_weight=WEIGHT,
        impact_cost_weight=WEIGHT,
        impact_cost_range=RANGE,
        reset_noise_scale=NOISE,
        exclude_current_positions_from_observation=Bool(),
    ),
    f"{_M}inverted_double_pendulum_v5:InvertedDoublePendulumEnv": _mujoco_v5(
        (), 0, healthy_reward=WEIGHT, reset_noise_scale=NOISE
    ),
    f"{_M}inverted_pendulum_v5:InvertedPendulumEnv": _mujoco_v5((), 0, reset_noise_scale=NOISE),
    f"{_M}pusher_v5:PusherEnv": _mujoco_v5(
        (), 0, reward_near_weight=WEIGHT, reward_dist_weight=WEIGHT, reward_control_weight=WEIGHT
    ),
    f"{_M}reacher_v5:ReacherEnv": _mujoco_v5((), 0, reward_dist_weight=WEIGHT, reward_control_weight=WEIGHT),
    f"{_M}swimmer_v5:SwimmerEnv": _mujoco_v5(_TRACK, 1, **_LOCOMOTION),
    f"{_M}walker2d_v5:Walker2dEnv": _mujoco_v5(_TRACK, 1, **_WALKER),
    # mujoco v4: a fixed frame skip; Pusher-v4 and Reacher-v4 take only the render arguments
    f"{_M}ant_v4:AntEnv": _mujoco(_TRACK, 1, **_ANT_V4, use_contact_forces=Bool()),
    f"{_M}half_cheetah_v4:HalfCheetahEnv": _mujoco(_TRACK, 1, **_LOCOMOTION),
    f"{_M}hopper_v4:HopperEnv": _mujoco(_TRACK, 1, **_HOPPER),
    f"{_M}humanoid_v4:HumanoidEnv": _mujoco(_TRACK, 2, **_HUMANOID),
    f"{_M}humanoidstandup_v4:HumanoidStandupEnv": _mujoco(_TRACK, 2),
    f"{_M}inverted_double_pendulum_v4:InvertedDoublePendulumEnv": _mujoco((), 0),
    f"{_M}inverted_pendulum_v4:InvertedPendulumEnv": _mujoco((), 0),
    f"{_M}pusher_v4:PusherEnv": _mujoco((), 0),
    f"{_M}reacher_v4:ReacherEnv": _mujoco((), 0),
    f"{_M}swimmer_v4:SwimmerEnv": _mujoco(_TRACK, 1, **_LOCOMOTION),
    f"{_M}walker2d_v4:Walker2dEnv": _mujoco(_TRACK, 1, **_WALKER),
    # atari (ale-py): modes and difficulties are checked against the game by ALE itself at create
    "ale_py.env:AtariEnv": {
        "mode": Int(0, 255, example=0),
        "difficulty": Int(0, 255, example=0),
        "obs_type": Choice(("rgb", "grayscale", "ram")),
        "frameskip": OneOf(FRAME_SKIP, Pair(FRAME_SKIP)),
        "repeat_action_probability": PROBABILITY,
        "full_action_space": Bool(),
        "continuous": Bool(),
        "continuous_action_threshold": PROBABILITY,
        # A cap, not a cost: 108,000 frames (30 minutes of play) is v5's default; ten times that is plenty.
        "max_num_frames_per_episode": Int(1, 1_080_000),
        "sound_obs": Bool(),
    },
}


# --- operator modules: GYMSERVE_KWARGS ------------------------------------------------------------------------
DECLARATION = "GYMSERVE_KWARGS"


def _declared_arg(spec: Any) -> Arg:
    """One argument of a GYMSERVE_KWARGS declaration: {"type": "int"|"float", "min", "max"}, {"type": "bool"},
    or {"type": "choice", "values": [...]}."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected a mapping with a 'type', got {spec!r}")
    kind, keys = spec.get("type"), set(spec)
    if kind in ("int", "float") and keys == {"type", "min", "max"}:
        low, high = spec["min"], spec["max"]
        if not (_number(low, kind == "int") and _number(high, kind == "int") and low <= high):
            raise ValueError(f"'min' and 'max' must be {kind}s with min <= max, got {low!r} and {high!r}")
        return Int(low, high) if kind == "int" else Float(float(low), float(high))
    if kind == "bool" and keys == {"type"}:
        return Bool()
    values = spec.get("values")
    if kind == "choice" and keys == {"type", "values"} and isinstance(values, list | tuple) and values:
        if not all(value is None or isinstance(value, str | int | float) for value in values):
            raise ValueError(f"a choice's values must be strings, numbers or null, got {values!r}")
        return Choice(tuple(values))
    raise ValueError(
        f"expected {{'type': 'int'|'float', 'min': ..., 'max': ...}}, {{'type': 'bool'}} "
        f"or {{'type': 'choice', 'values': [...]}}, got {dict(spec)!r}"
    )


def from_declaration(declared: Any) -> dict[str, Table]:
    """A module's GYMSERVE_KWARGS (env id -> argument name -> spec) as tables; ValueError names what is wrong.

    Plain data, so that an env package declares its arguments without importing gymserve.
    """
    if not isinstance(declared, Mapping):
        raise ValueError(f"{DECLARATION} must map env ids to their arguments, got {type(declared).__name__}")
    tables: dict[str, Table] = {}
    for env_id, args in declared.items():
        if not isinstance(args, Mapping):
            raise ValueError(f"{DECLARATION}[{env_id!r}] must map argument names to specs")
        table: dict[str, Arg] = {}
        for name, spec in args.items():
            if name == "render_mode":
                raise ValueError(f"{DECLARATION}[{env_id!r}]: render_mode comes from the env's metadata")
            try:
                table[str(name)] = _declared_arg(spec)
            except ValueError as exc:
                raise ValueError(f"{DECLARATION}[{env_id!r}][{name!r}]: {exc}") from None
        tables[str(env_id)] = table
    return tables
