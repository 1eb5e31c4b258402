"""Every /v2 answer is declared once (pipeline.answers): the OpenAPI document takes its schemas from there, the views
return the structs, and the answers built elsewhere for speed (resets, steps, errors) hold to them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import msgspec
import numpy as np
import orjson
import pytest

from gymserve import errors
from gymserve.api import openapi
from gymserve.codec import values
from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.envs import Envs
from gymserve.lifecycle.registry import EnvRecord
from gymserve.pipeline import answers, handler
from gymserve.pipeline.batch import Batches
from gymserve.pipeline.models import BatchItem, CreateRequest
from gymserve.settings import Settings


@pytest.fixture
def worker() -> Iterator[Envs]:
    core = Envs(Settings.from_env({}, node_id="test"))
    yield core
    core.registry.close_all()


def wire_fields(struct: type[msgspec.Struct]) -> list[str]:
    return list(struct.__struct_encode_fields__)


def held_to(tree: Any, struct: type[answers.Answer]) -> Any:
    """`tree` (an answer as it was sent, parsed) is exactly `struct`: its keys in its order, and its types."""
    assert isinstance(tree, dict) and list(tree) == [f for f in wire_fields(struct) if f in tree], struct.__name__
    return msgspec.convert(tree, struct)


# --- the document's answers are the structs ---


def test_the_openapi_answer_schemas_are_exactly_msgspecs_schemas_of_the_answers() -> None:
    _, components = msgspec.json.schema_components(answers.ANSWERS, ref_template=answers.REF)
    assert {answer.__name__ for answer in answers.ANSWERS} <= set(components)
    for name, schema in components.items():
        assert openapi.SCHEMAS[name] == schema, name


def test_every_answer_body_of_the_document_is_a_declared_answer() -> None:
    declared = {answer.__name__ for answer in answers.ANSWERS}
    refs = set()
    for path in openapi.DOCUMENT["paths"].values():
        for operation in path.values():
            if not isinstance(operation, dict):  # a path's shared parameters
                continue
            for status, response in operation["responses"].items():
                for media_type, content in response.get("content", {}).items():
                    if status.startswith("2") and (media_type == values.JSON or values.is_msgpack(media_type)):
                        refs.add(content["schema"].get("$ref", "").rsplit("/", 1)[-1])
    refs.discard("")  # /v2/openapi.json: the document itself
    step_result = {ref["$ref"].rsplit("/", 1)[1] for ref in openapi.SCHEMAS["StepResult"]["anyOf"]}
    assert refs - {"StepResult"} <= declared and step_result <= declared
    for response in openapi.RESPONSES.values():
        assert response["content"][values.JSON]["schema"] == {"$ref": answers.REF.format(name="Error")}


# --- structs on the wire ---


def test_a_struct_is_sent_as_its_fields_in_order_under_their_wire_names_without_unset_ones(worker: Envs) -> None:
    record = worker.create(CreateRequest("CartPole-v1", ttl=60), ANYONE)
    record.recent_episodes.append((12.5, 13))
    for media_type in (values.JSON, values.MSGPACK):
        tree = _tree(values.dumps(answers.info(record, worker.owner), media_type), media_type)
        assert "direct_url" not in tree and tree["last_episode"] == {"return": 12.5, "length": 13}
        held_to(tree, answers.EnvInfo)
        tree = _tree(values.dumps(answers.info(record, worker.owner, "http://replica-0:8000"), media_type), media_type)
        assert list(tree)[-1] == "direct_url" and tree["direct_url"] == "http://replica-0:8000"
        held_to(_tree(values.dumps(answers.summary(record), media_type), media_type), answers.EnvSummary)
    # Values inside a struct are native values as anywhere else: the Box's bounds stay float32 ndarrays.
    space = values.loads(values.dumps(answers.info(record, worker.owner), values.MSGPACK), values.MSGPACK)[
        "observation_space"
    ]
    assert space["low"].dtype == np.float32


def test_a_summary_is_the_first_part_of_an_info_in_the_same_order() -> None:
    summary, info = wire_fields(answers.EnvSummary), wire_fields(answers.EnvInfo)
    assert info[: len(summary)] == summary


# --- what is built on the hot path holds to its struct ---


def _tree(body: bytes, media_type: str) -> Any:
    return msgpack.unpackb(body) if values.is_msgpack(media_type) else orjson.loads(body)


def _run(worker: Envs, kind: str, record: EnvRecord, body: dict[str, Any], accept: str) -> Any:
    call = handler.Call("v2", kind, record.instance_id, orjson.dumps(body), values.JSON, None, accept)
    status, _, out = handler.run(worker, call, ANYONE)
    assert status == 200, out
    return _tree(out, accept)


@pytest.mark.parametrize("accept", [values.JSON, values.MSGPACK])
@pytest.mark.parametrize(
    ("made", "action"),
    [
        (CreateRequest("CartPole-v1"), 1),
        (CreateRequest("FrozenLake-v1"), 2),
        (CreateRequest("MountainCarContinuous-v0"), [0.5]),
        (CreateRequest("CartPole-v1", num_envs=3), [1, 0, 1]),
        (CreateRequest("CartPole-v1", num_envs=2, autoreset_mode="same_step"), [1, 1]),
        (CreateRequest("CartPole-v1", num_envs=2, autoreset_mode="disabled"), [0, 1]),
    ],
    ids=["discrete", "toy-text", "box-action", "vector", "same-step", "disabled"],
)
def test_every_kind_of_env_answers_resets_and_steps_as_declared(
    worker: Envs, made: CreateRequest, action: Any, accept: str
) -> None:
    record = worker.create(msgspec.structs.replace(made, ttl=60), ANYONE)
    step_answer = answers.StepAnswer if made.num_envs is None else answers.VectorStepAnswer
    held_to(_run(worker, "reset", record, {"seed": 3, "seq": 1}, accept), answers.ResetAnswer)
    held_to(_run(worker, "step", record, {"action": action, "seq": 2}, accept), step_answer)
    held_to(_run(worker, "step", record, {"action": action}, accept), step_answer)  # unnumbered
    held_to(_run(worker, "reset", record, {}, accept), answers.ResetAnswer)
    # A batch item is the same step: its answer (a value, not yet bytes) holds to the same struct.
    (item,) = Batches(worker, None).step([BatchItem(record.instance_id, action, seq=5)], ANYONE)
    held_to(values.to_wire(item, binary=True), step_answer)
    held_to(values.to_wire(answers.BatchStepAnswer([item]), binary=True)["results"][0], step_answer)


@pytest.mark.parametrize(
    "err",
    [
        errors.InvalidValue("seq", "bad"),
        errors.SequenceConflict("no", expected=2, got=5),
        errors.CapacityExceeded("full", retry_after=1),
        errors.Internal(),
        errors.RoutingError(405, "method_not_allowed", "no"),
    ],
    ids=lambda err: err.code,
)
def test_every_error_body_holds_to_the_error_struct(err: errors.GymServeError) -> None:
    held_to(orjson.loads(orjson.dumps(errors.error_body(err, native=True))), answers.Error)
    status, _, body = errors.error_reply(err, native=True)
    assert held_to(orjson.loads(body), answers.Error).error.code == err.code and status == err.status


# --- the error table is the error classes' ---


def _error_classes() -> list[type[errors.GymServeError]]:
    found, pending = [], list(errors.GymServeError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_is_in_the_openapi_error_table_with_its_status_code_and_headers(
    cls: type[errors.GymServeError],
) -> None:
    sent = (
        [(status, code) for status, (code, _) in errors.RoutingError.CODES.items()]
        if cls is errors.RoutingError
        else [(cls.status, cls.code)]
    )
    for status, code in sent:
        response = openapi.RESPONSES[str(status)]
        row = f"{code}{' (retryable)' if cls.retryable else ''}: "
        assert row in response["description"], (status, code)
        assert set(cls.answer_headers) <= set(response.get("headers", {})), (status, code)
        assert any(
            (k.status, k.code, k.fault, k.retryable) == (status, code, cls.fault, cls.retryable) for k in errors.table()
        )


def test_the_error_table_has_no_row_that_no_class_sends_and_every_row_says_when() -> None:
    sent = {(cls.status, cls.code) for cls in _error_classes() if cls is not errors.RoutingError}
    sent |= {(status, code) for status, (code, _) in errors.RoutingError.CODES.items()}
    assert {(kind.status, kind.code) for kind in errors.table()} == sent
    assert {int(status) for status in openapi.RESPONSES} == {status for status, _ in sent}
    assert all(kind.text.strip() for kind in errors.table()), "every error class says when it is sent"


def test_the_headers_an_error_class_declares_are_the_headers_its_answers_carry() -> None:
    examples = [
        errors.CapacityExceeded("full", retry_after=3),
        errors.RateLimited("team", 10, 4),
        errors.Unauthorized(),
        errors.QuotaExceeded("team", 1, 1, 1),
        errors.UnknownInstance("x"),
    ]
    for err in examples:
        assert set(err.headers) == set(type(err).answer_headers), type(err).__name__
