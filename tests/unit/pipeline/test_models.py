"""The request bodies, declared once: /v2's strict decode, /v1's lenient one, settings limits, the OpenAPI schemas."""

from __future__ import annotations

import math
from typing import Any

import jsonschema
import msgpack
import msgspec
import numpy as np
import orjson
import pytest

from gymserve.api import openapi
from gymserve.codec import values as native
from gymserve.errors import BadRequest, GymServeError, InvalidValue, MalformedEnvId, MissingParameter
from gymserve.pipeline import models
from gymserve.pipeline.models import (
    BatchStepRequest,
    Body,
    CreateRequest,
    ResetRequest,
    StepRequest,
    check_limits,
    decode,
    decode_v1,
)
from gymserve.settings import Settings

JSON, MSGPACK = native.JSON, native.MSGPACK


def encoded(body: Any, media_type: str) -> bytes:
    return msgpack.packb(body, use_bin_type=True) if native.is_msgpack(media_type) else orjson.dumps(body)


def refused(raw: bytes, model: type[Body], media_type: str = JSON, *, required: bool = False) -> GymServeError:
    with pytest.raises(GymServeError) as raised:
        decode(raw, media_type, model, required=required)
    return raised.value


def refused_v1(raw: bytes, model: type[Body], *, required: bool = False) -> GymServeError:
    with pytest.raises(GymServeError) as raised:
        decode_v1(raw, model, required=required)
    return raised.value


# --- /v2: decode ---


@pytest.mark.parametrize("media_type", [JSON, MSGPACK, "application/x-msgpack"])
def test_a_step_decodes_from_json_or_msgpack_with_a_native_action(media_type: str) -> None:
    action = {"$nd": {"dtype": "float32", "shape": [2], "data": [0.5, -1.0]}}
    wire = native.to_wire(native.from_wire(action), binary=True) if native.is_msgpack(media_type) else action
    step = decode(encoded({"action": wire, "seq": 3}, media_type), media_type, StepRequest, required=True)
    assert step.seq == 3 and step.action.dtype == np.float32 and step.action.tolist() == [0.5, -1.0]


def test_values_become_native_in_every_field_that_holds_them() -> None:
    create = decode(b'{"env_id": "x", "kwargs": {"size": {"$tuple": [2, 3]}}}', JSON, CreateRequest)
    assert create.kwargs == {"size": (2, 3)}
    reset = decode(
        b'{"options": {"mask": {"$nd": {"dtype": "bool", "shape": [2], "data": [true, false]}}}}', JSON, ResetRequest
    )
    assert reset.options is not None and reset.options["mask"].dtype == np.bool_
    batch = decode(b'{"items": [{"id": "a", "action": {"$tuple": [1]}}]}', JSON, BatchStepRequest)
    assert batch.items[0].action == (1,)


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (StepRequest, {"action": 1, "extra": 1}, "extra"),
        (ResetRequest, {"sed": 1}, "sed"),
        (CreateRequest, {"env_id": "x", "ttl_seconds": 5}, "ttl_seconds"),
        (BatchStepRequest, {"items": [{"id": "a", "action": 1}, {"id": "b", "action": 1, "sed": 2}]}, "items[1].sed"),
        (BatchStepRequest, {"items": [{"id": "a", "action": 1}], "atomic": True}, "atomic"),
    ],
)
@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_unknown_fields_are_refused_naming_the_field_path(
    model: type[Body], body: dict[str, Any], field: str, media_type: str
) -> None:
    err = refused(encoded(body, media_type), model, media_type)
    assert isinstance(err, InvalidValue) and err.status == 422 and err.details == {"field": field}
    assert "unknown field; this request takes " in err.message


