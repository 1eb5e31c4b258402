"""Numbered resets and steps: a resend of the last number is answered again, never run twice; anything else is a 409."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from gymserve.codec import values as native
from gymserve.errors import EnvFailed, SequenceConflict
from gymserve.lifecycle.registry import EnvRecord
from gymserve.pipeline import models
from gymserve.pipeline.sequencing import answer_bytes, answer_payload, request_digest

JSON, MSGPACK = native.JSON, native.MSGPACK
STEP = request_digest("step", 1)


class Env:
    """Stands in for an env: counts the calls that really ran and answers with a fresh observation each time."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> dict[str, Any]:
        self.runs += 1
        return {"observation": np.full(3, self.runs, dtype=np.float32), "reward": 1.0, "info": {}}


@pytest.fixture
def record() -> EnvRecord:
    return EnvRecord(instance_id="n.0-0." + "0" * 32, env_id="CartPole-v1", env=None, ttl=0)


@pytest.fixture
def env() -> Env:
    return Env()


def conflict(record: EnvRecord, seq: int, digest: bytes = STEP) -> SequenceConflict:
    with pytest.raises(SequenceConflict) as raised:
        answer_bytes(record, seq, digest, JSON, Env())
    return raised.value


def test_the_first_numbered_call_is_seq_1(record: EnvRecord, env: Env) -> None:
    answer = native.loads(answer_bytes(record, 1, STEP, JSON, env), JSON)
    assert answer["seq"] == 1 and record.seq == 1 and env.runs == 1
    assert np.array_equal(answer["observation"], np.full(3, 1, dtype=np.float32))


def test_a_resend_of_the_last_seq_is_the_same_bytes_without_running_again(record: EnvRecord, env: Env) -> None:
    first = answer_bytes(record, 1, STEP, MSGPACK, env)
    again = answer_bytes(record, 1, STEP, MSGPACK, env)
    assert again is first and env.runs == 1 and record.seq == 1  # the kept bytes themselves, not re-encoded
    second = answer_bytes(record, 2, STEP, MSGPACK, env)
    assert native.loads(second, MSGPACK)["seq"] == 2 and env.runs == 2
    assert answer_bytes(record, 2, STEP, MSGPACK, env) == second and env.runs == 2


@pytest.mark.parametrize(("first", "then"), [(JSON, MSGPACK), (MSGPACK, JSON)])
def test_a_resend_in_another_media_type_is_reencoded_not_rerun(
    record: EnvRecord, env: Env, first: str, then: str
) -> None:
    original = native.loads(answer_bytes(record, 1, STEP, first, env), first)
    resent = answer_bytes(record, 1, STEP, then, env)
    answer = native.loads(resent, then)  # fails unless the bytes really are `then`
    assert env.runs == 1 and answer["seq"] == 1
    assert answer["observation"].dtype == np.float32 and np.array_equal(answer["observation"], original["observation"])


def test_a_different_request_with_the_last_seq_is_a_conflict(record: EnvRecord, env: Env) -> None:
    answer_bytes(record, 1, STEP, JSON, env)
    err = conflict(record, 1, request_digest("step", 0))
    assert err.status == 409 and err.code == "sequence_conflict"
    assert err.details == {"field": "seq", "expected": 2, "got": 1}
    assert "seq 2" in err.message and env.runs == 1


def test_past_and_future_seqs_are_conflicts_that_say_which_seq_is_next(record: EnvRecord, env: Env) -> None:
    for seq in (1, 2, 3):
        answer_bytes(record, seq, STEP, JSON, env)
    past = conflict(record, 1)
    assert past.details == {"field": "seq", "expected": 4, "got": 1} and "in the past" in past.message
    future = conflict(record, 5)
    assert future.details == {"field": "seq", "expected": 4, "got": 5} and "in the future" in future.message
    assert record.seq == 3 and env.runs == 3


def test_a_first_call_that_skips_seq_1_is_a_conflict(record: EnvRecord) -> None:
    assert conflict(record, 2).details == {"field": "seq", "expected": 1, "got": 2}


def test_an_error_uses_no_number(record: EnvRecord, env: Env) -> None:
    answer_bytes(record, 1, STEP, JSON, env)

    def fails() -> dict[str, Any]:
        raise EnvFailed("the env raised")

    with pytest.raises(EnvFailed):
        answer_bytes(record, 2, STEP, JSON, fails)
    assert record.seq == 1
    assert native.loads(answer_bytes(record, 1, STEP, JSON, env), JSON)["seq"] == 1  # still resendable
    assert native.loads(answer_bytes(record, 2, STEP, JSON, env), JSON)["seq"] == 2  # 2 is still next


