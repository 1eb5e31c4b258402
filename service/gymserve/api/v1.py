"""/v1: the seed server's routes, JSON shapes, status codes and messages, with its bugs fixed."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from ..codec import seed as codec
from ..codec import spaces as space_codec
from ..codec import values
from ..errors import InvalidValue
from ..pipeline import create, models, operations
from .common import (
    add_reset_and_step,
    caller,
    envs,
    incoming,
    json_body,
    json_response,
    local_id,
    required_param,
    services,
)

bp = Blueprint("v1", __name__, url_prefix="/v1/envs")


@bp.post("/")
def env_create() -> Response:
    outcome = services().creates.v1(incoming(), caller())
    if isinstance(outcome, create.Made):
        return json_response(outcome.payload, outcome.status)
    status, headers, body = outcome
    return Response(body, status=status, headers=headers)


@bp.get("/")
def env_list_all() -> Response:
    """The caller's envs on the whole replica (this worker's, plus each sibling's) or farm (GYMSERVE_PEERS_DNS)."""
    all_envs = {r.instance_id: r.env_id for r in envs().list(caller())}
    for body in services().fanout.answers(caller(), "/v1/envs/", "application/json"):
        all_envs.update(orjson.loads(body).get("all_envs", {}))
    return json_response({"all_envs": all_envs})


@bp.get("/<instance_id>/")
def env_get_id(instance_id: str) -> Response:
    return json_response({"id": envs().touch(local_id(instance_id), caller()).env_id})


add_reset_and_step(bp, "v1", "/<instance_id>/{kind}/", "env_{kind}")


@bp.get("/<instance_id>/render/")
def env_render(instance_id: str) -> Response:
    with envs().use(local_id(instance_id), caller()) as record:
        if record.env.render_mode is None:
            return json_response({"render_frame": None})  # the seed's answer for an env made without render_mode
        return json_response({"render_frame": codec.encode_frame(operations.render(record))})


@bp.get("/<instance_id>/action_space/")
def env_action_space_info(instance_id: str) -> Response:
    record = envs().touch(local_id(instance_id), caller())
    return json_response({"info": space_codec.describe(record.env.action_space)})


@bp.get("/<instance_id>/action_space/sample/")
def env_action_space_sample(instance_id: str) -> Response:
    with envs().use(local_id(instance_id), caller()) as record:
        return json_response({"action": operations.sample_action(record)})


@bp.get("/<instance_id>/action_space/contains/<path:action>/")
def env_action_space_contains(instance_id: str, action: str) -> Response:
    try:
        value = orjson.loads(action)  # "1", "[0.5, -1]", "{\"a\": 1}"; anything else is a Text action
    except orjson.JSONDecodeError:
        value = action
    values.check_depth(value, "action")
    record = envs().touch(local_id(instance_id), caller())
    return json_response({"member": operations.action_contains(record, value)})


@bp.post("/<instance_id>/action_space/contains/")
def env_action_space_contains_body(instance_id: str) -> Response:
    """Additive: the same check with the action in a JSON body, for Dict, Tuple and Text actions."""
    value = required_param(json_body(), "action")
    record = envs().touch(local_id(instance_id), caller())
    return json_response({"member": operations.action_contains(record, value)})


@bp.post("/<instance_id>/observation_space/contains/")
def env_observation_space_contains(instance_id: str) -> Response:
    """The seed's check: do the given properties match the space's description (not: is this an obs)."""
    body = json_body()
    record = envs().touch(local_id(instance_id), caller())
    info = space_codec.describe(record.env.observation_space)
    member = all(key in info and info[key] == value for key, value in body.items())
    return json_response({"member": member})


@bp.get("/<instance_id>/observation_space/")
def env_observation_space_info(instance_id: str) -> Response:
    record = envs().touch(local_id(instance_id), caller())
    return json_response({"info": space_codec.describe(record.env.observation_space)})


@bp.get("/<instance_id>/transitions/")
def env_get_transitions(instance_id: str) -> Response:
    record = envs().touch(local_id(instance_id), caller())
    return json_response({"transitions": operations.transitions(record)})


@bp.post("/<instance_id>/episodes/")
def env_episode_samples(instance_id: str) -> Response:
    settings = envs().settings
    body = models.decode_v1(request.get_data(cache=True), models.EpisodesRequest, required=True)
    limit = settings.episodes_max_count
    if body.count > limit:
        raise InvalidValue(
            "count", f"expected an integer from 0 to {limit} (GYMSERVE_EPISODES_MAX_COUNT), got {body.count}"
        )
    with envs().use(local_id(instance_id), caller()) as record:
        eps = operations.episodes(
            record, body.count, body.seed, settings.episodes_max_steps, settings.episodes_max_bytes
        )
        return json_response(
            {"episodes": [[{"s": codec.encode_observation(obs), "r": reward} for obs, reward in ep] for ep in eps]}
        )


@bp.delete("/<instance_id>/")
def env_close(instance_id: str) -> Response:
    envs().close(local_id(instance_id), caller())
    return Response("", status=200)


@bp.post("/<instance_id>/close/")
def env_close_legacy(instance_id: str) -> Response:
    """The older gym-http-api clients close with POST .../close/; answer them too."""
    return env_close(instance_id)
