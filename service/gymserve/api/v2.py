"""/v2: the native API; native dtypes and shapes as JSON or msgpack, typed errors, retry-safe resets and steps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from .. import frames, idempotency, labels, operations
from ..codec import png, values
from ..envs import CreateRequest
from ..errors import InvalidValue, NotSupported
from ..pipeline import answers, handler, models, negotiation
from ..pipeline.lean import forwarded, tenant_of
from ..registry import EnvRecord
from ..routing import peers
from ..worker import Worker
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


# --- routes ---


@bp.post("/envs")
def create_env() -> Response:
    w = worker()
    key = idempotency.checked_key(request.headers.get(idempotency.HEADER))
    if key is not None and (there := owner.create_where_key_lives(key)) is not None:
        return there
    body = _decode(models.CreateRequest, required=True)
    if key is None and (elsewhere := owner.place_create(body.num_envs or 1)) is not None:
        return elsewhere
    models.check_limits(body, w.settings)
    return _created(_create(w, body)) if key is None else _keyed_create(w, key, body)


def _keyed_create(w: Worker, key: str, body: models.CreateRequest) -> Response:
    """A create named by an Idempotency-Key, on the worker the key belongs to: a resend of the same body gets the
    same env (and answer) again, another body a 422, a resend while the first runs a 409 (docs/lifecycle.md)."""
    # The key picks the worker; the tenant's key is what is kept, so another tenant's same key never names its env.
    mine = f"{tenant_of(request.environ).name}/{key}"
    earlier = w.keys.claim(mine, idempotency.digest(request.content_type, request.get_data(cache=True)))
    if isinstance(earlier, idempotency.PassedOn):  # this worker was full: the sibling it chose has the key
        return owner.forward_create(earlier.slot)
    if earlier is not None:  # a resend of a create that was made: its env, not a second one
        return _answer(earlier, 201, {"Location": f"/v2/envs/{earlier.instance_id}", "Idempotent-Replayed": "true"})
    try:
        sibling = owner.pass_keyed_create_on(key, body.num_envs or 1)
        if sibling is not None:  # full here, room there: it makes the env and keeps the key; resends follow
            w.keys.pass_on(mine, sibling, w.ttl_for(body.ttl) or w.settings.env_ttl_max_seconds or 86_400.0)
            answer = owner.forward_create(sibling)
            if answer.status_code >= 400:  # nothing was made there: the key is free again
                w.keys.release(mine)
            return answer
        info = _created_info(_create(w, body))
    except BaseException:
        w.keys.release(mine)
        raise
    w.keys.done(mine, info.instance_id, info)
    if w.registry.find(info.instance_id) is None:  # closed before its key was kept (a bulk delete): drop it
        w.keys.forget_env(info.instance_id)
    return _answer(info, 201, {"Location": f"/v2/envs/{info.instance_id}"})


def _created(record: EnvRecord) -> Response:
    return _answer(_created_info(record), 201, {"Location": f"/v2/envs/{record.instance_id}"})


def _created_info(record: EnvRecord) -> answers.EnvInfo:
    """What a create answers: the env's info, and where this replica answers without the router (the direct path)."""
    return answers.info(record, worker().settings.public_url or None)


def _create(w: Worker, body: models.CreateRequest) -> EnvRecord:
    if body.snapshot is not None:
        return _restore(w, body, body.snapshot)
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
    tenant = tenant_of(request.environ)
    return w.create(req, w.ttl_for(body.ttl, tenant), tenant, body.labels)


# What a restore takes from its snapshot, never from the body.
_MADE_BY_SNAPSHOT = ("kwargs", "max_episode_steps", "auto_reset", "disable_env_checker", "wrappers")


def _restore(w: Worker, body: models.CreateRequest, blob: bytes) -> EnvRecord:
    for name in _MADE_BY_SNAPSHOT:
        if getattr(body, name):
            raise InvalidValue(name, "a restore takes the env from its snapshot: give only env_id, ttl and labels")
    tenant = tenant_of(request.environ)
    ttl = w.ttl_for(body.ttl, tenant)
    return w.restore(blob, body.env_id, ttl, body.labels, body.num_envs, body.autoreset_mode, tenant)


