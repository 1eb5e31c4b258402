"""The OpenAPI 3.1 document of /v2, served at /v2/openapi.json: the contract that the tests hold real answers to."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from .. import __version__, errors
from ..codec import spaces
from ..codec import values as native
from ..lifecycle import labels
from ..pipeline import answers, fanout, models
from ..routing.ids import MAX_ID_LENGTH
from ..settings import Settings

DTYPES = sorted(native.DTYPES)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    """A closed object schema; every property is required unless `required` says which are."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
        **extra,
    }


def _tag(key: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return _object({key: schema}, description=description)


_INT = {"type": "integer"}
_NATIVE_CONTENT_NOTE = (
    "application/json or application/msgpack (also application/x-msgpack, application/vnd.msgpack), "
    "chosen by Accept; both carry the same tree (see the Value schema)."
)

SCHEMAS: dict[str, Any] = {
    "NDArray": _tag(
        native.ND,
        _object(
            {
                "dtype": {"enum": DTYPES},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": native.MAX_DIM_SIZE},
                    "maxItems": native.MAX_DIMS,
                },
                "data": {
                    "anyOf": [
                        {
                            "type": "array",
                            "items": {"anyOf": [{"type": "number"}, {"type": "boolean"}, _ref("NonFiniteName")]},
                            "description": "JSON: the elements, flat, in row-major order.",
                        },
                        {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "msgpack: a bin of the elements' little-endian bytes, row-major.",
                        },
                    ]
                },
            }
        ),
        "An ndarray (or, with shape [], a numpy scalar) in its own dtype and shape.",
    ),
    "NonFiniteName": {"enum": ["NaN", "Infinity", "-Infinity"]},
    "Tuple": _tag(native.TUPLE, {"type": "array", "items": _ref("Value")}, "A tuple (a list stays a list)."),
    "NonFiniteFloat": _tag(native.FLOAT, _ref("NonFiniteName"), "JSON only: a Python float that is not finite."),
    "EscapedMap": _tag(
        native.DICT,
        {"type": "object", "additionalProperties": _ref("Value")},
        "A map whose only key starts with '$', wrapped so that it is never read as a tag.",
    ),
    "Value": {
        "description": "A native value: observations, actions, info, options and kwargs.",
        "anyOf": [
            {"type": ["null", "boolean", "number", "string"]},
            {"type": "array", "items": _ref("Value")},
            _ref("NDArray"),
            _ref("Tuple"),
            _ref("NonFiniteFloat"),
            _ref("EscapedMap"),
            {"type": "object", "additionalProperties": _ref("Value")},
        ],
    },
    "Float": {"anyOf": [{"type": "number"}, _ref("NonFiniteFloat")]},
    "Space": {
        "type": "object",
        "description": "A Gymnasium space with its native bounds; Tuple and Dict nest their spaces.",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "examples": list(spaces.KINDS)},
            "n": {"anyOf": [_INT, {"type": "array", "items": _INT}]},
            "start": {"anyOf": [_INT, _ref("NDArray")]},
            "dtype": {"enum": DTYPES},
            "shape": {"type": "array", "items": _INT},
            "low": _ref("NDArray"),
            "high": _ref("NDArray"),
            "nvec": _ref("NDArray"),
            "spaces": {
                "anyOf": [
                    {"type": "array", "items": _ref("Space")},
                    {"type": "object", "additionalProperties": _ref("Space")},
                ]
            },
            "min_length": _INT,
            "max_length": _INT,
            "charset": {"type": "string"},
        },
        "additionalProperties": False,
    },
}
SCHEMAS["StepResult"] = {"anyOf": [_ref("StepAnswer"), _ref("VectorStepAnswer")]}

# The request and answer bodies come from their one declaration (pipeline.models, pipeline.answers); only the
# values' schemas are written here.
_, _REQUESTS = msgspec.json.schema_components(models.MODELS, ref_template=answers.REF)
_, _ANSWERS = msgspec.json.schema_components(answers.ANSWERS, ref_template=answers.REF)
assert len({*SCHEMAS, *_REQUESTS, *_ANSWERS}) == len(SCHEMAS) + len(_REQUESTS) + len(_ANSWERS), "a name taken twice"
SCHEMAS.update(_REQUESTS)
SCHEMAS.update(_ANSWERS)

# The error table, generated from the error classes (errors.table): per status, each code with when it is sent.
_ERROR_HEADERS = {  # what each header an error class declares (answer_headers) means
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {
        "description": 'Bearer realm="gymserve": this farm needs a tenant\'s key.',
        "schema": {"type": "string"},
    },
}


