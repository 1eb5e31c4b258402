"""Guess-v0: find a hidden point in the unit square (or cube) from warmer/colder feedback."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class GuessEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Each step guesses a point; the observation says, per axis, whether the target is lower, close or higher.

    Observation (a Dict of mixed dtypes): `direction` MultiDiscrete uint8 (0 lower, 1 close, 2 higher),
    `distance` Box float32, `tries` Discrete (int64). Action: a Box float32 point in [0, 1]^dims.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, dims: int = 2, tolerance: float = 0.05, render_mode: str | None = None) -> None:
        if not 1 <= dims <= 8:
            raise ValueError(f"dims must be from 1 to 8, got {dims}")
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be between 0 and 1, got {tolerance}")
        self.dims, self.tolerance, self.render_mode = dims, tolerance, render_mode
        self.max_tries = 255
        self.observation_space = spaces.Dict(
            {
                "direction": spaces.MultiDiscrete(np.full(dims, 3), dtype=np.uint8),
                "distance": spaces.Box(0.0, np.sqrt(dims), shape=(1,), dtype=np.float32),
                "tries": spaces.Discrete(self.max_tries + 1),
            }
        )
        self.action_space = spaces.Box(0.0, 1.0, shape=(dims,), dtype=np.float32)
        self._target = np.zeros(dims, dtype=np.float32)
        self._guess = np.full(dims, 0.5, dtype=np.float32)
        self._tries = 0

    def _obs(self) -> dict[str, Any]:
        diff = self._target - self._guess
        direction = np.where(np.abs(diff) <= self.tolerance, 1, np.where(diff < 0, 0, 2)).astype(np.uint8)
        distance = np.array([np.linalg.norm(diff)], dtype=np.float32)
        return {"direction": direction, "distance": distance, "tries": self._tries}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        super().reset(seed=seed)
        self._target = self.np_random.uniform(0.0, 1.0, self.dims).astype(np.float32)
        self._guess = np.full(self.dims, 0.5, dtype=np.float32)
        self._tries = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict]:
        self._guess = np.clip(np.asarray(action, dtype=np.float32), 0.0, 1.0)
        self._tries = min(self._tries + 1, self.max_tries)
        obs = self._obs()
        found = bool(obs["distance"][0] <= self.tolerance)
        reward = 10.0 if found else -float(obs["distance"][0])
        return obs, reward, found, False, {"tries": self._tries}

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return f"guess {self._guess.round(3).tolist()} after {self._tries} tries"
        return None
