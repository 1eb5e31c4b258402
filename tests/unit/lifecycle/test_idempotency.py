"""Idempotency keys of one worker: claimed, answered again, refused while in flight or for another body, forgotten."""

from __future__ import annotations

from typing import Any

import pytest

from gymserve.errors import IdempotencyInFlight, IdempotencyMismatch
from gymserve.lifecycle import idempotency


def test_a_key_is_claimed_once_then_answered_again_and_forgotten_with_its_env() -> None:
    keys = idempotency.Keys()
    asked = idempotency.digest("application/json", b'{"env_id": "CartPole-v1"}')
    assert keys.claim("k", asked) is None
    with pytest.raises(IdempotencyInFlight) as in_flight:
        keys.claim("k", asked)
    assert in_flight.value.status == 409 and in_flight.value.retryable
    keys.done("k", "env-1", {"instance_id": "env-1"})
    assert keys.claim("k", asked) == {"instance_id": "env-1"}
    with pytest.raises(IdempotencyMismatch):
        keys.claim("k", idempotency.digest("application/json", b'{"env_id": "Acrobot-v1"}'))
    keys.forget_env("env-1")
    assert len(keys) == 0 and keys.claim("k", asked) is None


def test_a_failed_create_releases_its_key() -> None:
    keys = idempotency.Keys()
    keys.claim("k", b"a")
    keys.release("k")
    assert keys.claim("k", b"b") is None


def test_every_worker_sends_a_key_to_the_same_slot() -> None:
    chosen = {f"key-{i}": idempotency.slot_of(f"key-{i}", [0, 1, 2, 3]) for i in range(200)}
    assert set(chosen.values()) == {0, 1, 2, 3}
    assert idempotency.slot_of("abc", [0, 1, 2, 3]) == idempotency.slot_of("abc", [0, 1, 2, 3])
    # A worker gone moves only its own keys.
    after = {key: idempotency.slot_of(key, [0, 1, 3]) for key in chosen}
    assert all(after[key] == slot for key, slot in chosen.items() if slot != 2)


def test_the_flask_app_answers_a_resend_with_the_same_env(client: Any) -> None:
    body = {"env_id": "CartPole-v1"}
    first = client.post("/v2/envs", json=body, headers={"Idempotency-Key": "abc"})
    again = client.post("/v2/envs", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == again.status_code == 201
    assert first.json["instance_id"] == again.json["instance_id"]
    assert client.delete(f"/v2/envs/{first.json['instance_id']}").status_code == 204


def test_a_key_passed_on_to_a_sibling_sends_resends_there_until_it_expires(monkeypatch: Any) -> None:
    keys = idempotency.Keys()
    assert keys.claim("k", b"a") is None
    keys.pass_on("k", 3, keep_seconds=60)
    assert keys.claim("k", b"a") == idempotency.PassedOn(3)
    with pytest.raises(IdempotencyMismatch):
        keys.claim("k", b"b")
    later = idempotency.time.monotonic() + 61
    monkeypatch.setattr(idempotency.time, "monotonic", lambda: later)
    assert keys.claim("k", b"a") is None, "an expired pass-on is forgotten"


def test_passed_on_keys_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(idempotency, "MAX_PASSED_ON", 3)
    keys = idempotency.Keys()
    for i in range(6):
        keys.claim(f"k{i}", b"a")
        keys.pass_on(f"k{i}", 1, keep_seconds=60)
    assert len(keys) <= 3
