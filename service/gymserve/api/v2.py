"""/v2: the native API; native dtypes and shapes as JSON or msgpack, typed errors, retry-safe resets and steps."""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import gymnasium as gym
from flask import Blueprint, Response, request

from .. import ids, operations
from ..codec import native, png
from ..envs import CreateRequest
from ..errors import (
    BadRequest,
    InvalidValue,
    MissingParameter,
    NotSupported,
    UnsupportedMediaType,
)
from ..registry import EnvRecord
from ..routing import FORWARDED_HEADER
from . import batch, calls, openapi, owner
from .common import json_response, worker

bp = Blueprint("v2", __name__, url_prefix="/v2")

ANSWER_TYPES = (native.JSON, *native.MSGPACK_TYPES)
PNG = "image/png"
TEXT = "text/plain"
# Answers this large are gzipped for clients that accept it: rendered frames shrink ~100x, while a
# CartPole step (~100 bytes) would only pay the CPU. Level 1: nearly all of the gain for the least CPU.
GZIP_MIN_BYTES = 16 * 1024
GZIP_LEVEL = 1
# Wrappers a create may ask for, by name; nothing else can be applied.
CREATE_FIELDS = frozenset(
    {
        "env_id",
        "kwargs",
        "max_episode_steps",
        "auto_reset",
        "disable_env_checker",
        "ttl",
        "wrappers",
        "num_envs",
        "autoreset_mode",
    }
)
RESET_FIELDS = frozenset({"seed", "options", "seq"})
STEP_FIELDS = frozenset({"action", "seq"})
BATCH_FIELDS = frozenset({"items"})


# --- bodies in and out ---


def _body(fields: frozenset[str], *, required: bool = False) -> dict[str, Any]:
    """The request body as a map of known fields, decoded by its Content-Type (JSON when none is given)."""
    raw = request.get_data(cache=True)
    if not raw:
        if required:
            raise BadRequest("this request needs a body", details={"field": "body"})
        return {}
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed",
            details={"field": "Content-Encoding"},
        )
    media_type = request.mimetype or native.JSON
    if media_type != native.JSON and not native.is_msgpack(media_type):
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not supported: send application/json or application/msgpack",
            details={"field": "Content-Type"},
        )
    body = native.loads(raw, media_type)
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a map (a JSON object)", details={"field": "body"})
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidValue(unknown[0], f"unknown field; this request takes {', '.join(sorted(fields))}")
    return body


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise MissingParameter(name)
    return value


