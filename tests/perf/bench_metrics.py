"""Cost of metrics on the step path: operations.step_native with and without an env's meters.

Not a pass/fail test: prints microseconds per CartPole step for both, and the difference.
Run: .venv/bin/python tests/perf/bench_metrics.py [--steps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# Multiprocess mode, as under `gymserve serve`: values live in mmap'ed files (slower than in-memory).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gymserve-bench-metrics-"))

import gymnasium as gym

from gymserve import metrics
from gymserve.lifecycle.registry import EnvRecord
from gymserve.pipeline import operations


def per_step_us(record: EnvRecord, steps: int) -> float:
    env = record.env
    env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(steps):
        *_, terminated, truncated, _ = operations.step_native(record, 0)
        if terminated or truncated:
            env.reset()
    return (time.perf_counter() - started) / steps * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bare = EnvRecord("bare", "CartPole-v1", gym.make("CartPole-v1"), ttl=0)
    metered = EnvRecord(
        "metered", "CartPole-v1", gym.make("CartPole-v1"), ttl=0, meters=metrics.EnvMeters("CartPole-v1")
    )
    without, with_ = [], []
    for _ in range(args.rounds):  # interleaved, so that drift on the machine hits both alike
        without.append(per_step_us(bare, args.steps))
        with_.append(per_step_us(metered, args.steps))
    a, b = statistics.median(without), statistics.median(with_)
    print(f"step_native, CartPole-v1, {args.steps} steps x {args.rounds} rounds (median)")
    print(f"  without metrics: {a:6.2f} us/step")
    print(f"  with metrics:    {b:6.2f} us/step")
    print(f"  metrics cost:    {b - a:6.2f} us/step ({(b / a - 1) * 100:+.0f}% of the bare step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
