"""The one error hierarchy, and the one builder of error answers in each API's shape."""

from __future__ import annotations

from typing import Any, Literal

import orjson

# An error answer as WSGI wants it: status, headers, body.
Reply = tuple[int, list[tuple[str, str]], bytes]
Fault = Literal["client", "env", "infrastructure"]


class GymServeError(Exception):
    """Base of every error a client may see. `status` is the native (/v2) status; /v1 uses `v1_status`."""

    status = 400
    code = "bad_request"
    # Whose failure it is, and whether sending the same request again can succeed: decided here, per class,
    # so that every answer (app, front controller, batch items, the router's template) says the same.
    fault: Fault = "client"  # client: fix the request; env: the env itself failed; infrastructure: the service did
    retryable = False

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    @property
    def v1_status(self) -> int:
        """The seed answered 400 for every client error; keep that, except where the status is the point."""
        return self.status if self.status in (413, 415, 429, 503) or self.status >= 500 else 400


class BadRequest(GymServeError):
    """The request body or a parameter is malformed, missing or of the wrong type."""


class MissingParameter(BadRequest):
    code = "missing_parameter"

    def __init__(self, name: str) -> None:
        # The seed's exact words: clients match on them.
        super().__init__(f"A required request parameter '{name}' was not provided", details={"field": name})


class InvalidValue(BadRequest):
    """A value was understood but is not acceptable (wrong type, shape, dtype, range)."""

    status = 422
    code = "invalid_value"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={"field": field})


class MalformedEnvId(BadRequest):
    status = 422
    code = "unknown_env_id"


class EnvNotAllowed(BadRequest):
    status = 403
    code = "env_not_allowed"


class MissingDependency(BadRequest):
    """The env needs a package this server does not have: the server's make-up, not the request's."""

    status = 422
    code = "missing_dependency"
    fault = "infrastructure"


class EnvFailed(BadRequest):
    """The environment itself raised while handling a request that passed validation."""

    status = 422
    code = "env_error"
    fault = "env"


class UnknownInstance(GymServeError):
    status = 404
    code = "unknown_instance"

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Instance_id {instance_id} unknown", details={"instance_id": instance_id})


class InstanceLost(GymServeError):
    status = 410
    code = "instance_lost"
    fault = "infrastructure"  # the env's state is gone: only a new env helps, so no retry

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"Instance_id {instance_id} unknown: the env was lost with its worker, which is no longer "
            "running; create a new env",
            details={"instance_id": instance_id},
        )


class OwnerTimeout(GymServeError):
    """The worker that holds the env did not answer a forwarded request in time."""

    status = 504
    code = "owner_timeout"
    fault = "infrastructure"
    retryable = True  # a numbered step or reset is safe to resend: it never runs twice


class ResetNeeded(GymServeError):
    status = 409
    code = "reset_needed"


class SequenceConflict(GymServeError):
    """A reset or step whose sequence number is not the next one (nor a resend of the last one)."""

    status = 409
    code = "sequence_conflict"

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message, details={"field": "seq", "expected": expected, "got": got})


class NotSupported(BadRequest):
    status = 422
    code = "not_supported"


class PayloadTooLarge(GymServeError):
    status = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body exceeds the server's limit of {limit} bytes (GYMSERVE_MAX_BODY_BYTES)",
            details={"field": "body", "limit": limit},
        )


class UnsupportedMediaType(GymServeError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(GymServeError):
    """The server cannot take this request now; Retry-After says when to try again."""

    status = 503
    code = "unavailable"
    fault = "infrastructure"
    retryable = True

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})


class CapacityExceeded(Unavailable):
    code = "capacity_exceeded"


class Draining(Unavailable):
    code = "draining"


class WrongReplica(GymServeError):
    """An item of a batch names an env of another replica: batches never cross replicas (only one item fails)."""

    status = 421  # Misdirected Request
    code = "wrong_replica"

    def __init__(self, instance_id: str, node: str, here: str) -> None:
        super().__init__(
            f"Instance_id {instance_id} lives on replica {node}, not on {here}: a batch steps the envs of the "
            "replica it is sent to; send this env's step to its own replica",
            details={"instance_id": instance_id, "replica": node},
        )


