"""Every /v2 answer body, declared once: the views return these, and the OpenAPI document takes its response schemas
from them (as it takes the request schemas from pipeline.models).

The structs are encoded by codec.values like any native value (JSON or msgpack, ndarrays tagged), field by field
in declaration order under their wire names; a field left UNSET is not sent. Resets and steps are the exception:
the handler builds them on the hot path as plain dicts, which cost nothing to build, and tests hold their keys to
ResetAnswer, StepAnswer and VectorStepAnswer. Error bodies are built by errors.error_body (every API and the lean
path use it), and tests hold them to Error.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import gymnasium as gym
import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..codec import spaces
from ..errors import Fault, kinds
from ..lifecycle import copies
from ..lifecycle.registry import EnvRecord
from ..routing import ids
from .models import AutoresetModeName, Value, ValueMap

REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


# Values whose schemas are written by hand in the OpenAPI document (api/openapi.py), referred to by name.
Space = Annotated[Any, Meta(extra_json_schema=_ref("Space"))]
NullableSpace = Annotated[Any, Meta(extra_json_schema={"anyOf": [_ref("Space"), {"type": "null"}]})]
NDArray = Annotated[Any, Meta(extra_json_schema=_ref("NDArray"))]
Float = Annotated[Any, Meta(extra_json_schema=_ref("Float"))]
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Count = Annotated[int, Meta(ge=0)]
AnswerSeq = Annotated[int, Meta(ge=1)]
_KINDS_TEXT = "; ".join(
    f"{code} {fault}{' (retryable)' if retry else ''}" for code, (fault, retry) in sorted(kinds().items())
)


class Answer(msgspec.Struct, forbid_unknown_fields=True):
    """An answer body: a closed object, every field sent (UNSET ones excepted)."""


# --- what the server says about an env ---


class LastEpisode(Answer, rename={"return_": "return"}):
    """The return and length of the last episode that finished (any sub-env's)."""

    return_: float
    length: Count


class EnvSummary(Answer):
    instance_id: Annotated[str, Meta(description="<node>.<worker>-<generation>.<32 hex digits>")]
    env_id: str
    created_at: Timestamp
    last_used_at: Timestamp
    steps: Count
    episodes: Annotated[int, Meta(ge=0, description="Resets so far.")]
    seq: Annotated[int, Meta(ge=0, description="The last sequence number (resets + steps).")]
    ttl: Annotated[float, Meta(ge=0, description="Idle seconds before the env is closed; 0: never.")]
    ttl_left: Annotated[float, Meta(ge=0)] | None
    expires_at: Timestamp | None
    num_envs: Annotated[int, Meta(ge=1, description="A vector env's sub-envs; null for a single env.")] | None
    autoreset_mode: (
        Annotated[
            AutoresetModeName,
            Meta(description="Gymnasium's AutoresetMode of a vector env; see docs/vector-and-batch.md."),
        ]
        | None
    )
    render_mode: str | None
    idle_seconds: Annotated[float, Meta(ge=0, description="Seconds since the env was last used.")]
    last_episode: LastEpisode | None
    labels: Annotated[dict[str, str], Meta(description="The labels given at create (empty if none).")]
    state: Annotated[
        Literal["live", "parked"],
        Meta(description="parked: moved out of its worker (a drain, or hibernated); the next request brings it back."),
    ]


class EnvSpec(Answer):
    """The env's Gymnasium spec: how it was made."""

    id: str
    max_episode_steps: int | None
    reward_threshold: float | None
    nondeterministic: bool
    kwargs: ValueMap
    wrappers: list[str]


class Owner(Answer):
    """Where the env lives: its replica (node), worker slot and that worker's generation."""

    node: str
    worker: int
    generation: int


class RecentEpisodes(Answer):
    """The returns and lengths of the last finished episodes (GYMSERVE_EPISODE_HISTORY of them), oldest first; a
    vector env's from every sub-env. An episode cut short by a reset is not one."""

    returns: list[float]
    lengths: list[Count]


class EnvInfo(EnvSummary):
    """For a vector env, action_space and observation_space are batched and the single_* spaces are one sub-env's;
    for a single env the single_* spaces are null."""

    spec: EnvSpec | None
    seed: Annotated[int, Meta(description="The seed of the last reset that was given one.")] | None
    owner: Owner
    movable: Annotated[
        bool,
        Meta(
            description="Whether the env's state can be copied: a fork, a snapshot, and a park when its worker stops "
            "(one that cannot is lost then, with details.reason not_movable)."
        ),
    ]
    gymnasium_version: str
    action_space: Space
    observation_space: Space
    single_action_space: NullableSpace
    single_observation_space: NullableSpace
    recent_episodes: RecentEpisodes
    # Only in the answer to a create, and only when the replica has a GYMSERVE_PUBLIC_URL: where to step it directly.
    direct_url: (
        Annotated[
            str,
            Meta(
                description="The owning replica's own base URL (GYMSERVE_PUBLIC_URL): a client may step this env "
                "there, and falls back to the URL it created it through when that does not answer."
            ),
        ]
        | UnsetType
    ) = UNSET


class EnvList(Answer):
    """One page of the caller's envs, ordered by instance id."""

    envs: list[EnvSummary]
    next_cursor: Annotated[str | None, Meta(description="Pass as cursor for the next page; null on the last page.")] = (
        None
    )


class DeleteCount(Answer):
    deleted: Count


# --- resets, steps, renders (the handler builds these as dicts: see the module's docstring) ---


class ResetAnswer(Answer):
    observation: Value
    info: ValueMap
    seq: AnswerSeq


class StepAnswer(Answer):
    observation: Value
    reward: Float
    terminated: bool
    truncated: bool
    info: ValueMap
    seq: AnswerSeq


class VectorStepAnswer(Answer):
    """A vector env's step: batched observations, float64 rewards and bool flags, one per sub-env; info in
    Gymnasium's vector form (key and _key mask; final_obs/final_info in same_step mode)."""

    observation: Value
    reward: NDArray
    terminated: NDArray
    truncated: NDArray
    info: ValueMap
    seq: AnswerSeq


class RenderAnswer(Answer):
    frame: Value


# --- errors (errors.error_body builds them: see the module's docstring) ---


class ErrorDetail(Answer):
    code: Annotated[str, Meta(description="Machine-readable; see the error table.")]
    message: str
    details: Annotated[
        dict[str, Any],
        Meta(description="`field` names the offending input; sequence conflicts add `expected` and `got`."),
    ]
    fault: Annotated[
        Fault,
        Meta(
            description="Whose failure: client (fix the request), env (the env itself raised), infrastructure (the "
            "service failed: a trainer may drop the episode rather than learn from it). By code: " + _KINDS_TEXT
        ),
    ]
    retryable: Annotated[
        bool,
        Meta(
            description="Whether sending the same request again (after Retry-After, if given) can succeed; numbered "
            "resets and steps are safe to resend."
        ),
    ]


class Error(Answer):
    """Every /v2 error answer (and every failed item of a batch)."""

    error: ErrorDetail


class BatchStepAnswer(Answer):
    results: Annotated[
        list[Any],
        Meta(
            description="One per item, in request order: its step answer, or its own error.",
            extra_json_schema={"items": {"anyOf": [_ref("StepAnswer"), _ref("VectorStepAnswer"), _ref("Error")]}},
        ),
    ]


# Every answer declared here, for the OpenAPI document (components/schemas) and its tests.
ANSWERS: tuple[type[Answer], ...] = (
    EnvSummary,
    EnvInfo,
    EnvList,
    DeleteCount,
    ResetAnswer,
    StepAnswer,
    VectorStepAnswer,
    BatchStepAnswer,
    RenderAnswer,
    Error,
)


# --- built from an env's record ---


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(record: EnvRecord) -> EnvSummary:
    return EnvSummary(**_summary_fields(record))


def info(record: EnvRecord, where: ids.Owner, direct_url: str | None = None) -> EnvInfo:
    """The env's info, from the worker `where` that holds it (an adopted env's id names the worker that made it); a
    create's also says where its replica answers without the router (`direct_url`)."""
    env, spec = record.env, record.env.spec
    return EnvInfo(
        **_summary_fields(record),
        spec=None
        if spec is None
        else EnvSpec(
            id=spec.id,
            max_episode_steps=spec.max_episode_steps,
            reward_threshold=spec.reward_threshold,
            nondeterministic=spec.nondeterministic,
            kwargs=spec.kwargs,
            wrappers=[w.name for w in spec.additional_wrappers],
        ),
        seed=record.seed,
        owner=Owner(node=where.node, worker=where.slot, generation=where.generation),
        movable=copies.movable(record),
        gymnasium_version=gym.__version__,
        action_space=spaces.describe_space(env.action_space),
        observation_space=spaces.describe_space(env.observation_space),
        # A vector env's spaces are batched; these are one sub-env's.
        single_action_space=_single_space(env, "single_action_space"),
        single_observation_space=_single_space(env, "single_observation_space"),
        recent_episodes=RecentEpisodes(
            returns=[r for r, _ in record.recent_episodes], lengths=[n for _, n in record.recent_episodes]
        ),
        direct_url=UNSET if direct_url is None else direct_url,
    )


def _summary_fields(record: EnvRecord) -> dict[str, Any]:
    now, idle = time.time(), record.idle_seconds()
    ttl_left = round(max(0.0, record.ttl - idle), 3) if record.ttl > 0 else None
    return {
        "instance_id": record.instance_id,
        "env_id": record.env_id,
        "created_at": timestamp(record.created_at),
        "last_used_at": timestamp(now - idle),
        "steps": record.steps,
        "episodes": record.episodes,
        "seq": record.seq,
        "ttl": record.ttl,
        "ttl_left": ttl_left,
        "expires_at": None if ttl_left is None else timestamp(now + ttl_left),
        "num_envs": record.num_envs,
        "autoreset_mode": record.autoreset_mode,
        "render_mode": getattr(record.env, "render_mode", None),
        "idle_seconds": round(idle, 3),
        "last_episode": _last_episode(record),
        "labels": record.labels,
        "state": "live",
    }


def _last_episode(record: EnvRecord) -> LastEpisode | None:
    if not record.recent_episodes:
        return None
    episode_return, length = record.recent_episodes[-1]
    return LastEpisode(return_=episode_return, length=length)


def _single_space(env: Any, name: str) -> dict[str, Any] | None:
    space = getattr(env, name, None)
    return None if space is None else spaces.describe_space(space)
