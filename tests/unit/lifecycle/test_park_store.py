"""The park store's rules, on the directory store and on a real Redis: one claim wins, records are bound."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gymserve.lifecycle.copies import Sealer
from gymserve.lifecycle.parking import DirStore, Parked, ParkStore, RedisStore
from gymserve.settings import SettingsError
from stores import redis_server


def _claim(path: str, instance_id: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(DirStore(path).claim(instance_id) is not None)


def test_two_processes_claim_one_parked_env_and_exactly_one_gets_it(tmp_path: Path) -> None:
    store = DirStore(str(tmp_path))
    for round_ in range(20):
        instance_id = f"n.0-1.{round_:032x}"
        store.put(instance_id, Parked("team", "CartPole-v1", blob=b"x"))
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        racers = [multiprocessing.Process(target=_claim, args=(str(tmp_path), instance_id, out)) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(10)
        assert sorted(out.get(timeout=5) for _ in racers) == [False, True]
        where = store.where(instance_id)
        assert where is not None and where.state == "moving"


def test_a_record_opens_only_under_the_id_and_tenant_it_was_sealed_for() -> None:
    sealer = Sealer(b"k" * 32, 1 << 20)
    blob = sealer.seal({"state": 1}, b"parked\0a\0team")
    assert sealer.open(blob, b"parked\0a\0team", dict) == {"state": 1}
    from gymserve.errors import InvalidSnapshot

    for other in (b"parked\0b\0team", b"parked\0a\0other", b""):
        with pytest.raises(InvalidSnapshot):
            sealer.open(blob, other, dict)


def test_the_farm_key_comes_from_a_file_too(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s" * 40 + "\n")
    assert Sealer.from_environ(1024, {"GYMSERVE_SNAPSHOT_KEY_FILE": str(key)}).enabled
    key.write_text("short")
    with pytest.raises(SettingsError):
        Sealer.from_environ(1024, {"GYMSERVE_SNAPSHOT_KEY_FILE": str(key)})
    with pytest.raises(SettingsError):
        Sealer.from_environ(1024, {"GYMSERVE_SNAPSHOT_KEY_FILE": str(tmp_path / "missing")})


@pytest.fixture(params=["dir", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ParkStore]:
    if request.param == "dir":
        yield DirStore(str(tmp_path / "parked"))
        return
    with redis_server(tmp_path) as url:
        yield RedisStore(url)


def test_a_parked_env_is_listed_claimed_once_settled_and_forgotten_in_either_store(store: ParkStore) -> None:
    facts = Parked("team", "CartPole-v1", {"run": "a"}, time.time() + 60, b"blob", 3, {"state": "parked", "seq": 4})
    store.put("n.0-1." + "a" * 32, facts)
    store.put("n.0-1." + "b" * 32, Parked("other", "CartPole-v1", {}, 0.0, b"x", 1, {"state": "parked"}))
    [(listed_id, listed)] = store.parked("team")
    assert listed_id == "n.0-1." + "a" * 32 and listed.labels == {"run": "a"} and listed.summary["seq"] == 4
    assert store.count() == 2 and store.count_of("team") == 3
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: store.claim(listed_id), range(8)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].blob == b"blob" and won[0].summary["seq"] == 4 and won[0].weight == 3
    found = store.where(listed_id)
    assert found is not None and found.state == "moving"
    assert store.parked("team") == [] and store.count() == 1
    store.settle(listed_id, "n.1-2")
    found = store.where(listed_id)
    assert found is not None and (found.state, found.holder) == ("held", "n.1-2")
    store.forget(listed_id)
    assert store.where(listed_id) is None
    store.lose("n.0-1." + "b" * 32, "not_movable")
    found = store.where("n.0-1." + "b" * 32)
    assert found is not None and (found.state, found.reason) == ("lost", "not_movable")


def test_the_store_asks_for_its_password_and_gymserve_gives_it_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from gymserve.tenancy.store import RedisStore as QuotaStore

    with redis_server(tmp_path, password="p" * 32) as url:
        monkeypatch.delenv("GYMSERVE_STORE_PASSWORD", raising=False)
        with pytest.raises(redis.AuthenticationError):  # a client without it is refused
            RedisStore(url).count()
        monkeypatch.setenv("GYMSERVE_STORE_PASSWORD", "p" * 32)
        assert RedisStore(url).count() == 0
        assert QuotaStore(url).usage("team") == 0
        monkeypatch.delenv("GYMSERVE_STORE_PASSWORD")
        (tmp_path / "password").write_text("p" * 32 + "\n")
        monkeypatch.setenv("GYMSERVE_STORE_PASSWORD_FILE", str(tmp_path / "password"))
        assert RedisStore(url).count() == 0