@bp.get("/envs/<instance_id>/snapshot")
def snapshot_env(instance_id: str) -> Response:
    """The env's state as an opaque blob, signed with the farm's key: POST /v2/envs {"snapshot": ...} restores it."""
    blob = worker().snapshot(owner.local_id(instance_id))
    return Response(blob, headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})


@bp.get("/envs")
def list_envs() -> Response:
    """The caller's envs on the whole replica (this worker's, plus each sibling's) or farm (GYMSERVE_PEERS_DNS),
    those whose labels match every `label=key=value` given."""
    tenant = tenant_of(request.environ).name
    chosen = labels.selector(request.args.getlist("label"))
    mine = (r for r in worker().registry.snapshot() if r.tenant == tenant and r.matches(chosen))
    envs: dict[str, Any] = {r.instance_id: answers.summary(r) for r in mine}
    for body in owner.farm_answers("/v2/envs", values.MSGPACK, query=_query()):
        envs.update((env["instance_id"], env) for env in values.loads(body, values.MSGPACK)["envs"])
    return _answer(answers.EnvList(list(envs.values())))


@bp.delete("/envs")
def delete_envs() -> Response:
    """Close exactly the caller's envs whose labels match every `label=key=value` (at least one), on every worker
    and, with GYMSERVE_PEERS_DNS, every replica."""
    chosen = labels.selector(request.args.getlist("label"))
    if not chosen:  # never "close everything" by a forgotten parameter
        raise InvalidValue("label", "a bulk delete needs at least one label=key=value; it never closes every env")
    deleted = worker().close_matching(chosen, tenant_of(request.environ).name)
    for body in owner.farm_answers("/v2/envs", values.MSGPACK, _query(), "DELETE"):
        deleted += values.loads(body, values.MSGPACK)["deleted"]
    return _answer(answers.DeleteCount(deleted))


def _query() -> str:
    return request.query_string.decode("latin-1")


@bp.get("/envs/<instance_id>")
def get_env(instance_id: str) -> Response:
    """What the server knows about an env; reading it does not count as use (keepalive does)."""
    return _answer(answers.info(worker().registry.get(owner.local_id(instance_id))))


@bp.post("/envs/<instance_id>/keepalive")
def keepalive(instance_id: str) -> Response:
    with worker().registry.use(owner.local_id(instance_id)) as record:
        pass
    return _answer(answers.summary(record))


@bp.post("/envs/<instance_id>/fork")
def fork_env(instance_id: str) -> Response:
    """A new env on the same worker in exactly this env's state: the same actions then give the same trajectory."""
    w = worker()
    body = _decode(models.ForkRequest)
    local = owner.local_id(instance_id)
    tenant = tenant_of(request.environ)
    ttl = None if body.ttl is None else w.ttl_for(body.ttl, tenant)
    return _created(w.fork(local, ttl, body.labels, tenant))


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
    hop = forwarded(request.environ)
    across = not request.headers.get(peers.FANOUT_HEADER)  # a replica's sub-batch goes no further
    tenant = tenant_of(request.environ).name
    authorization = request.headers.get("Authorization")
    answer_type = negotiation.answer_type(request.headers.get("Accept"))
    results = batch.step_batch(w, items, hop, tenant, authorization, across_replicas=across, media_type=answer_type)
    return _send(values.dumps(answers.BatchStepAnswer(results), answer_type), answer_type)


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
    return _send(values.dumps(answers.RenderAnswer(frame), media_type), media_type)


@bp.get("/envs/<instance_id>/frame")
def frame(instance_id: str) -> Response:
    """A viewer's frame (the /ui page polls it): like render, but watching is not using, so the env still expires."""
    w = worker()
    record = w.registry.get(owner.local_id(instance_id))
    raw = request.args.get("sub_env", "0")
    if not raw.isdigit():
        raise InvalidValue("sub_env", f"expected a sub-env index (a non-negative integer), got {raw[:20]!r}")
    shown = frames.latest(w.registry, record, int(raw), w.settings.frame_wait_seconds)
    response = Response(shown.body, content_type=shown.media_type)
    response.headers["Cache-Control"] = "no-store"  # a frame is stale at the next step
    return response


@bp.delete("/envs/<instance_id>")
def delete_env(instance_id: str) -> Response:
    worker().close(owner.local_id(instance_id))
    return Response(status=204)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return json_response(openapi.DOCUMENT)