def _error_response(kinds: list[errors.Kind]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": " ".join(f"{k.code}{' (retryable)' if k.retryable else ''}: {k.text}" for k in kinds),
        "content": {native.JSON: {"schema": _ref("Error")}},
    }
    headers = sorted({name for kind in kinds for name in kind.headers})
    if headers:  # required where every error of this status carries it
        response["headers"] = {
            name: {**_ERROR_HEADERS[name], "required": all(name in k.headers for k in kinds)} for name in headers
        }
    return response


_BY_STATUS: dict[int, list[errors.Kind]] = {}
for _kind in errors.table():
    _BY_STATUS.setdefault(_kind.status, []).append(_kind)
RESPONSES = {str(status): _error_response(kinds) for status, kinds in _BY_STATUS.items()}
_ALWAYS = (400, 401, 404, 410, 413, 414, 415, 429, 431, 500, 503, 504)


def _native_content(schema: str) -> dict[str, Any]:
    return {media_type: {"schema": _ref(schema)} for media_type in (native.JSON, *native.MSGPACK_TYPES)}


def _operation(
    op_id: str,
    summary: str,
    ok: tuple[int, str, dict[str, Any]],
    errors: tuple[int, ...] = (),
    body: tuple[str, bool] | None = None,
    description: str = "",
    ok_headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status, ok_text, ok_content = ok
    answer: dict[str, Any] = {"description": ok_text}
    if ok_content:
        answer["content"] = ok_content
    if ok_headers:
        answer["headers"] = ok_headers
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "responses": {
            str(status): answer,
            **{str(s): {"$ref": f"#/components/responses/{s}"} for s in sorted({*_ALWAYS, *errors})},
        },
    }
    if description:
        operation["description"] = description
    if body is not None:
        schema, required = body
        operation["requestBody"] = {"required": required, "content": _native_content(schema)}
    return operation


_SEQ_TEXT = (
    "Retry-safe: resets and steps share one sequence per env. The first call carries seq 1 and each "
    "answered call adds 1 (an error answer uses no number). Resending the last call with the same seq and "
    "the same body returns the same answer without running it again; any other seq is a 409 "
    "sequence_conflict whose details.expected is the next number. A call without seq always runs."
)
_ID_PARAMETER = {
    "name": "instance_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": MAX_ID_LENGTH},
    "example": "gymserve-0.1-7.9f0c4b2a6d8e41f3a5c7e9b1d3f5a7c9",
}
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Names this create (a random UUID per create, say), so that a resend is answered with the same "
    "env instead of making a second one.",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
}
_IDEMPOTENCY_TEXT = (
    "With an Idempotency-Key: the same key and the same body (byte for byte) are answered 201 with the same env "
    "(and Idempotent-Replayed: true) for as long as that env lives; the same key with another body is a 422 "
    "idempotency_mismatch; a resend while the first is still running is a 409 idempotency_in_flight (retryable). "
    "Through the router, keyed creates go to a replica chosen by a hash of the key; a change in the set of "
    "replicas can move a key (see docs/lifecycle.md)."
)
_SELECTORS = {
    "type": "array",
    "items": {"type": "string", "pattern": labels.SELECTOR, "maxLength": labels.SELECTOR_MAX_LENGTH},
    "maxItems": models.MAX_LABELS,
}
_LABEL_PARAMETER = {
    "name": "label",
    "in": "query",
    "required": False,
    "description": "key=value: only envs with this label; repeat for several (all must match).",
    "schema": _SELECTORS,
    "style": "form",
    "explode": True,
    "example": ["run=ppo-7"],
}
_STREAM_TEXT = (
    "With Connection: Upgrade and Upgrade: websocket (RFC 6455, no compression) the answer is 101 and the "
    "connection carries messages {op, ...the HTTP body's fields}: reset, step, render, close (batch_step on "
    "/v2/stream), msgpack in binary frames, JSON in text frames, each answered in order with its HTTP route's body "
    "(docs/api-v2.md, 'The step stream'). An unknown, lost or other tenant's id is refused before the 101."
)


def _stream_content(fields: dict[str, Any]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {**fields, "upgrade": {"const": "websocket"}},
        "required": [*fields, "upgrade"],
        "additionalProperties": False,
    }
    return {native.JSON: {"schema": schema}}


