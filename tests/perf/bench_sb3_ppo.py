"""Wall time of Stable-Baselines3 PPO on 8 CartPole envs: local envs (DummyVecEnv) against a gymserve farm
(gymserve.client.sb3.RemoteVecEnv, one message per vector step: over the step stream, and over HTTP). Not a pass/fail
test.

Run: .venv/bin/python tests/perf/bench_sb3_ppo.py --url http://127.0.0.1:8000 [--steps 60000]
(needs the sb3 extra; scripts/e2e-bench.sh runs it against the compose farm with BENCH_PPO=1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from gymserve.client.sb3 import RemoteVecEnv

ENV_ID = "CartPole-v1"
NUM_ENVS = 8


def train(make: Callable[[], VecEnv], steps: int) -> tuple[float, float]:
    """Seconds of PPO.learn and the mean evaluation return (on a local env) of what it learned."""
    env = make()
    try:
        model = PPO("MlpPolicy", env, seed=0, verbose=0, device="cpu")
        started = time.perf_counter()
        model.learn(total_timesteps=steps)
        took = time.perf_counter() - started
    finally:
        env.close()
    mean, _ = evaluate_policy(model, gym.make(ENV_ID), n_eval_episodes=5, warn=False)
    return took, float(mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a gymserve router or replica")
    parser.add_argument("--steps", type=int, default=60_000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same for both runs; PPO's small MLP gains nothing from more
    runs: dict[str, Any] = {
        "local envs (DummyVecEnv)": lambda: DummyVecEnv([lambda: gym.make(ENV_ID) for _ in range(NUM_ENVS)]),
        "farm, the step stream": lambda: RemoteVecEnv(args.url, ENV_ID, NUM_ENVS, seed=0, stream=True),
        "farm, HTTP": lambda: RemoteVecEnv(args.url, ENV_ID, NUM_ENVS, seed=0, stream=False),
    }
    results = {name: train(make, args.steps) for name, make in runs.items()}
    for name, (took, mean) in results.items():
        print(f"PPO {NUM_ENVS} x {ENV_ID}, {args.steps} steps, {name}: {took:.1f} s, evaluation return {mean:.0f}")
    local, *remote = (took for took, _ in results.values())
    for name, took in zip(list(results)[1:], remote, strict=True):
        print(f"{name} / local wall time: {took / local:.2f}x")


if __name__ == "__main__":
    main()
