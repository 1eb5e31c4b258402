"""RemoteVecEnv: a Stable-Baselines3 VecEnv whose envs live in one server-side vector env (one request per step).

Needs the optional extra: `pip install 'gymserve[sb3]'` (Stable-Baselines3, and with it PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
except ImportError as err:  # pragma: no cover - depends on the extra
    raise ImportError("gymserve.client.sb3 needs Stable-Baselines3: pip install 'gymserve[sb3]'") from err

from .remote_vector_env import RemoteVectorEnv

# What a VecEnv can tell about its envs without calling them: the rest lives on the server.
LOCAL_ATTRIBUTES = ("render_mode", "spec", "metadata")


class RemoteVecEnv(VecEnv):
    """`RemoteVecEnv(url, "CartPole-v1", 8, seed=0)` behaves like SB3's `DummyVecEnv` of 8
    `gymnasium.make("CartPole-v1")`, with each reset and each vector step one HTTP request.

    The server runs the envs as one Gymnasium vector env with autoreset in the same step (SB3's
    semantics): a finished env's `info` holds `terminal_observation` and `TimeLimit.truncated`, its
    observation is already that of the next episode, and the reset's info is in `reset_infos`. `seed`
    (or `seed()`) seeds env i with seed + i at the next reset, as SB3 does. Other keyword arguments go
    to `gymserve.client.RemoteVectorEnv` (timeout, encoding, max_episode_steps, wrappers, `retry_window`
    for riding a move of the env or a restart of the farm, and the env's own constructor arguments).
    `get_attr` answers `render_mode`, `spec` and `metadata`; the envs' other attributes and methods live
    on the server, so `get_attr`/`set_attr`/`env_method` for them raise NotImplementedError.
    """

    def __init__(self, base_url: str, env_id: str, num_envs: int, seed: int | None = None, **kwargs: Any) -> None:
        if "autoreset_mode" in kwargs:
            raise ValueError("RemoteVecEnv always resets finished envs in the same step, as SB3 does")
        self.venv = RemoteVectorEnv(base_url, env_id, num_envs, autoreset_mode="same_step", **kwargs)
        self._env_render_mode = self.venv.render_mode
        self._actions: Any = None
        super().__init__(self.venv.num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        if seed is not None:
            self.seed(seed)

    @property
    def instance_id(self) -> str | None:
        """The vector env's id on the server; None once closed."""
        return self.venv.instance_id

    # --- the VecEnv interface ----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        options = self._options[0]
        if any(o != options for o in self._options):
            raise NotImplementedError("one server-side vector env takes one options dict for all its envs")
        obs, info = self.venv.reset(seed=self._wire_seeds(), options=options or None)
        self.reset_infos = [_env_info(info, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminations, truncations, info = self.venv.step(self._actions)
        dones = np.logical_or(terminations, truncations)
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            if dones[i]:
                # The env was reset in this step: the step's own info is final_info, the reset's is the rest.
                env_info = _env_info(info.get("final_info", {}), i)
                env_info["terminal_observation"] = _item(info["final_obs"], i)
                self.reset_infos[i] = _env_info(info, i, skip=("final_obs", "final_info"))
            else:
                env_info = _env_info(info, i, skip=("final_obs", "final_info"))
            env_info["TimeLimit.truncated"] = bool(truncations[i] and not terminations[i])
            infos.append(env_info)
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self._env_render_mode != "rgb_array":
            return [None] * self.num_envs
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name not in LOCAL_ATTRIBUTES:
            raise NotImplementedError(
                f"{attr_name!r} is an attribute of envs on the server; RemoteVecEnv knows only {LOCAL_ATTRIBUTES}"
            )
        value: Any = {"render_mode": self._env_render_mode, "spec": self.venv.spec, "metadata": {}}[attr_name]
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError("the envs live on the server; their attributes cannot be set from here")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError(f"the envs live on the server; {method_name}() cannot be called from here")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # Server-side wrappers are named by strings, never local classes: a local wrapper class never applies.
        return [False for _ in self._indices(indices)]

    # --- helpers --------------------------------------------------------------------------------------------

    def _wire_seeds(self) -> int | list[int | None] | None:
        """SB3's per-env seeds as the server takes them: one int when they are seed, seed + 1, ..."""
        seeds = self._seeds
        if all(s is None for s in seeds):
            return None
        first = seeds[0]
        if first is not None and all(s == first + i for i, s in enumerate(seeds)):
            return int(first)
        return [None if s is None else int(s) for s in seeds]

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def _item(values: Any, i: int) -> Any:
    """Entry i of a stacked vector value (an array, an object array, or a dict of them)."""
    if isinstance(values, dict):
        return {k: _item(v, i) for k, v in values.items()}
    return values[i]


def _env_info(info: dict[str, Any], i: int, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Env i's own info out of a Gymnasium vector info (values stacked, `_key` masks saying which envs have one)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or key in skip:
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        out[key] = _env_info(value, i) if isinstance(value, dict) else _item(value, i)
    return out