_LIST_MAX_PAGE = next(f.default for f in dataclasses.fields(Settings) if f.name == "list_max_page")
_PAGE_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Most envs in this answer (default and maximum: GYMSERVE_LIST_MAX_PAGE, 500 unless the "
        "operator set another).",
        "schema": {"type": "integer", "minimum": 1, "maximum": _LIST_MAX_PAGE},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The next_cursor of the previous page: this page lists the envs after it.",
        "schema": {"type": "string", "pattern": fanout.CURSOR},
    },
]
_INFO_CONTENT = _native_content("EnvInfo")
_FRAME_CONTENT = {
    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
    "text/plain": {"schema": {"type": "string"}},
    **_native_content("RenderAnswer"),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "gymserve /v2",
        "version": __version__,
        "description": "Gymnasium environments over HTTP with native dtypes and shapes. Bodies are "
        + _NATIVE_CONTENT_NOTE
        + " Errors are always JSON. Answers of 16 KiB or more are gzipped for clients that send "
        "Accept-Encoding: gzip.",
    },
    "paths": {
        "/v2/envs": {
            "post": {
                **_operation(
                    "createEnv",
                    "Create an env",
                    (201, "Created; Location names the new env.", _INFO_CONTENT),
                    (403, 409, 422),
                    ("CreateRequest", True),
                    ok_headers={
                        "Location": {
                            "description": "/v2/envs/{instance_id}",
                            "schema": {"type": "string"},
                            "required": True,
                        },
                    },
                    description=_IDEMPOTENCY_TEXT,
                ),
                "parameters": [_IDEMPOTENCY_PARAMETER],
            },
            "get": {
                **_operation(
                    "listEnvs",
                    "List the envs of this replica",
                    (
                        200,
                        "Every worker's envs (those matching every label selector given).",
                        _native_content("EnvList"),
                    ),
                    (422,),
                    description="Ordered by instance id, in pages: without limit, the first GYMSERVE_LIST_MAX_PAGE "
                    "(500) envs; next_cursor, when not null, asks for the rest (limit above the maximum is a 422).",
                ),
                "parameters": [_LABEL_PARAMETER, *_PAGE_PARAMETERS],
            },
            "delete": {
                **_operation(
                    "deleteEnvs",
                    "Close the envs of this replica that match label selectors",
                    (200, "How many envs were closed.", _native_content("DeleteCount")),
                    (422,),
                    description="Closes exactly the envs of this replica (every worker) whose labels match every "
                    "label=key=value given; at least one is required (422 without: never every env). Through a "
                    "router with several replicas, repeat it until it answers 0, or call it on each replica.",
                ),
                "parameters": [{**_LABEL_PARAMETER, "required": True, "schema": _SELECTORS | {"minItems": 1}}],
            },
        },
        "/v2/envs/{instance_id}": {
            "parameters": [_ID_PARAMETER],
            "get": _operation(
                "getEnv",
                "What the server knows about an env",
                (200, "The env.", _INFO_CONTENT),
                description="Reading an env does not restart its idle clock; keepalive does.",
            ),
            "delete": _operation("deleteEnv", "Close an env", (204, "Closed.", {})),
        },
        "/v2/envs/{instance_id}/fork": {
            "parameters": [_ID_PARAMETER],
            "post": _operation(
                "forkEnv",
                "Fork an env: a new env in exactly its state",
                (201, "The fork; Location names it.", _INFO_CONTENT),
                (422,),
                ("ForkRequest", False),
                "A deep copy of the env, random generators included, made under its lock on the worker that holds "
                "it: the same actions then give bit-identical trajectories, and stepping one never moves the other. "
                "The fork has its own id, sequence (seq 0), step and episode counts, TTL (the original's unless "
                "given) and labels (copied unless given), and counts against capacity like a create (a vector env "
                "as its sub-envs). An env that cannot be copied (one holding a renderer's clock, say) is a 422 "
                "not_supported that says why.",
                ok_headers={
                    "Location": {
                        "description": "/v2/envs/{instance_id}",
                        "schema": {"type": "string"},
                        "required": True,
                    }
                },
            ),
        },
        "/v2/envs/{instance_id}/snapshot": {
            "parameters": [_ID_PARAMETER],
            "get": _operation(
                "snapshotEnv",
                "Snapshot an env: its state as an opaque, signed blob",
                (
                    200,
                    "The blob: send it back as the snapshot field of POST /v2/envs to restore the env there.",
                    {
                        "application/octet-stream": {
                            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                        }
                    },
                ),
                (422,),
                description="The env pickled under its lock with what the server knows of it (env id, vector size and "
                "autoreset mode, last seed, labels; not its id, counters or TTL), signed with HMAC-SHA256 under the "
                "farm's GYMSERVE_SNAPSHOT_KEY: any replica with the same key restores it, and a blob that key did not "
                "sign is refused (422 invalid_snapshot) without ever being unpickled. Bounded by "
                "GYMSERVE_MAX_SNAPSHOT_BYTES. Without a key, snapshots are off (422 not_supported naming it); an env "
                "that cannot be pickled is a 422 not_supported that says why.",
            ),
        },
        "/v2/envs/{instance_id}/reset": {
            "parameters": [_ID_PARAMETER],
            "post": _operation(
                "resetEnv",
                "Reset an env",
                (200, "The first observation.", _native_content("ResetAnswer")),
                (409, 422),
                ("ResetRequest", False),
                _SEQ_TEXT,
            ),
        },
        "/v2/envs/{instance_id}/step": {
            "parameters": [_ID_PARAMETER],
            "post": _operation(
                "stepEnv",
                "Step an env",
                (200, "The transition (a vector env's is batched).", _native_content("StepResult")),
                (409, 422),
                ("StepRequest", True),
                _SEQ_TEXT,
            ),
        },
        "/v2/envs/{instance_id}/render": {
            "parameters": [_ID_PARAMETER],
            "get": _operation(
                "renderEnv",
                "Render an env",
                (
                    200,
                    "An rgb frame as PNG, ansi as text, or the native value when Accept asks for it.",
                    _FRAME_CONTENT,
                ),
                (422,),
            ),
        },
        "/v2/envs/{instance_id}/stream": {
            "parameters": [_ID_PARAMETER],
            "get": _operation(
                "streamEnv",
                "The env's step stream: a WebSocket",
                (200, "Without an upgrade: what the route is.", _stream_content({"instance_id": {"type": "string"}})),
                description=_STREAM_TEXT,
            ),
        },
        "/v2/stream": {
            "get": _operation(
                "streamBatches",
                "The batch stream: a WebSocket of batch_step messages",
                (200, "Without an upgrade: what the route is.", _stream_content({})),
                description=_STREAM_TEXT,
            ),
        },
        "/v2/envs/{instance_id}/frame": {
            "parameters": [
                _ID_PARAMETER,
                {
                    "name": "sub_env",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "default": 0},
                    "description": "A vector env's sub-env to show.",
                },
            ],
            "get": _operation(
                "getFrame",
                "Watch an env: its current frame, without using it",
                (
                    200,
                    "An rgb_array frame as PNG or an ansi frame as text.",
                    {key: _FRAME_CONTENT[key] for key in ("image/png", "text/plain")},
                ),
                (409, 422),
                description="For viewers such as the /ui page. Unlike render, a frame is not a use: the env's idle "
                "clock is left alone, so an abandoned env still expires while watched. The frame is rendered "
                "under the env's lock; if another request holds it for longer than GYMSERVE_FRAME_WAIT_SECONDS, "
                "the last frame is answered again (503 with Retry-After if there is none). Envs whose "
                "render_mode is not rgb_array or ansi answer 422; a classic-control env before its first reset "
                "answers 409 reset_needed.",
            ),
        },
        "/v2/envs/{instance_id}/keepalive": {
            "parameters": [_ID_PARAMETER],
            "post": _operation(
                "keepAlive", "Restart an env's idle clock", (200, "The env's TTL now.", _native_content("EnvSummary"))
            ),
        },
        "/v2/batch/step": {
            "post": _operation(
                "stepBatch",
                "Step many envs of this replica in one request",
                (200, "Every item's transition or error, in request order.", _native_content("BatchStepAnswer")),
                (422,),
                ("BatchStepRequest", True),
                "Each item is numbered like a step on its own route (seq per env, resent answers kept). An item's "
                "error (unknown_instance, instance_lost, wrong_replica for an env of another replica, "
                "reset_needed, sequence_conflict, invalid_value, env_error, owner_timeout) is its result and "
                "never fails the batch; a malformed batch (too many items, an item that is not a map, an unknown "
                "field, a missing id or action, an env twice) is a 4xx naming the field, e.g. items[3].seq.",
            ),
        },
        "/v2/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {native.JSON: {"schema": {}}}}},
            }
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        # With a tenants file (GYMSERVE_TENANTS_FILE) every route but /v2/openapi.json needs a tenant's key.
        "securitySchemes": {"tenantKey": {"type": "http", "scheme": "bearer"}},
    },
    # A key, or none on an open farm.
    "security": [{"tenantKey": []}, {}],
}