def test_calls_without_seq_run_every_time_count_and_keep_no_answer(record: EnvRecord, env: Env) -> None:
    answer_bytes(record, 1, STEP, JSON, env)
    for n in (2, 3):
        assert native.loads(answer_bytes(record, None, b"", JSON, env), JSON)["seq"] == n
    assert env.runs == 3 and record.seq == 3 and record.last_answer is None
    err = conflict(record, 3)  # the last call cannot be resent: nothing of it was kept
    assert err.details == {"field": "seq", "expected": 4, "got": 3} and "cannot be resent" in err.message


def test_answer_payload_numbers_and_resends_like_answer_bytes(record: EnvRecord, env: Env) -> None:
    first = answer_payload(record, 1, STEP, env)
    again = answer_payload(record, 1, STEP, env)
    assert env.runs == 1 and first["seq"] == again["seq"] == 1
    assert again["observation"].dtype == np.float32 and np.array_equal(again["observation"], first["observation"])
    with pytest.raises(SequenceConflict):
        answer_payload(record, 1, request_digest("step", 0), env)
    assert answer_payload(record, None, b"", env)["seq"] == 2 and record.last_answer is None


def test_a_batch_items_answer_can_be_resent_through_the_single_env_route(record: EnvRecord, env: Env) -> None:
    """A step numbered in a batch and resent alone (or the other way round) is the same call."""
    kept = answer_payload(record, 1, STEP, env)
    resent = native.loads(answer_bytes(record, 1, STEP, JSON, env), JSON)
    assert env.runs == 1 and resent["seq"] == 1 and np.array_equal(resent["observation"], kept["observation"])
    answer_bytes(record, 2, STEP, JSON, env)
    assert answer_payload(record, 2, STEP, env)["seq"] == 2 and env.runs == 2


# --- request_digest ---


def decoded_action(body: dict[str, Any], media_type: str) -> Any:
    """The action as the handler sees it: the body encoded in `media_type`, then decoded by the one model."""
    raw = msgpack.packb(body, use_bin_type=True) if media_type == MSGPACK else native.dumps(body, JSON)
    return models.decode(raw, media_type, models.StepRequest).action


@pytest.mark.parametrize(
    "action",
    [
        1,
        0.25,
        [1, 0, 2],
        {"$nd": {"dtype": "float32", "shape": [2, 2], "data": [0.5, -1.0, 3.25, 0.0]}},
        {"$tuple": [1, {"$nd": {"dtype": "int64", "shape": [2], "data": [3, 4]}}]},
        {"move": 1, "aim": {"$nd": {"dtype": "float32", "shape": [1], "data": [0.5]}}},
    ],
    ids=["int", "float", "list", "ndarray", "tuple", "dict"],
)
def test_the_digest_is_of_the_value_not_of_how_it_was_encoded(action: Any) -> None:
    from_json = decoded_action({"action": action}, JSON)
    wire = native.to_wire(from_json, binary=True)  # the same value in msgpack's form: $nd data as bytes
    from_msgpack = decoded_action({"action": wire}, MSGPACK)
    assert request_digest("step", from_json) == request_digest("step", from_msgpack)


def test_the_digest_does_not_depend_on_the_order_of_map_keys() -> None:
    """Maps have no order: a client whose maps iterate in another order (Go, a proxy) resends the same call."""
    assert request_digest("reset", [1, {"a": 1, "b": [2]}]) == request_digest("reset", [1, {"b": [2], "a": 1}])
    assert request_digest("step", {"x": 1, "y": 0}) == request_digest("step", {"y": 0, "x": 1})


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("step", 1), ("step", 0)),
        (("step", 1), ("reset", 1)),
        (("step", np.array([1, 2], dtype=np.int64)), ("step", np.array([1, 2], dtype=np.int32))),
        (("step", np.array([1, 2, 3, 4])), ("step", np.array([[1, 2], [3, 4]]))),
        (("step", (1, 2)), ("step", [1, 2])),
        (("reset", [1, None]), ("reset", [2, None])),
        (("reset", [1, {"a": 1}]), ("reset", [1, {"a": 2}])),
    ],
    ids=["action", "kind", "dtype", "shape", "tuple-vs-list", "seed", "options"],
)
def test_the_digest_differs_for_different_calls(one: tuple[str, Any], other: tuple[str, Any]) -> None:
    assert request_digest(*one) != request_digest(*other)
