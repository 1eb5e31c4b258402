"""The one reset and step handler: whatever route a call came by (/v1, /v2, a batch item, a forward), it runs here.

It decodes the body against the one model, negotiates the answer's type, numbers the call (a resend
of the last number is answered again, never run twice), runs it under the env's lock and encodes the
answer: /v2 in native values (JSON or msgpack, gzipped when large), /v1 in the seed's wire format.
Flask views and the front controller both call `run`; batch items call `step_item`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

from ..codec import seed, values
from ..errors import InvalidValue, Reply, ResetNeeded
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..lifecycle.registry import EnvRecord
from . import models, negotiation, operations, sequencing

Payload = dict[str, Any]
# The route templates of the calls this handler answers, for the request metrics.
ROUTES = {
    ("v1", "reset"): "/v1/envs/<instance_id>/reset/",
    ("v1", "step"): "/v1/envs/<instance_id>/step/",
    ("v2", "reset"): "/v2/envs/<instance_id>/reset",
    ("v2", "step"): "/v2/envs/<instance_id>/step",
}


class Call(NamedTuple):
    """A reset or step as it came in, before anything is decoded (a NamedTuple: made on every step, at a fraction of
    a frozen dataclass's cost)."""

    api: str  # "v1" or "v2"
    kind: str  # "reset" or "step"
    instance_id: str  # resolved as this worker's by the caller
    body: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    accept: str | None = None
    accept_encoding: str | None = None


def run(envs: Envs, call: Call, caller: Caller) -> Reply:
    """The answer to a reset or step of an env this worker holds; a client error raises GymServeError."""
    if call.api == "v1":
        return _run_v1(envs, call, caller)
    media_type = negotiation.body_type(call.content_type, call.content_encoding)
    answer_type = negotiation.answer_type(call.accept)
    if call.kind == "step":
        step = models.decode(call.body, media_type, models.StepRequest, required=True)
        with envs.use(call.instance_id, caller, step.seq) as record:
            digest = b"" if step.seq is None else sequencing.request_digest("step", step.action)
            out = sequencing.answer_bytes(
                record, step.seq, digest, answer_type, partial(step_payload, record, step.action)
            )
    else:
        reset = models.decode(call.body, media_type, models.ResetRequest)
        with envs.use(call.instance_id, caller, reset.seq) as record:
            digest = b"" if reset.seq is None else sequencing.request_digest("reset", [reset.seed, reset.options])
            run_reset = partial(reset_payload, record, reset.seed, reset.options)
            out = sequencing.answer_bytes(record, reset.seq, digest, answer_type, run_reset)
    body, headers = negotiation.encoded(out, answer_type, call.accept_encoding)
    return 200, headers, body


def step_item(envs: Envs, item: models.BatchItem, caller: Caller) -> Payload:
    """One item of a batch, stepped here: its answer as a value (a numbered one is kept for a resend)."""
    with envs.use(item.id, caller, item.seq) as record:
        digest = b"" if item.seq is None else sequencing.request_digest("step", item.action)
        return sequencing.answer_payload(record, item.seq, digest, partial(step_payload, record, item.action))


# --- what a reset or a step answers ---


def reset_payload(record: EnvRecord, seeds: operations.Seeds, options: dict[str, Any] | None) -> Payload:
    if record.num_envs is not None:
        obs, info = operations.vector_reset(record, seeds, options)
    elif isinstance(seeds, list):
        raise InvalidValue("seed", "a list of seeds is for vector envs (num_envs); this env takes one seed")
    else:
        obs, info = operations.reset(record, seeds, options)
    return {"observation": obs, "info": info}


def step_payload(record: EnvRecord, action: Any) -> Payload:
    """A single env's transition, or a vector env's batched one (rewards, terminated, truncated as arrays)."""
    if record.num_envs is not None:
        obs, rewards, terminated, truncated, info = operations.vector_step(record, action)
        return {"observation": obs, "reward": rewards, "terminated": terminated, "truncated": truncated, "info": info}
    if record.episode_over:  # /v2's contract; /v1 lets Gymnasium answer as the seed did
        raise ResetNeeded(
            f"Instance_id {record.instance_id}: the episode has ended (terminated or truncated); reset before the "
            "next step",
            details={"instance_id": record.instance_id},
        )
    obs, reward, term, trunc, info = operations.step(record, action)
    return {"observation": obs, "reward": reward, "terminated": term, "truncated": trunc, "info": info}


# --- /v1: the seed's bodies and wire format ---


def _run_v1(envs: Envs, call: Call, caller: Caller) -> Reply:
    if call.kind == "step":
        step = models.decode_v1(call.body, models.StepRequest, required=True)
        with envs.use(call.instance_id, caller) as record:
            obs, reward, terminated, truncated, info = operations.step(record, step.action)
            payload: Payload = {
                "observation": seed.encode_observation(obs),
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated or truncated,
                "info": info,
            }
    else:
        reset = models.decode_v1(call.body, models.ResetRequest)
        if isinstance(reset.seed, list):
            raise InvalidValue("seed", f"expected an integer from 0 to 2**63-1, got {reset.seed!r}")
        with envs.use(call.instance_id, caller) as record:
            obs, info = operations.reset(record, reset.seed, reset.options)
            payload = {"observation": seed.encode_observation(obs), "info": info}
    body = seed.dumps(payload)
    return 200, [("Content-Type", values.JSON), ("Content-Length", str(len(body)))], body
