"""Every request body, declared once: /v1, /v2, batch items, the client and the OpenAPI document all use these.

msgspec decodes JSON and msgpack straight into these structs and refuses unknown fields, wrong types
and out-of-range values from the declaration alone; the few bounds that come from settings are checked
by `check_limits`. Values (actions, kwargs, options) stay wire trees here and become native values in
`decode`, since only codec.values knows the `$nd` tags.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
import orjson
from msgspec import Meta

from ..codec import values
from ..errors import BadRequest, InvalidValue, MalformedEnvId, MissingParameter
from ..lifecycle.labels import MAX_LABELS as MAX_LABELS
from ..lifecycle.labels import Labels
from ..settings import Settings

MAX_U63 = 2**63 - 1
VALUE_REF = "#/components/schemas/Value"
Value = Annotated[Any, Meta(extra_json_schema={"$ref": VALUE_REF})]
ValueMap = Annotated[dict[str, Any], Meta(extra_json_schema={"additionalProperties": {"$ref": VALUE_REF}})]
Seq = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_U63,
        description="Numbers this reset or step (1, 2, ...) so that a resend of the last one is answered again "
        "instead of running twice.",
    ),
]
Seed = Annotated[int, Meta(ge=0, le=MAX_U63)]
# A day and then some: the server caps every ttl at GYMSERVE_ENV_TTL_MAX_SECONDS; this only refuses nonsense.
Ttl = Annotated[float, Meta(gt=0, le=1e9, description="Idle seconds before the env is closed (capped by the server).")]
Wrapper = Literal["AddRenderObservation"]
# A vector env's autoreset modes by their /v2 names: Gymnasium's AutoresetMode members, in snake case. The one list:
# the request and answer declarations, the OpenAPI document, the factory and its checks all take the modes from here.
AutoresetModeName = Literal["next_step", "same_step", "disabled"]
DEFAULT_AUTORESET: AutoresetModeName = "next_step"  # Gymnasium's own default


class Body(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A request body: unknown fields are refused (/v1's lenient decode drops them first)."""

    # Fields holding native values: wire trees until `decode` turns them into ndarrays, tuples, floats.
    __values__: ClassVar[tuple[str, ...]] = ()


class CreateRequest(Body):
    env_id: Annotated[str, Meta(examples=["CartPole-v1"])]
    kwargs: ValueMap | None = None
    max_episode_steps: Annotated[int, Meta(ge=1)] | None = None
    auto_reset: bool | None = None
    disable_env_checker: bool | None = None
    ttl: Ttl | None = None
    wrappers: (
        Annotated[list[Wrapper], Meta(description="AddRenderObservation: the observation is the rgb_array frame.")]
        | None
    ) = None
    num_envs: (
        Annotated[
            int,
            Meta(
                ge=1,
                description="Create a vector env: gymnasium.make_vec(env_id, num_envs, vectorization_mode='sync') "
                "behind one id. Bounded by GYMSERVE_MAX_NUM_ENVS; each sub-env counts against capacity.",
            ),
        ]
        | None
    ) = None
    autoreset_mode: (
        Annotated[
            AutoresetModeName,
            Meta(description=f"Vector envs only (Gymnasium's AutoresetMode); default {DEFAULT_AUTORESET}."),
        ]
        | None
    ) = None
    labels: Labels | None = None
    snapshot: (
        Annotated[
            bytes,
            Meta(
                description="Restore a snapshot (GET /v2/envs/<id>/snapshot) instead of making a new env: msgpack "
                "bin, or base64 in JSON. env_id must be the snapshot's; ttl and labels may be given (labels: the "
                "snapshot's unless given); num_envs and autoreset_mode, if given, must be the snapshot's; no "
                "other field. Needs the same GYMSERVE_SNAPSHOT_KEY as the farm that made it."
            ),
        ]
        | None
    ) = None

    __values__ = ("kwargs",)

    @property
    def weight(self) -> int:
        """What the env will count against capacity: each sub-env of a vector env counts."""
        return self.num_envs or 1


class ResetRequest(Body):
    seed: (
        Annotated[
            Seed | list[Seed | None],
            Meta(
                description="Vector envs: one seed seeds sub-env i with seed + i; a list gives one seed (or null) "
                "per sub-env."
            ),
        ]
        | None
    ) = None
    options: ValueMap | None = None
    seq: Seq | None = None

    __values__ = ("options",)


class StepRequest(Body):
    action: Value
    seq: Seq | None = None

    __values__ = ("action",)


class BatchItem(Body):
    id: str
    action: Value
    seq: Seq | None = None


class BatchStepRequest(Body):
    items: Annotated[
        list[BatchItem], Meta(min_length=1, description="At most GYMSERVE_MAX_BATCH_SIZE items, each env at most once.")
    ]


class EpisodesRequest(Body):
    """/v1 only: the seed's /episodes (random-action episodes run on the server)."""

    count: Annotated[int, Meta(ge=0)]
    seed: Seed | None = None


class ForkRequest(Body):
    """POST /v2/envs/<id>/fork: the fork's own TTL and labels (the original's unless given)."""

    ttl: Ttl | None = None
    labels: Labels | None = None


