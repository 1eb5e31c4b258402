"""/v2: the native API; native dtypes and shapes as JSON or msgpack, typed errors, retry-safe resets and steps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ..codec import png, values
from ..errors import NotSupported
from ..lifecycle import labels
from ..pipeline import answers, batch, create, frames, models, negotiation, operations
from ..pipeline.fanout import Page
from . import openapi
from .common import add_reset_and_step, caller, envs, incoming, json_response, local_id, services

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


def _outcome(outcome: create.Outcome) -> Response:
    """A create's outcome: made here (encoded in the client's type), or another worker's answer as it came."""
    if isinstance(outcome, create.Made):
        return _answer(outcome.payload, outcome.status, outcome.headers)
    status, headers, body = outcome
    return Response(body, status=status, headers=headers)


# --- routes ---


@bp.post("/envs")
def create_env() -> Response:
    return _outcome(services().creates.v2(incoming(), caller()))


@bp.get("/envs/<instance_id>/snapshot")
def snapshot_env(instance_id: str) -> Response:
    """The env's state as an opaque blob, signed with the farm's key: POST /v2/envs {"snapshot": ...} restores it."""
    blob = envs().snapshot(local_id(instance_id), caller())
    return Response(blob, headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})


@bp.get("/envs")
def list_envs() -> Response:
    """The caller's envs on the whole replica (this worker's, plus each sibling's) or farm (GYMSERVE_PEERS_DNS),
    those whose labels match every `label=key=value` given."""
    chosen = labels.selector(request.args.getlist("label"))
    page = Page.of(request.args.get("limit"), request.args.get("cursor"), envs().settings.list_max_page)
    mine: dict[str, object] = {
        r.instance_id: answers.summary(r) for r in envs().list(caller(), chosen) if page.after(r.instance_id)
    }
    mine.update((p["instance_id"], p) for p in envs().parked(caller(), chosen) if page.after(p["instance_id"]))
    return _answer(services().fanout.list_page(caller(), _query(), page, mine))


@bp.delete("/envs")
def delete_envs() -> Response:
    """Close exactly the caller's envs whose labels match every `label=key=value` (at least one), on every worker
    and, with GYMSERVE_PEERS_DNS, every replica."""
    chosen = labels.selector(request.args.getlist("label"))
    deleted = envs().close_matching(caller(), chosen) + envs().close_parked(caller(), chosen)
    for body in services().fanout.answers(caller(), "/v2/envs", values.MSGPACK, _query(), "DELETE"):
        deleted += values.loads(body, values.MSGPACK)["deleted"]
    return _answer(answers.DeleteCount(deleted))


def _query() -> str:
    return request.query_string.decode("latin-1")


@bp.get("/envs/<instance_id>")
def get_env(instance_id: str) -> Response:
    """What the server knows about an env; reading it does not count as use (keepalive does)."""
    return _answer(answers.info(envs().get(local_id(instance_id), caller()), envs().owner))


@bp.post("/envs/<instance_id>/keepalive")
def keepalive(instance_id: str) -> Response:
    with envs().use(local_id(instance_id), caller()) as record:
        pass
    return _answer(answers.summary(record))


@bp.post("/envs/<instance_id>/fork")
def fork_env(instance_id: str) -> Response:
    """A new env on the same worker in exactly this env's state: the same actions then give the same trajectory."""
    body = _decode(models.ForkRequest)
    return _outcome(services().creates.fork(local_id(instance_id), caller(), body))


add_reset_and_step(bp, "v2", "/envs/<instance_id>/{kind}", "{kind}_env")


@bp.post("/batch/step")
def batch_step() -> Response:
    """Step many envs of this replica in one request; each item gets its transition or its own error."""
    body = _decode(models.BatchStepRequest, required=True)
    items = batch.checked_items(body.items, envs().settings.max_batch_size)
    answer_type = negotiation.answer_type(request.headers.get("Accept"))
    results = services().batches.step(items, caller(), answer_type)
    return _send(values.dumps(answers.BatchStepAnswer(results), answer_type), answer_type)


@bp.get("/envs/<instance_id>/render")
def render_env(instance_id: str) -> Response:
    with envs().use(local_id(instance_id), caller()) as record:
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
    shown = frames.latest(envs(), local_id(instance_id), caller(), request.args.get("sub_env", "0"))
    response = Response(shown.body, content_type=shown.media_type)
    response.headers["Cache-Control"] = "no-store"  # a frame is stale at the next step
    return response


@bp.delete("/envs/<instance_id>")
def delete_env(instance_id: str) -> Response:
    envs().close(local_id(instance_id), caller())
    return Response(status=204)


@bp.get("/envs/<instance_id>/stream")
def stream_env(instance_id: str) -> Response:
    """The env's step stream. With `Upgrade: websocket` the worker upgrades the connection once this answers 200
    (an unknown, lost or other tenant's id is refused with this route's error, before the 101)."""
    record = envs().get(local_id(instance_id), caller())
    return json_response({"instance_id": record.instance_id, "upgrade": "websocket"})


@bp.get("/stream")
def stream_batches() -> Response:
    """The batch stream: `{"op": "batch_step", "items": [...]}` messages (upgraded by the worker, as above)."""
    return json_response({"upgrade": "websocket"})


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return json_response(openapi.DOCUMENT)