def test_an_unknown_item_field_lists_the_items_fields_not_the_batchs() -> None:
    err = refused(b'{"items": [{"id": "a", "action": 1, "sed": 2}]}', BatchStepRequest)
    assert err.message.endswith("this request takes action, id, seq")


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (StepRequest, {"action": 1, "seq": 0}, "seq"),
        (StepRequest, {"action": 1, "seq": -1}, "seq"),
        (StepRequest, {"action": 1, "seq": 2**63}, "seq"),
        (StepRequest, {"action": 1, "seq": "2"}, "seq"),
        (StepRequest, {"action": 1, "seq": True}, "seq"),
        (StepRequest, {"action": 1, "seq": 1.0}, "seq"),
        (ResetRequest, {"seed": -1}, "seed"),
        (ResetRequest, {"seed": 2**63}, "seed"),
        (ResetRequest, {"seed": 1.5}, "seed"),
        (ResetRequest, {"seed": [1, -1]}, "seed[1]"),
        (ResetRequest, {"options": [1]}, "options"),
        (CreateRequest, {"env_id": "x", "ttl": 0}, "ttl"),
        (CreateRequest, {"env_id": "x", "ttl": -5}, "ttl"),
        (CreateRequest, {"env_id": "x", "ttl": math.inf}, "ttl"),
        (CreateRequest, {"env_id": "x", "ttl": math.nan}, "ttl"),
        (CreateRequest, {"env_id": "x", "max_episode_steps": 0}, "max_episode_steps"),
        (CreateRequest, {"env_id": "x", "num_envs": 0}, "num_envs"),
        (CreateRequest, {"env_id": "x", "auto_reset": 1}, "auto_reset"),
        (CreateRequest, {"env_id": "x", "wrappers": ["Nope"]}, "wrappers[0]"),
        (CreateRequest, {"env_id": "x", "autoreset_mode": "sometimes"}, "autoreset_mode"),
        (BatchStepRequest, {"items": []}, "items"),
        (BatchStepRequest, {"items": [{"id": "a", "action": 1}, {"id": "b", "action": 1, "seq": 0}]}, "items[1].seq"),
        (BatchStepRequest, {"items": [{"id": 7, "action": 1}]}, "items[0].id"),
    ],
)
def test_types_and_ranges_are_refused_with_a_422_naming_the_field(
    model: type[Body], body: dict[str, Any], field: str
) -> None:
    err = refused(encoded(body, MSGPACK), model, MSGPACK)  # msgpack: it can carry inf and nan
    assert isinstance(err, InvalidValue) and err.status == 422 and err.details == {"field": field}


def test_a_json_ttl_beyond_any_float_is_refused_naming_ttl() -> None:
    err = refused(b'{"env_id": "x", "ttl": 1e400}', CreateRequest)
    assert err.status == 422 and err.details == {"field": "ttl"}


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (StepRequest, {"seq": 1}, "action"),
        (CreateRequest, {"ttl": 5}, "env_id"),
        (BatchStepRequest, {}, "items"),
        (BatchStepRequest, {"items": [{"id": "a", "action": 1}, {"action": 1}]}, "items[1].id"),
        (BatchStepRequest, {"items": [{"id": "a"}]}, "items[0].action"),
    ],
)
@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
def test_missing_required_fields_are_400_missing_parameter_naming_the_field(
    model: type[Body], body: dict[str, Any], field: str, media_type: str
) -> None:
    err = refused(encoded(body, media_type), model, media_type)
    assert isinstance(err, MissingParameter) and err.status == 400 and err.code == "missing_parameter"
    assert err.details == {"field": field} and f"'{field}'" in err.message


@pytest.mark.parametrize("raw", [b"", b"  \n", b"null"], ids=["empty", "blank", "null"])
def test_an_empty_or_null_body_is_the_defaults_when_every_field_is_optional(raw: bytes) -> None:
    assert decode(raw, JSON, ResetRequest) == ResetRequest()
    assert decode(raw, JSON, ResetRequest, required=False) == ResetRequest()


@pytest.mark.parametrize("raw", [b"", b"null", msgpack.packb(None)], ids=["empty", "json-null", "msgpack-nil"])
@pytest.mark.parametrize(
    ("model", "required"), [(StepRequest, True), (StepRequest, False), (ResetRequest, True), (CreateRequest, False)]
)
def test_an_empty_or_null_body_is_refused_where_a_body_is_needed(raw: bytes, model: type[Body], required: bool) -> None:
    media_type = MSGPACK if raw == msgpack.packb(None) else JSON
    err = refused(raw, model, media_type, required=required)
    assert type(err) is BadRequest and err.status == 400 and err.details == {"field": "body"}


@pytest.mark.parametrize(
    ("raw", "media_type"),
    [(b"[1, 2]", JSON), (b'"step"', JSON), (b"3", JSON), (msgpack.packb([1]), MSGPACK)],
)
def test_a_body_that_is_not_a_map_is_a_400_naming_the_body(raw: bytes, media_type: str) -> None:
    err = refused(raw, StepRequest, media_type, required=True)
    assert err.status == 400 and err.details == {"field": "body"} and "map" in err.message


