"""Test envs that Gymnasium does not ship: a Dict observation drawn from the env's own random generator.

Registered on import: a test server imports it as GYMSERVE_ENV_MODULES=lifecycle_envs (with tests/ on its
PYTHONPATH), so the tests can fork and snapshot an env with a Dict observation.
"""

from __future__ import annotations

import threading
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

DICT_ENV = "GymserveTestDict-v0"
UNCOPYABLE_ENV = "GymserveTestUncopyable-v0"


class DictObservationEnv(gym.Env[dict[str, Any], int]):
    """A random walk whose observation is a Dict, every part of it drawn from `self.np_random`."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-10.0, 10.0, (2,), np.float32),
                "noise": spaces.Box(-np.inf, np.inf, (3,), np.float64),
                "steps": spaces.Discrete(1000),
            }
        )
        self.action_space = spaces.Discrete(4)
        self._position = np.zeros(2, np.float32)
        self._steps = 0

    def _observation(self) -> dict[str, Any]:
        return {"position": self._position.copy(), "noise": self.np_random.normal(size=3), "steps": self._steps}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        super().reset(seed=seed)
        self._position = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self._steps = 0
        return self._observation(), {}

    def step(self, action: int) -> tuple[dict[str, Any], float, bool, bool, dict]:
        moves = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32) * 0.1
        self._position = np.clip(self._position + moves[action] + self.np_random.normal(0, 0.05, 2), -10, 10).astype(
            np.float32
        )
        self._steps += 1
        reward = float(-np.linalg.norm(self._position))
        return self._observation(), reward, False, self._steps >= 200, {}


if DICT_ENV not in gym.envs.registry:
    gym.register(DICT_ENV, entry_point=DictObservationEnv)


class UncopyableEnv(DictObservationEnv):
    """The same walk, holding a lock (as an env holding a socket or a native handle would): it cannot be pickled."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()


if UNCOPYABLE_ENV not in gym.envs.registry:
    gym.register(UNCOPYABLE_ENV, entry_point=UncopyableEnv)