class RoutingError(GymServeError):
    """What is refused before any view runs (no such route, a method it does not take): one status on both APIs."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code
        if status >= 500:
            self.fault = "infrastructure"

    @property
    def v1_status(self) -> int:
        return self.status


class Internal(GymServeError):
    """What a client is told of a bug: nothing but that it happened (the traceback goes to the log)."""

    status = 500
    code = "internal"
    fault = "infrastructure"

    def __init__(self) -> None:
        super().__init__("internal server error")


class IdempotencyInFlight(GymServeError):
    """A create with this key is still being made: its answer comes to the request that is running it."""

    status = 409
    code = "idempotency_in_flight"
    retryable = True


class IdempotencyMismatch(GymServeError):
    """This key already named a create with another body: a key names one create, never two."""

    status = 422
    code = "idempotency_mismatch"


class InvalidSnapshot(BadRequest):
    """A snapshot this farm's key did not seal (altered, foreign, not a snapshot), or that cannot be restored."""

    status = 422
    code = "invalid_snapshot"

    def __init__(self, message: str) -> None:
        super().__init__(message, details={"field": "snapshot"})


def error_body(err: GymServeError, native: bool) -> dict[str, Any]:
    """/v2 (`native`): {"error": {code, message, details, fault, retryable}}; /v1: the seed's {"message"} plus
    code, fault, retryable and details (additive fields: seed clients read only the message)."""
    kind = {"fault": err.fault, "retryable": err.retryable}
    if native:
        return {"error": {"code": err.code, "message": err.message, "details": err.details, **kind}}
    body: dict[str, Any] = {"message": err.message, "code": err.code, **kind}
    if err.details:
        body["details"] = err.details
    return body


def kinds() -> dict[str, tuple[str, bool]]:
    """Every error code this server sends, with its fault and retryable: for the OpenAPI document and tests."""
    found: dict[str, tuple[str, bool]] = {}
    pending: list[type[GymServeError]] = [GymServeError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, (cls.fault, cls.retryable))
        pending.extend(cls.__subclasses__())
    return found


def error_reply(err: GymServeError, native: bool) -> Reply:
    """The whole error answer: /v2 with the error's own status, /v1 with the seed's."""
    body = orjson.dumps(error_body(err, native))
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *err.headers.items()]
    return (err.status if native else err.v1_status), headers, body


class Unauthorized(GymServeError):
    """A farm with tenants: the request carries no key, or one no tenant holds (both APIs answer 401)."""

    status = 401
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "this server needs an API key: send 'Authorization: Bearer <key>' with a key of your tenant",
            headers={"WWW-Authenticate": 'Bearer realm="gymserve"'},
        )

    @property
    def v1_status(self) -> int:
        return self.status


class QuotaExceeded(GymServeError):
    """The tenant holds as many envs as its quota allows, farm-wide (the farm itself may have room)."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, tenant: str, limit: int, usage: int, weight: int) -> None:
        super().__init__(
            f"tenant {tenant} holds {usage} of its {limit} envs across the farm and cannot take {weight} more; "
            "close some of its envs first",
            details={"tenant": tenant, "limit": limit, "usage": usage, "requested": weight},
        )


class RateLimited(GymServeError):
    """The tenant created envs faster than its creates_per_minute; Retry-After says when the next one fits."""

    status = 429
    code = "rate_limited"

    def __init__(self, tenant: str, limit: int, retry_after: int) -> None:
        super().__init__(
            f"tenant {tenant} may create {limit} envs per minute across the farm; retry in {retry_after}s",
            details={"tenant": tenant, "limit": limit},
            headers={"Retry-After": str(retry_after)},
        )


class AnswerTooLarge(BadRequest):
    """An env whose observations (or renders) would make answers larger than the server allows one to be."""

    status = 422
    code = "answer_too_large"

    def __init__(self, field: str, size: int, limit: int, setting: str) -> None:
        super().__init__(
            f"{field}: one answer of this env would hold {size} bytes, over the limit of "
            f"{limit} ({setting}); ask for fewer sub-envs or smaller observations",
            details={"field": field, "size": size, "limit": limit, "setting": setting},
        )


class StoreUnavailable(Unavailable):
    """The shared store that counts tenants' envs cannot be reached: creates wait, steps go on."""

    code = "quota_store_unavailable"