@pytest.mark.parametrize(
    ("raw", "media_type", "kind"),
    [(b"{not json", JSON, "JSON"), (b"\xc1", MSGPACK, "msgpack")],
    ids=["json", "msgpack"],
)
def test_a_body_that_does_not_parse_is_a_400_that_says_which_encoding(raw: bytes, media_type: str, kind: str) -> None:
    err = refused(raw, ResetRequest, media_type)
    assert err.status == 400 and err.details == {"field": "body"} and f"not valid {kind}" in err.message


@pytest.mark.parametrize("env_id", [5, None, ["CartPole-v1"], {"id": "CartPole-v1"}])
def test_an_env_id_that_is_not_a_string_is_a_malformed_env_id(env_id: Any) -> None:
    err = refused(orjson.dumps({"env_id": env_id}), CreateRequest)
    assert isinstance(err, MalformedEnvId) and err.details == {"field": "env_id"}
    assert "malformed environment ID" in err.message


def test_a_malformed_tag_inside_a_value_names_its_path() -> None:
    err = refused(b'{"options": {"mask": {"$nd": 5}}}', ResetRequest)
    assert err.status == 422 and err.details == {"field": "options.mask.$nd"}
    err = refused(b'{"items": [{"id": "a", "action": 1}, {"id": "b", "action": {"$tuple": 3}}]}', BatchStepRequest)
    assert err.status == 422 and str(err.details["field"]).startswith("items[1].action")


# --- /v1: decode_v1, the seed's leniency ---


@pytest.mark.parametrize(
    "raw",
    [b'{"seed": null}', b'{"seed": ""}', b'{"seed": []}', b'{"options": null, "seed": ""}', b"{}", b"", b"null"],
)
def test_v1_reads_null_empty_string_and_empty_list_as_not_given(raw: bytes) -> None:
    assert decode_v1(raw, ResetRequest) == ResetRequest()


def test_v1_ignores_unknown_fields() -> None:
    reset = decode_v1(b'{"seed": 4, "render": true, "sed": 9, "instance_id": "x"}', ResetRequest)
    assert reset == ResetRequest(seed=4)


@pytest.mark.parametrize(("given", "seed"), [('"12"', 12), ('" 7 "', 7), ('"0"', 0), ("12", 12)])
def test_v1_takes_seeds_as_digit_strings_like_the_seed_server(given: str, seed: int) -> None:
    assert decode_v1(f'{{"seed": {given}}}'.encode(), ResetRequest).seed == seed


@pytest.mark.parametrize(
    "given",
    [
        '"\u00b2"',
        '"\uff11\uff12"',
        '"\u0661"',
        '"-1"',
        '"1.5"',
        '"12abc"',
        '"99999999999999999999"',
        "-1",
        "true",
        "1.5",
    ],
    ids=[
        "superscript-two",
        "fullwidth",
        "arabic-indic",
        "negative",
        "decimal",
        "trailing",
        "too-big",
        "-1",
        "bool",
        "float",
    ],
)
def test_v1_refuses_seeds_that_are_not_plain_non_negative_integers_with_a_4xx(given: str) -> None:
    """str.isdigit() says yes to '²', but int('²') raises: a 4xx naming the seed, never a 500."""
    err = refused_v1(f'{{"seed": {given}}}'.encode(), ResetRequest)
    assert err.details == {"field": "seed"} and err.v1_status == 400


def test_v1_missing_and_absent_required_fields_are_missing_parameter() -> None:
    for raw in (b"{}", b'{"action": null}', b'{"action": ""}', b'{"action": []}'):
        err = refused_v1(raw, StepRequest, required=True)
        assert isinstance(err, MissingParameter) and err.details == {"field": "action"}
    err = refused_v1(b'{"env_id": ""}', CreateRequest)
    assert isinstance(err, MissingParameter) and err.details == {"field": "env_id"}


@pytest.mark.parametrize("raw", [b"", b"null", b"{not json", b"[1]"])
def test_v1_a_required_body_that_is_empty_null_or_not_an_object_is_a_400(raw: bytes) -> None:
    err = refused_v1(raw, StepRequest, required=True)
    assert type(err) is BadRequest and err.v1_status == 400