MODELS = (CreateRequest, ResetRequest, StepRequest, BatchStepRequest, ForkRequest)
B = TypeVar("B", bound=Body)
_AT = re.compile(r" - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"`(?P<name>[^`]+)`")
# A /v1 seed given as a string: ASCII digits ("²" is a digit to str.isdigit, not to int), and few enough that
# int() takes them (it refuses more than 4300); a longer one stays a string and is refused as one, naming seed.
_DIGITS = re.compile(r"[0-9]{1,30}")


@functools.cache
def _decoder(model: type[Any], msgpack: bool) -> Any:
    """One decoder per model and format: `decode(raw, type=...)` builds the type's decoder again at every call (3 us
    of a step's server CPU)."""
    return msgspec.msgpack.Decoder(model | None) if msgpack else msgspec.json.Decoder(model | None)


def decode(raw: bytes, media_type: str, model: type[B], *, required: bool = False) -> B:
    """/v2: a JSON or msgpack body as `model`, its values native; an empty or null body is `model()` unless required."""
    if not raw.strip():
        return _empty(model, required)
    try:
        body = _decoder(model, values.is_msgpack(media_type)).decode(raw)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc), model) from None
    except msgspec.DecodeError as exc:
        kind = "msgpack" if values.is_msgpack(media_type) else "JSON"
        raise BadRequest(f"body is not valid {kind}: {str(exc)[:120]}", details={"field": "body"}) from None
    except RecursionError:  # msgspec descends by recursion: a body nested ~1000 deep reaches Python's limit
        raise BadRequest(
            f"the body is nested too deeply: values may nest at most {values.MAX_DEPTH} levels",
            details={"field": "body"},
        ) from None
    if body is None:
        return _empty(model, required)
    _make_native(body)
    return body


def decode_v1(raw: bytes, model: type[B], *, required: bool = False) -> B:
    """/v1, as the seed read bodies: JSON whatever the Content-Type, unknown fields ignored, and null, "" and []
    meaning "not given"; then the same declaration decides."""
    if not raw.strip():
        if required:
            raise BadRequest("Request is not a valid json")
        return model()
    try:
        tree = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Request is not a valid json") from None
    if tree is None and not required:
        return model()
    if not isinstance(tree, dict):
        raise BadRequest("Request body must be a JSON object")
    known = model.__struct_fields__
    given = {k: v for k, v in tree.items() if k in known and not absent(v)}
    for name in model.__values__:  # orjson stops at 1024 levels; what uses these trees recurses well before
        if name in given:
            values.check_depth(given[name], name)
    seed = given.get("seed")
    if isinstance(seed, str) and _DIGITS.fullmatch(seed.strip()):
        given["seed"] = int(seed)  # the seed server took seeds as digit strings too
    try:
        return msgspec.convert(given, model)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc), model) from None


def absent(value: Any) -> bool:
    """The seed treats null, "" and [] alike as "not given"."""
    return value is None or (isinstance(value, (str, list)) and len(value) == 0)


def check_limits(body: CreateRequest, settings: Settings) -> None:
    """The bounds that are settings rather than declarations."""
    limit = settings.max_episode_steps_limit
    if body.max_episode_steps is not None and body.max_episode_steps > limit:
        raise InvalidValue(
            "max_episode_steps",
            f"expected an integer from 1 to {limit} (GYMSERVE_MAX_EPISODE_STEPS_LIMIT), got {body.max_episode_steps}",
        )
    if body.num_envs is not None and body.num_envs > settings.max_num_envs:
        raise InvalidValue(
            "num_envs",
            f"expected an integer from 1 to {settings.max_num_envs} (GYMSERVE_MAX_NUM_ENVS), got {body.num_envs}",
        )


def _empty(model: type[B], required: bool) -> B:
    if not required and len(model.__struct_defaults__) == len(model.__struct_fields__):  # every field optional
        return model()
    raise BadRequest("this request needs a body", details={"field": "body"})


def _make_native(body: Body) -> None:
    for name in body.__values__:
        value = getattr(body, name)
        if type(value) not in _NATIVE_ALREADY:  # a Discrete action, a seed: nothing to make
            setattr(body, name, values.from_wire(value, name))
    if isinstance(body, BatchStepRequest):
        for i, item in enumerate(body.items):
            item.action = values.from_wire(item.action, f"items[{i}].action")


_NATIVE_ALREADY = frozenset((type(None), bool, int, float, str))  # values that are their own native value


def _refusal(message: str, model: type[Body]) -> BadRequest:
    """msgspec's words ("Expected `int` >= 1 - at `$.seq`") as gymserve's errors, naming the field."""
    at = _AT.search(message)
    # A map's key or value (labels) is named by the map: "labels", not "labels[...]".
    path = at["path"].lstrip(".").removesuffix("[...]") if at else ""
    if at and at["key"]:
        text = message[: at.start()]
        return InvalidValue(path, "a key: " + text[0].lower() + text[1:])
    text = message[: at.start()] if at else message
    named = _NAMED.search(text)
    if text.startswith("Object missing required field") and named:
        return MissingParameter(_join(path, named["name"]))
    if text.startswith("Object contains unknown field") and named:
        field = _join(path, named["name"])
        takes = ", ".join(sorted(BatchItem.__struct_fields__ if path else model.__struct_fields__))
        return InvalidValue(field, f"unknown field; this request takes {takes}")
    if path == "env_id":
        return MalformedEnvId(
            "Attempted to look up malformed environment ID: env_id must be a string", details={"field": "env_id"}
        )
    if not path:
        return BadRequest("the body must be a map (a JSON object)", details={"field": "body"})
    return InvalidValue(path, text[0].lower() + text[1:])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
