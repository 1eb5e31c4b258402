"""A quota store that hangs (a real redis-server paused with SIGSTOP): creates answer 503 at once, never one by one.

One worker, so that the breaker the test watches is the one that answers every request.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from servers import Server, start_server
from stores import redis_process
from tenant_files import auth, write

pytestmark = pytest.mark.integration

A = auth("team-a")
TIMEOUT = 0.5  # GYMSERVE_STORE_TIMEOUT_SECONDS' default
SLACK = 0.1


def create(srv: Server) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = requests.post(srv.url + "/v2/envs", json={"env_id": "CartPole-v1"}, headers=A, timeout=30)
    return answer, time.monotonic() - started


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    tenants = write(tmp_path / "tenants.toml", **{"team-a": {"max_envs": 100}})
    with redis_process(tmp_path) as (url, redis):
        srv = start_server(tmp_path, workers=1, tenants_file=tenants, store_url=url, retry_after_seconds=2)
        try:
            yield srv, redis.pid
        finally:
            srv.stop()


def test_a_hanging_store_is_refused_fast_and_without_queueing_then_service_comes_back(
    farm: tuple[Server, int],
) -> None:
    srv, redis_pid = farm
    answer, _ = create(srv)
    assert answer.status_code == 201  # the store works, and the worker's connection to it is open
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(4) as pool:  # at once: each waits one timeout, side by side, not one after another
            first = list(pool.map(lambda _: create(srv), range(4)))
        for answer, took in first:
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "quota_store_unavailable"
            assert answer.headers["Retry-After"] == "2"
            assert took < TIMEOUT + SLACK, took
        for _ in range(5):  # the breaker is open: no call to the store, no wait
            answer, took = create(srv)
            assert answer.json()["error"]["code"] == "quota_store_unavailable"
            assert took < SLACK, took
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    deadline = time.monotonic() + 10  # after Retry-After, one trial call finds the store back
    while (answer := create(srv)[0]).status_code != 201:
        assert answer.json()["error"]["code"] == "quota_store_unavailable"
        assert time.monotonic() < deadline, "creates still refused 10 s after the store came back"
        time.sleep(0.2)
    assert create(srv)[0].status_code == 201