@pytest.mark.parametrize("env_id", ["5", "true", '["CartPole-v1"]', '{"a": 1}'])
def test_v1_an_env_id_that_is_not_a_string_is_a_malformed_env_id(env_id: str) -> None:
    err = refused_v1(f'{{"env_id": {env_id}}}'.encode(), CreateRequest)
    assert isinstance(err, MalformedEnvId) and err.v1_status == 400 and "malformed environment ID" in err.message


def test_v1_still_refuses_wrong_types_of_known_fields() -> None:
    err = refused_v1(b'{"env_id": "x", "max_episode_steps": "5"}', CreateRequest)
    assert isinstance(err, InvalidValue) and err.details == {"field": "max_episode_steps"} and err.v1_status == 400


# --- check_limits ---


@pytest.mark.parametrize(
    ("body", "field", "knob"),
    [
        (CreateRequest("x", max_episode_steps=101), "max_episode_steps", "GYMSERVE_MAX_EPISODE_STEPS_LIMIT"),
        (CreateRequest("x", num_envs=5), "num_envs", "GYMSERVE_MAX_NUM_ENVS"),
    ],
)
def test_check_limits_refuses_what_the_settings_forbid_naming_field_and_setting(
    body: CreateRequest, field: str, knob: str
) -> None:
    settings = Settings.from_env({}, node_id="test", max_episode_steps_limit=100, max_num_envs=4)
    with pytest.raises(InvalidValue) as raised:
        check_limits(body, settings)
    assert raised.value.details == {"field": field} and knob in raised.value.message


def test_check_limits_lets_the_limits_themselves_through() -> None:
    settings = Settings.from_env({}, node_id="test", max_episode_steps_limit=100, max_num_envs=4)
    check_limits(CreateRequest("x", max_episode_steps=100, num_envs=4), settings)
    check_limits(CreateRequest("x"), settings)


# --- the OpenAPI document is generated from the same declarations ---


def generated_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(models.MODELS, ref_template="#/components/schemas/{name}")
    return components


def test_the_openapi_request_schemas_are_exactly_msgspecs_schemas_of_the_models() -> None:
    components = generated_schemas()
    assert {model.__name__ for model in models.MODELS} <= set(components)
    for name, schema in components.items():
        assert openapi.SCHEMAS[name] == schema, name


def test_every_model_is_the_request_body_of_an_operation_and_every_request_body_is_a_model() -> None:
    bodies = set()
    for path in openapi.DOCUMENT["paths"].values():
        for operation in path.values():
            if not isinstance(operation, dict):  # a path's shared parameters
                continue
            for content in operation.get("requestBody", {}).get("content", {}).values():
                bodies.add(content["schema"]["$ref"].rsplit("/", 1)[1])
    assert bodies == {model.__name__ for model in models.MODELS}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (StepRequest, {"action": 1, "seq": 1}),
        (StepRequest, {"action": 1, "seq": 0}),
        (StepRequest, {"action": 1, "extra": 0}),
        (StepRequest, {"seq": 1}),
        (ResetRequest, {"seed": [1, None]}),
        (ResetRequest, {"seed": -1}),
        (CreateRequest, {"env_id": "CartPole-v1", "ttl": 0.5, "wrappers": ["AddRenderObservation"]}),
        (CreateRequest, {"env_id": "CartPole-v1", "ttl": 0}),
        (CreateRequest, {"env_id": "CartPole-v1", "wrappers": ["Other"]}),
        (BatchStepRequest, {"items": [{"id": "a", "action": 0, "seq": 2}]}),
        (BatchStepRequest, {"items": [{"id": "a", "action": 0, "sed": 2}]}),
        (BatchStepRequest, {"items": []}),
    ],
)
def test_the_documented_schema_and_the_decoder_agree_on_what_a_body_may_hold(
    model: type[Body], body: dict[str, Any]
) -> None:
    document = {"components": {"schemas": openapi.SCHEMAS}, "$ref": f"#/components/schemas/{model.__name__}"}
    documented = jsonschema.Draft202012Validator(document).is_valid(body)
    try:
        decode(orjson.dumps(body), JSON, model, required=True)
        decoded = True
    except GymServeError:
        decoded = False
    assert documented == decoded
