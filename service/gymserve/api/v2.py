"""/v2: the native API; native dtypes and shapes as JSON or msgpack, typed errors, retry-safe resets and steps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import gymnasium as gym
from flask import Blueprint, Response, request

from .. import operations
from ..codec import png, spaces, values
from ..envs import CreateRequest
from ..errors import NotSupported
from ..pipeline import handler, models, negotiation
from ..registry import EnvRecord
from ..routing import ids, peers
from ..routing.forward import FORWARDED_HEADER
from . import batch, openapi, owner
from .common import json_response, worker

bp = Blueprint("v2", __name__, url_prefix="/v2")


# --- bodies in and out ---


def _decode(model: type[models.B], *, required: bool = False) -> models.B:
    media_type = negotiation.body_type(request.headers.get("Content-Type"), request.headers.get("Content-Encoding"))
    return models.decode(request.get_data(cache=True), media_type, model, required=required)


def _send(body: bytes, media_type: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body, encoding = negotiation.encoded(body, media_type, request.headers.get("Accept-Encoding"))
    response = Response(body, status=status, headers=[*encoding, *(headers or {}).items()])
    if request.method == "GET":  # what a cache may keep depends on these; answers to POST are not kept
        response.headers["Vary"] = "Accept, Accept-Encoding"
    return response


def _answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    media_type = negotiation.answer_type(request.headers.get("Accept"))
    return _send(values.dumps(payload, media_type), media_type, status, headers)


def _handled(kind: str, instance_id: str) -> Response:
    """A reset or step by the one handler (the lean path answers these before Flask; this is the same call)."""
    call = handler.Call(
        "v2",
        kind,
        owner.local_id(instance_id),
        request.get_data(cache=True),
        request.headers.get("Content-Type"),
        request.headers.get("Content-Encoding"),
        request.headers.get("Accept"),
        request.headers.get("Accept-Encoding"),
    )
    status, headers, body = handler.run(worker(), call)
    return Response(body, status=status, headers=headers)


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
        "action_space": spaces.describe_space(env.action_space),
        "observation_space": spaces.describe_space(env.observation_space),
        # A vector env's spaces are batched; these are one sub-env's.
        "single_action_space": _single_space(env, "single_action_space"),
        "single_observation_space": _single_space(env, "single_observation_space"),
    }


def _single_space(env: Any, name: str) -> dict[str, Any] | None:
    space = getattr(env, name, None)
    return None if space is None else spaces.describe_space(space)


# --- routes ---


@bp.post("/envs")
def create_env() -> Response:
    w = worker()
    body = _decode(models.CreateRequest, required=True)
    elsewhere = owner.place_create(body.num_envs or 1)
    if elsewhere is not None:
        return elsewhere
    models.check_limits(body, w.settings)
    req = CreateRequest(
        env_id=body.env_id,
        max_episode_steps=body.max_episode_steps,
        auto_reset=bool(body.auto_reset),
        disable_env_checker=body.disable_env_checker,
        kwargs=body.kwargs or {},
        wrappers=tuple(body.wrappers or ()),
        num_envs=body.num_envs,
        autoreset_mode=body.autoreset_mode,
    )
    record = w.create(req, w.ttl_for(body.ttl))
    info = _info(record)
    if w.settings.public_url:  # the direct path: where this replica answers without the router
        info["direct_url"] = w.settings.public_url
    return _answer(info, 201, {"Location": f"/v2/envs/{record.instance_id}"})


@bp.get("/envs")
def list_envs() -> Response:
    """The envs of the whole replica (this worker's, plus each sibling's) or farm (GYMSERVE_PEERS_DNS)."""
    envs = {r.instance_id: _summary(r) for r in worker().registry.snapshot()}
    for body in owner.farm_answers("/v2/envs", values.MSGPACK):
        envs.update((env["instance_id"], env) for env in values.loads(body, values.MSGPACK)["envs"])
    return _answer({"envs": list(envs.values())})


@bp.get("/envs/<instance_id>")
def get_env(instance_id: str) -> Response:
    """What the server knows about an env; reading it does not count as use (keepalive does)."""
    return _answer(_info(worker().registry.get(owner.local_id(instance_id))))


@bp.post("/envs/<instance_id>/keepalive")
def keepalive(instance_id: str) -> Response:
    with worker().registry.use(owner.local_id(instance_id)) as record:
        pass
    return _answer(_summary(record))


@bp.post("/envs/<instance_id>/reset")
def reset_env(instance_id: str) -> Response:
    return _handled("reset", instance_id)


@bp.post("/envs/<instance_id>/step")
def step_env(instance_id: str) -> Response:
    return _handled("step", instance_id)


@bp.post("/batch/step")
def batch_step() -> Response:
    """Step many envs of this replica in one request; each item gets its transition or its own error."""
    w = worker()
    body = _decode(models.BatchStepRequest, required=True)
    items = batch.checked_items(body.items, w.settings.max_batch_size)
    forwarded = bool(request.headers.get(FORWARDED_HEADER))
    across = not request.headers.get(peers.FANOUT_HEADER)  # a replica's sub-batch goes no further
    return _answer({"results": batch.step_batch(w, items, forwarded, across_replicas=across)})


@bp.get("/envs/<instance_id>/render")
def render_env(instance_id: str) -> Response:
    with worker().registry.use(owner.local_id(instance_id)) as record:
        if record.env.render_mode is None:
            raise NotSupported(
                "this env was created without a render_mode: create it with kwargs.render_mode 'rgb_array' or 'ansi'",
                details={"field": "render_mode"},
            )
        return _frame(operations.render(record))


def _frame(frame: Any) -> Response:
    """An RGB frame as PNG and text as text unless the client asks for the native value (JSON or msgpack)."""
    own = (negotiation.PNG,) if png.is_image(frame) else (negotiation.TEXT,) if isinstance(frame, str) else ()
    media_type = negotiation.answer_type(request.headers.get("Accept"), own + negotiation.ANSWER_TYPES)
    if media_type == negotiation.PNG:
        return _send(png.encode(frame), media_type)
    if media_type == negotiation.TEXT:
        return _send(frame.encode("utf-8"), "text/plain; charset=utf-8")
    return _send(values.dumps({"frame": frame}, media_type), media_type)


@bp.delete("/envs/<instance_id>")
def delete_env(instance_id: str) -> Response:
    worker().close(owner.local_id(instance_id))
    return Response(status=204)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return json_response(openapi.DOCUMENT)
