"""Lists with GYMSERVE_PEERS_DNS: every replica's envs, asked once of each address the name resolves to."""

from __future__ import annotations

from typing import Any

import pytest

from gymserve.app import create_app
from gymserve.routing import peers
from gymserve.settings import Settings

ADDRESSES = {"10.0.0.1": "replica-a", "10.0.0.2": "replica-b"}


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    apps = {
        node: create_app(Settings.from_env({"GYMSERVE_PEERS_DNS": "farm.test"}, node_id=node)).test_client()
        for node in ADDRESSES.values()
    }
    asked: list[tuple[str, str]] = []

    def ask(settings: Settings, address: str, path: str, headers: dict[str, str], method: str = "GET") -> bytes | None:
        asked.append((address, path) if method == "GET" else (method, address, path))
        resp = apps[ADDRESSES[address]].open(path, method=method, headers={**headers, peers.FANOUT_HEADER: "1"})
        return resp.data if resp.status_code == 200 else None

    # The name resolves to both replicas, the asking one included (its answer merges with its own by id).
    monkeypatch.setattr(peers, "addresses", lambda settings: sorted(ADDRESSES))
    monkeypatch.setattr(peers, "_ask", ask)
    return {**apps, "asked": asked}


def test_lists_show_the_envs_of_every_replica_once(farm: dict[str, Any]) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    mine = a.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    theirs = b.post("/v2/envs", json={"env_id": "FrozenLake-v1"}).json["instance_id"]
    listed = a.get("/v2/envs").json["envs"]
    assert sorted(e["instance_id"] for e in listed) == sorted([mine, theirs])
    assert a.get("/v1/envs/").json["all_envs"] == {mine: "CartPole-v1", theirs: "FrozenLake-v1"}
    # Each replica asked once per list, and none of them asked further.
    both = ("10.0.0.1", "10.0.0.2")
    assert farm["asked"] == [(a, "/v2/envs") for a in both] + [(a, "/v1/envs/") for a in both]


def test_a_replica_asked_by_another_lists_its_own_only(farm: dict[str, Any]) -> None:
    b = farm["replica-b"]
    b.post("/v2/envs", json={"env_id": "CartPole-v1"})
    assert len(b.get("/v2/envs", headers={peers.FANOUT_HEADER: "1"}).json["envs"]) == 1
    assert farm["asked"] == []


def test_without_peers_dns_a_list_is_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    client = create_app(Settings.from_env({}, node_id="alone")).test_client()
    client.post("/v2/envs", json={"env_id": "CartPole-v1"})
    assert peers.addresses(Settings.from_env({}, node_id="alone")) == []
    assert len(client.get("/v2/envs").json["envs"]) == 1


def test_a_bulk_delete_closes_the_matching_envs_of_every_replica_once(farm: dict[str, Any]) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    run = {"env_id": "CartPole-v1", "labels": {"run": "r7"}}
    made = [a.post("/v2/envs", json=run).json["instance_id"], b.post("/v2/envs", json=run).json["instance_id"]]
    kept = b.post("/v2/envs", json={"env_id": "CartPole-v1", "labels": {"run": "other"}}).json["instance_id"]
    assert a.delete("/v2/envs?label=run=r7").json == {"deleted": 2}  # a's own, and b's through its name
    assert [a.get(f"/v2/envs/{iid}").status_code for iid in made[:1]] == [404]
    assert b.get(f"/v2/envs/{made[1]}").status_code == 404 and b.get(f"/v2/envs/{kept}").status_code == 200
    assert ("DELETE", "10.0.0.2", "/v2/envs?label=run=r7") in farm["asked"]


def pages(client: Any, query: str = "") -> list[list[str]]:
    """Every page of GET /v2/envs, following next_cursor."""
    got, cursor = [], None
    while True:
        params = query + (f"&cursor={cursor}" if cursor else "")
        answer = client.get(f"/v2/envs?{params}").json
        got.append([e["instance_id"] for e in answer["envs"]])
        cursor = answer["next_cursor"]
        if cursor is None:
            return got
        assert cursor == got[-1][-1] and len(got) < 50


def test_a_cursor_pages_the_merged_list_of_every_replica_in_id_order_once(farm: dict[str, Any]) -> None:
    a, b = farm["replica-a"], farm["replica-b"]
    made = [c.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"] for c in [a] * 7 + [b] * 6]
    for client in (a, b):
        got = pages(client, "limit=3")
        assert [len(p) for p in got[:-1]] == [3] * 4 and 1 <= len(got[-1]) <= 3
        flat = [i for p in got for i in p]
        assert flat == sorted(made)  # every env once, in id order, across replicas
    whole = a.get("/v2/envs").json  # no limit: the default page holds all 13
    assert [e["instance_id"] for e in whole["envs"]] == sorted(made) and whole["next_cursor"] is None
    assert set(a.get("/v1/envs/").json["all_envs"]) == set(made)  # /v1 lists as the seed did: no pages


def test_without_a_limit_the_answer_is_one_page_of_the_maximum_and_names_the_next() -> None:
    client = create_app(Settings.from_env({"GYMSERVE_LIST_MAX_PAGE": "4"}, node_id="t")).test_client()
    made = sorted(client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"] for _ in range(6))
    first = client.get("/v2/envs").json
    assert [e["instance_id"] for e in first["envs"]] == made[:4] and first["next_cursor"] == made[3]
    assert [i for p in pages(client) for i in p] == made
    for limit in ("5", "0", "-1", "abc", "\u00b2", "9" * 5000):
        resp = client.get("/v2/envs", query_string={"limit": limit})
        assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "limit", limit
    resp = client.get("/v2/envs", query_string={"cursor": "x" * 201})
    assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "cursor"


def test_a_replica_whose_syns_are_dropped_is_left_out_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica a network policy cuts off (SYNs dropped, in a namespace of the test's own) costs a list
    GYMSERVE_PEER_CONNECT_TIMEOUT_SECONDS, not the read timeout."""
    import time

    import netns

    with netns.namespace() as ns:
        ns.iptables("-A", "INPUT", "-p", "tcp", "--dport", "8000", "-j", "DROP")
        settings = Settings.from_env(
            {"GYMSERVE_PEERS_DNS": "farm.test", "GYMSERVE_PEER_CONNECT_TIMEOUT_SECONDS": "0.5"}, node_id="replica-a"
        )
        monkeypatch.setattr(peers, "addresses", lambda settings: [ns.address])
        start = time.monotonic()
        assert ns.run(lambda: peers.ask_all(settings, "/v2/envs", {})) == []
        assert time.monotonic() - start < 0.5 + 2.0
