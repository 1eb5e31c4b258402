"""The memory bomb of issue 13 and its kin, sent over and over to a real server: refused at create, and no worker
grows past a few hundred MB while they run."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
import requests

from servers import Server

pytestmark = pytest.mark.integration

RGB = {"render_mode": "rgb_array"}
BOMBS: list[dict[str, Any]] = [
    {"env_id": "CartPole-v1", "num_envs": 1024, "kwargs": RGB, "wrappers": ["AddRenderObservation"]},
    {"env_id": "CartPole-v1", "num_envs": 1024, "kwargs": RGB},  # its render would answer 1024 frames
    {"env_id": "Acrobot-v1", "num_envs": 512, "kwargs": RGB, "wrappers": ["AddRenderObservation"]},
    {"env_id": "MountainCar-v0", "num_envs": 256, "kwargs": RGB, "wrappers": ["AddRenderObservation"]},
    {"env_id": "Pendulum-v1", "num_envs": 1024, "kwargs": RGB},
]
LIMIT_MB = 400


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read())[1]) / 1024  # type: ignore[index]


def test_the_memory_bomb_and_its_kin_are_refused_and_no_worker_grows(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(max_envs_per_worker=50_000, max_envs=100_000)  # the point is memory, not capacity
    pids = [int(p) for p in re.findall(r"worker pid (\d+) has slot", srv.log())]
    peak = {pid: rss_mb(pid) for pid in pids}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], rss_mb(pid))
            time.sleep(0.02)

    def send(i: int) -> tuple[int, str]:
        body = BOMBS[i % len(BOMBS)]
        if i % 2:
            got = requests.post(
                srv.url + "/v2/envs",
                data=msgpack.packb(body),
                headers={"Content-Type": "application/msgpack"},
                timeout=120,
            )
        else:
            got = requests.post(srv.url + "/v2/envs", json=body, timeout=120)
        return got.status_code, got.json()["error"]["code"] if got.status_code >= 400 else ""

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, range(60)))
    finally:
        done.set()
        sampler.join()
    # Two threads rendering for the first time in one worker can both import pygame, and the loser sees a
    # half-imported module (missing_dependency): refused too, and a matter of envs.py, not of the bound.
    assert {status for status, _ in answers} == {422}
    assert {code for _, code in answers} <= {"answer_too_large", "missing_dependency"}
    assert sum(code == "answer_too_large" for _, code in answers) > len(answers) // 2
    assert max(peak.values()) < LIMIT_MB, f"worker RSS peaks in MB: {peak}"
    assert requests.get(srv.url + "/v2/envs", timeout=10).json()["envs"] == []
