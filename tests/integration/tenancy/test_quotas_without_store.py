"""Quotas without GYMSERVE_STORE_URL on a real 2-worker server: they hold for the server, not per worker.

Creates go at once on fresh connections, so both workers take some: counted per worker, as before, the
server gave a 4th env to a tenant with max_envs = 3 and 7 creates of 7 with creates_per_minute = 5.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from servers import free_port, start_server
from tenant_files import auth, write

pytestmark = pytest.mark.integration

A = auth("team-a")


def create(url: str) -> requests.Response:
    return requests.post(url + "/v2/envs", json={"env_id": "CartPole-v1"}, headers=A, timeout=30)


def creates_at_once(url: str, n: int) -> list[requests.Response]:
    with ThreadPoolExecutor(n) as pool:  # at once, on fresh connections: both workers take some
        return list(pool.map(lambda _: create(url), range(n)))


def test_max_envs_holds_for_the_whole_server(tmp_path: Path) -> None:
    tenants = write(tmp_path / "tenants.toml", **{"team-a": {"max_envs": 3}})
    srv = start_server(tmp_path, tenants_file=tenants)
    try:
        answers = [a for _ in range(4) for a in creates_at_once(srv.url, 4)]
        made = [a.json()["instance_id"] for a in answers if a.status_code == 201]
        refused = [a.json()["error"]["code"] for a in answers if a.status_code != 201]
        assert len(made) == 3, [a.status_code for a in answers]
        assert set(refused) == {"quota_exceeded"}
        requests.delete(f"{srv.url}/v2/envs/{made[0]}", headers=A, timeout=30)
        again = [a.status_code for a in creates_at_once(srv.url, 4)]
        assert sorted(again) == [201, 429, 429, 429]
    finally:
        srv.stop()


def test_creates_per_minute_holds_for_the_whole_server(tmp_path: Path) -> None:
    tenants = write(tmp_path / "tenants.toml", **{"team-a": {"creates_per_minute": 5}})
    srv = start_server(tmp_path, tenants_file=tenants)
    try:
        answers = [a for _ in range(2) for a in creates_at_once(srv.url, 4)]
        made = [a.json()["instance_id"] for a in answers if a.status_code == 201]
        assert len(made) == 5, [a.status_code for a in answers]
        assert {a.json()["error"]["code"] for a in answers if a.status_code != 201} == {"rate_limited"}
    finally:
        srv.stop()


def test_parked_envs_count_against_max_envs_and_read_as_unknown_to_another_tenant(tmp_path: Path) -> None:
    tenants = write(tmp_path / "tenants.toml", **{"team-a": {"max_envs": 3}})
    port = free_port()
    srv = start_server(tmp_path, port=port, tenants_file=tenants)
    made = [create(srv.url).json()["instance_id"] for _ in range(3)]
    srv.stop()  # all three parked
    srv = start_server(tmp_path, port=port, tenants_file=tenants)
    try:
        refused = create(srv.url)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded", refused.text
        reset = requests.post(f"{srv.url}/v2/envs/{made[0]}/reset", json={}, headers=A, timeout=30)
        assert reset.status_code == 200  # adopted: it was admitted when it was made
        assert create(srv.url).status_code == 429  # one live and two parked: still three
        # Another tenant asking for a parked id is answered as for an id that never was, of the same shape.
        b = auth("team-b")
        never = made[1][:-32] + "0" * 32
        theirs = requests.post(f"{srv.url}/v2/envs/{made[1]}/reset", json={}, headers=b, timeout=30)
        nothing = requests.post(f"{srv.url}/v2/envs/{never}/reset", json={}, headers=b, timeout=30)
        assert (
            theirs.status_code == nothing.status_code
            and theirs.json()["error"]["code"] == nothing.json()["error"]["code"]
        )
        assert requests.delete(f"{srv.url}/v2/envs/{made[0]}", headers=A, timeout=30).status_code == 204
        assert create(srv.url).status_code == 201
    finally:
        srv.stop()
