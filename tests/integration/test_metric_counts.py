"""Metrics off the hot path, on a real two-worker server: a scrape counts every step answered before it began,
whichever worker took the step and whichever answers the scrape (tallies.py: the step path's counts are flushed
in the background, and a scrape waits for every worker's flush that began after it)."""

from __future__ import annotations

import re
from typing import Any

import requests

from servers import slot_of

STEP_REQUESTS = (
    r"^gymserve_http_request_duration_seconds_count"
    + rf'\{{method="POST",route="{re.escape("/v2/envs/<instance_id>/step")}",status="200"\}} (\S+)$'
)


def counted(text: str, pattern: str) -> float:
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_every_scrape_counts_every_step_answered_before_it(make_server: Any) -> None:
    srv = make_server(workers=2)
    session = requests.Session()
    ids: dict[int, str] = {}
    while len(ids) < 2:  # an env on each worker
        iid = session.post(f"{srv.url}/v2/envs", json={"env_id": "CartPole-v1"}, timeout=30).json()["instance_id"]
        ids.setdefault(slot_of(iid), iid)
        session.post(f"{srv.url}/v2/envs/{iid}/reset", json={"seed": 1}, timeout=30)
    steps = 0
    for round_ in range(30):
        iid = ids[round_ % 2]
        for _ in range(3):
            answer = session.post(f"{srv.url}/v2/envs/{iid}/step", json={"action": 0}, timeout=30).json()
            steps += 1
            if answer["terminated"] or answer["truncated"]:
                session.post(f"{srv.url}/v2/envs/{iid}/reset", json={}, timeout=30)
        # A fresh connection: either worker answers, and the step a moment ago may be the other's.
        text = requests.get(srv.url + "/metrics", headers={"Connection": "close"}, timeout=30).text
        assert counted(text, r'^gymserve_steps_total\{env_id="CartPole-v1"\} (\S+)$') == steps, round_
        assert counted(text, r'^gymserve_tenant_steps_total\{tenant="anonymous"\} (\S+)$') == steps, round_
        assert counted(text, r'^gymserve_step_duration_seconds_count\{env_id="CartPole-v1"\} (\S+)$') == steps
        assert counted(text, STEP_REQUESTS) == steps, round_
