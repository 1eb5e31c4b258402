"""The OpenEnv baseline of tests/perf/bench_stream.py: Gymnasium's CartPole-v1 served by `openenv-core` (0.3.x)
through its `create_app()`, one env per WebSocket session on `/ws`, under uvicorn with one worker.

Not imported by gymserve or its tests: bench_stream.py runs it, with the python of a venv that has openenv-core,
gymnasium and uvicorn (`--openenv-python`), as `python -m uvicorn openenv_cartpole:app` from this directory.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State


class CartPoleAction(Action):
    action: int


class CartPoleObservation(Observation):
    observation: list[float]


class CartPole(Environment):  # type: ignore[misc]
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self.env = gym.make("CartPole-v1")
        self.steps = 0

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> CartPoleObservation:
        obs, _ = self.env.reset(seed=seed)
        self.steps = 0
        return CartPoleObservation(observation=obs.tolist())

    def step(self, action: CartPoleAction, timeout_s: float | None = None, **kwargs: Any) -> CartPoleObservation:
        obs, reward, terminated, truncated, _ = self.env.step(action.action)
        self.steps += 1
        if terminated or truncated:  # the episode goes on, as gymserve's auto_reset envs do in the bench
            obs, _ = self.env.reset()
        done = bool(terminated or truncated)
        return CartPoleObservation(observation=obs.tolist(), reward=float(reward), done=done)

    @property
    def state(self) -> State:
        return State(step_count=self.steps)


app = create_app(CartPole, CartPoleAction, CartPoleObservation, max_concurrent_envs=256)