def _optional(body: dict[str, Any], name: str, ok: Callable[[Any], bool], expected: str) -> Any:
    value = body.get(name)
    if value is not None and not ok(value):
        text = repr(value)
        raise InvalidValue(name, f"expected {expected}, got {text if len(text) <= 80 else text[:77] + '...'}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seq(body: dict[str, Any]) -> int | None:
    return _optional(body, "seq", calls.is_seq, calls.SEQ_EXPECTED)


def _answer_type() -> str:
    return request.accept_mimetypes.best_match(ANSWER_TYPES, default=native.JSON) or native.JSON


def _send(body: bytes, media_type: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if request.method == "GET":  # what a cache may keep depends on these; answers to POST are not kept
        headers["Vary"] = "Accept, Accept-Encoding"
    if len(body) >= GZIP_MIN_BYTES and media_type != PNG and request.accept_encodings["gzip"]:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, status=status, headers=headers, content_type=media_type)


def _answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    media_type = _answer_type()
    return _send(native.dumps(payload, media_type), media_type, status, headers)


# --- what the server says about an env ---


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(record: EnvRecord) -> dict[str, Any]:
    now, idle = time.time(), record.idle_seconds()
    ttl_left = round(max(0.0, record.ttl - idle), 3) if record.ttl > 0 else None
    return {
        "instance_id": record.instance_id,
        "env_id": record.env_id,
        "created_at": _timestamp(record.created_at),
        "last_used_at": _timestamp(now - idle),
        "steps": record.steps,
        "episodes": record.episodes,
        "seq": record.seq,
        "ttl": record.ttl,
        "ttl_left": ttl_left,
        "expires_at": None if ttl_left is None else _timestamp(now + ttl_left),
        "num_envs": record.num_envs,
        "autoreset_mode": record.autoreset_mode,
    }


def _info(record: EnvRecord) -> dict[str, Any]:
    env, spec, where = record.env, record.env.spec, ids.parse(record.instance_id)
    assert where is not None  # the ids this worker minted always parse
    return {
        **_summary(record),
        "spec": None
        if spec is None
        else {
            "id": spec.id,
            "max_episode_steps": spec.max_episode_steps,
            "reward_threshold": spec.reward_threshold,
            "nondeterministic": spec.nondeterministic,
            "kwargs": spec.kwargs,
            "wrappers": [w.name for w in spec.additional_wrappers],
        },
        "render_mode": env.render_mode,
        "seed": record.seed,
        "owner": {"node": where.node, "worker": where.slot, "generation": where.generation},
        "gymnasium_version": gym.__version__,
        "action_space": native.describe_space(env.action_space),
        "observation_space": native.describe_space(env.observation_space),
        # A vector env's spaces are batched; these are one sub-env's.
        "single_action_space": _single_space(env, "single_action_space"),
        "single_observation_space": _single_space(env, "single_observation_space"),
    }


def _single_space(env: Any, name: str) -> dict[str, Any] | None:
    space = getattr(env, name, None)
    return None if space is None else native.describe_space(space)


# --- retry-safe resets and steps ---


def _sequenced(record: EnvRecord, kind: str, seq: int | None, run: Callable[[], dict[str, Any]]) -> Response:
    """Run a reset or step unless `seq` says it is a resend of the last one, whose answer is then sent again."""
    # Only a numbered call is kept for a resend, so only a numbered call needs its request's digest.
    request_digest = (
        b"" if seq is None else calls.digest(kind.encode(), request.mimetype.encode(), request.get_data(cache=True))
    )
    media_type = _answer_type()
    return _send(calls.answer_bytes(record, seq, request_digest, media_type, run), media_type)


# --- routes ---


@bp.post("/envs")
def create_env() -> Response:
    w = worker()
    body = _body(CREATE_FIELDS, required=True)
    num_envs = body.get("num_envs")
    elsewhere = owner.create_elsewhere_if_full(num_envs if isinstance(num_envs, int) and num_envs > 1 else 1)
    if elsewhere is not None:
        return elsewhere
    kwargs = _optional(body, "kwargs", lambda v: isinstance(v, dict), "a map of constructor arguments") or {}
    limit = w.settings.max_episode_steps_limit
    req = CreateRequest(
        env_id=_required(body, "env_id"),
        max_episode_steps=_optional(
            body, "max_episode_steps", lambda v: _is_int(v) and 1 <= v <= limit, f"an integer from 1 to {limit}"
        ),
        auto_reset=bool(_optional(body, "auto_reset", lambda v: isinstance(v, bool), "true or false")),
        disable_env_checker=_optional(body, "disable_env_checker", lambda v: isinstance(v, bool), "true or false"),
        kwargs=kwargs,
        wrappers=_wrapper_names(body),
        num_envs=num_envs,
        autoreset_mode=body.get("autoreset_mode"),
    )
    ttl = _optional(body, "ttl", lambda v: _is_number(v) and v > 0, "a positive number of seconds")
    record = w.create(req, w.ttl_for(ttl))
    return _answer(_info(record), 201, {"Location": f"/v2/envs/{record.instance_id}"})


def _wrapper_names(body: dict[str, Any]) -> tuple[str, ...]:
    names = _optional(
        body, "wrappers", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"
    )
    return tuple(names or ())


@bp.get("/envs")
def list_envs() -> Response:
    """The envs of the whole replica: this worker's, plus each sibling's (asked over its socket)."""
    envs = [_summary(r) for r in worker().registry.snapshot()]
    for body in owner.sibling_answers("/v2/envs", native.MSGPACK):
        envs.extend(native.loads(body, native.MSGPACK)["envs"])
    return _answer({"envs": envs})


@bp.get("/envs/<instance_id>")
def get_env(instance_id: str) -> Response:
    """What the server knows about an env; reading it does not count as use (keepalive does)."""
    return _answer(_info(worker().registry.get(owner.checked_id(instance_id))))


@bp.post("/envs/<instance_id>/keepalive")
def keepalive(instance_id: str) -> Response:
    with worker().registry.use(owner.checked_id(instance_id)) as record:
        pass
    return _answer(_summary(record))


@bp.post("/envs/<instance_id>/reset")
def reset_env(instance_id: str) -> Response:
    body = _body(RESET_FIELDS)
    seeds = operations.parse_seeds(body.get("seed"))
    options = operations.parse_options(body.get("options"))
    seq = _seq(body)
    with worker().registry.use(owner.checked_id(instance_id)) as record:
        return _sequenced(record, "reset", seq, lambda: calls.reset_payload(record, seeds, options))


@bp.post("/envs/<instance_id>/step")
def step_env(instance_id: str) -> Response:
    body = _body(STEP_FIELDS, required=True)
    action = _required(body, "action")
    seq = _seq(body)
    with worker().registry.use(owner.checked_id(instance_id)) as record:
        return _sequenced(record, "step", seq, lambda: calls.step_payload(record, action))


@bp.post("/batch/step")
def batch_step() -> Response:
    """Step many envs of this replica in one request; each item gets its transition or its own error."""
    w = worker()
    body = _body(BATCH_FIELDS, required=True)
    items = batch.parse_items(_required(body, "items"), w.settings.max_batch_size)
    return _answer({"results": batch.step_batch(w, items, forwarded=bool(request.headers.get(FORWARDED_HEADER)))})


@bp.get("/envs/<instance_id>/render")
def render_env(instance_id: str) -> Response:
    with worker().registry.use(owner.checked_id(instance_id)) as record:
        if record.env.render_mode is None:
            raise NotSupported(
                "this env was created without a render_mode: create it with kwargs.render_mode 'rgb_array' or 'ansi'",
                details={"field": "render_mode"},
            )
        return _frame(operations.render(record))


def _frame(frame: Any) -> Response:
    """An RGB frame as PNG and text as text unless the client asks for the native value (JSON or msgpack)."""
    offers = ((PNG,) if png.is_image(frame) else (TEXT,) if isinstance(frame, str) else ()) + ANSWER_TYPES
    media_type = request.accept_mimetypes.best_match(offers, default=offers[0]) or offers[0]
    if media_type == PNG:
        return _send(png.encode(frame), PNG)
    if media_type == TEXT:
        return _send(frame.encode("utf-8"), "text/plain; charset=utf-8")
    return _send(native.dumps({"frame": frame}, media_type), media_type)


@bp.delete("/envs/<instance_id>")
def delete_env(instance_id: str) -> Response:
    worker().close(owner.checked_id(instance_id))
    return Response(status=204)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return json_response(openapi.DOCUMENT)
