"""The one error hierarchy, and the one builder of error answers in each API's shape."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import orjson

# An error answer as WSGI wants it: status, headers, body.
Reply = tuple[int, list[tuple[str, str]], bytes]
Fault = Literal["client", "env", "infrastructure"]


class GymServeError(Exception):
    """Base of every error a client may see. `status` is the native (/v2) status; /v1 uses `v1_status`.

    Each class's status, code, fault, retryable, answer_headers and the first paragraph of its docstring (when
    it is sent) make the error table of the OpenAPI document (`table`): say there what a client should know.
    """

    status = 400
    code = "bad_request"
    # Whose failure it is, and whether sending the same request again can succeed: decided here, per class,
    # so that every answer (app, front controller, batch items, the router's template) says the same.
    fault: Fault = "client"  # client: fix the request; env: the env itself failed; infrastructure: the service did
    retryable = False
    # Headers every answer of this error carries (documented in the OpenAPI error table).
    answer_headers: ClassVar[tuple[str, ...]] = ()

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
    """A required field or parameter was not given; details.field names it."""

    code = "missing_parameter"

    def __init__(self, name: str) -> None:
        # The seed's exact words: clients match on them.
        super().__init__(f"A required request parameter '{name}' was not provided", details={"field": name})


class InvalidValue(BadRequest):
    """A value was understood but is not acceptable (wrong type, shape, dtype, range); details.field names it."""

    status = 422
    code = "invalid_value"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={"field": field})


class MalformedEnvId(BadRequest):
    """The env id is not a registered Gymnasium id (or not a string); the message suggests the closest one."""

    status = 422
    code = "unknown_env_id"


class EnvNotAllowed(BadRequest):
    """The env id is not on this server's allowlist (GYMSERVE_ALLOWED_ENVS)."""

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
    """No env has this id: closed, reaped, never created, or another tenant's."""

    status = 404
    code = "unknown_instance"

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Instance_id {instance_id} unknown", details={"instance_id": instance_id})


class InstanceLost(GymServeError):
    """The env was lost with its worker process, which is no longer running; create a new env."""

    status = 410
    code = "instance_lost"
    fault = "infrastructure"  # the env's state is gone: only a new env helps, so no retry

    def __init__(self, instance_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"Instance_id {instance_id} unknown: the env was lost with its worker, which is no longer "
            "running; create a new env",
            details={"instance_id": instance_id} if reason is None else {"instance_id": instance_id, "reason": reason},
        )


class OwnerTimeout(GymServeError):
    """The worker that holds the env did not answer a forwarded request in time."""

    status = 504
    code = "owner_timeout"
    fault = "infrastructure"
    retryable = True  # a numbered step or reset is safe to resend: it never runs twice


class StepTimeout(GymServeError):
    """The env's call ran past its deadline (GYMSERVE_STEP_TIMEOUT_SECONDS, or its GYMSERVE_STEP_TIMEOUT_OVERRIDES
    entry). The env is quarantined: delete it and create another. Never resent: the env is what failed."""

    status = 504
    code = "step_timeout"
    fault = "env"

    def __init__(self, instance_id: str, seconds: float) -> None:
        super().__init__(
            f"Instance_id {instance_id}: the env did not answer within its deadline of {seconds:g}s; it is "
            "quarantined (delete it and create another)",
            details={"instance_id": instance_id, "deadline_seconds": seconds},
        )


class EnvQuarantined(GymServeError):
    """A call of this env ran past its deadline earlier: the env takes no more calls; delete it."""

    status = 409
    code = "env_quarantined"
    fault = "env"

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"Instance_id {instance_id} is quarantined: a call ran past its deadline; delete it and create another",
            details={"instance_id": instance_id},
        )


class CallInFlight(GymServeError):
    """A resend (the same seq) of a call that is still running: retry after Retry-After for its answer."""

    status = 409
    code = "call_in_flight"
    retryable = True
    answer_headers = ("Retry-After",)

    def __init__(self, instance_id: str, seq: int) -> None:
        super().__init__(
            f"Instance_id {instance_id}: the call numbered {seq} is still running; ask again for its answer",
            details={"instance_id": instance_id, "field": "seq", "seq": seq},
            headers={"Retry-After": "1"},
        )


class TenantBusy(GymServeError):
    """This tenant's slow calls already hold its share of the worker's threads (GYMSERVE_TENANT_THREAD_SHARE)."""

    status = 429
    code = "tenant_busy"
    retryable = True
    answer_headers = ("Retry-After",)

    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(
            f"tenant {tenant} already has {limit} slow env calls on this worker, its share of the threads "
            "(GYMSERVE_TENANT_THREAD_SHARE); retry later",
            details={"limit": limit},
            headers={"Retry-After": "1"},
        )


class ResetNeeded(GymServeError):
    """A step before the first reset, or after the episode ended (terminated or truncated): reset first."""

    status = 409
    code = "reset_needed"


class SequenceConflict(GymServeError):
    """A reset or step whose seq is neither the next number nor a resend of the last call; details.expected says
    which is next."""

    status = 409
    code = "sequence_conflict"

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message, details={"field": "seq", "expected": expected, "got": got})


class NotSupported(BadRequest):
    """The env cannot do what was asked: render without a render_mode, a fork or snapshot of an env that cannot be
    copied, a snapshot on a farm without GYMSERVE_SNAPSHOT_KEY."""

    status = 422
    code = "not_supported"


class PayloadTooLarge(GymServeError):
    """The body exceeds GYMSERVE_MAX_BODY_BYTES."""

    status = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body exceeds the server's limit of {limit} bytes (GYMSERVE_MAX_BODY_BYTES)",
            details={"field": "body", "limit": limit},
        )


class HeadTooLarge(GymServeError):
    """The request head (its line and header fields) exceeds 64 KiB: answered and closed before it is read."""

    status = 431
    code = "header_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request head exceeds {limit} bytes", details={"field": "headers", "limit": limit})


class UriTooLong(GymServeError):
    """The request line (its path and query) exceeds 8190 bytes: answered and closed before it is read."""

    status = 414
    code = "uri_too_long"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request line exceeds {limit} bytes", details={"field": "uri", "limit": limit})


class UnsupportedMediaType(GymServeError):
    """A Content-Type or Content-Encoding the server does not read."""

    status = 415
    code = "unsupported_media_type"


class Unavailable(GymServeError):
    """The server cannot take this request now; Retry-After says when to try again."""

    status = 503
    code = "unavailable"
    fault = "infrastructure"
    retryable = True
    answer_headers = ("Retry-After",)

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})


class Moving(Unavailable):
    """The env is moving between server processes (a drain, a restart, an upgrade); it keeps its id: retry after a
    second (details.reason is "moving")."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"env {instance_id} is moving to another server process; retry in a second",
            retry_after=1,
            details={"instance_id": instance_id, "reason": "moving"},
        )


class CapacityExceeded(Unavailable):
    """The replica is full (GYMSERVE_MAX_ENVS, GYMSERVE_MAX_ENVS_PER_WORKER); it reads not ready meanwhile."""

    code = "capacity_exceeded"


class Draining(Unavailable):
    """The replica is shutting down: existing envs keep working for a while, new ones go elsewhere."""

    code = "draining"


class WrongReplica(GymServeError):
    """An item of a batch names an env of another replica that this one does not send sub-batches to (see
    GYMSERVE_PEER_NODE_PATTERN): only that item fails, as its result."""

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

    # Its codes by status, and when each is sent (any other status the app refuses is "http_error").
    CODES: ClassVar[dict[int, tuple[str, str]]] = {
        404: ("not_found", "No such route."),
        405: ("method_not_allowed", "The route exists, but not with this method."),
    }

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code
        if status >= 500:
            self.fault = "infrastructure"

    @property
    def v1_status(self) -> int:
        return self.status


class Internal(GymServeError):
    """An unexpected failure: a client is told nothing but that it happened (the traceback goes to the log)."""

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


def closing_answer(err: GymServeError, native: bool) -> bytes:
    """The error's whole HTTP/1.1 answer, as bytes for a socket, ending its connection (written outside the WSGI
    app: by the worker before a request is read, by the deadline watchdog for a stuck call)."""
    status, headers, body = error_reply(err, native)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{head}Connection: close\r\n\r\n".encode("latin-1") + body


class Unauthorized(GymServeError):
    """A farm with tenants: the request carries no key, or one no tenant holds (both APIs answer 401)."""

    status = 401
    code = "unauthorized"
    answer_headers = ("WWW-Authenticate",)

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
    answer_headers = ("Retry-After",)

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


class EnvTooLarge(BadRequest):
    """Making this env took more memory than one env may hold on this server (GYMSERVE_MAX_ENV_BYTES)."""

    status = 422
    code = "env_too_large"

    def __init__(self, size: int, limit: int, setting: str) -> None:
        super().__init__(
            f"kwargs: making this env took {size} bytes of memory, over the limit of {limit} ({setting}); ask for "
            "a smaller env (its maps, sizes, or fewer sub-envs)",
            details={"field": "kwargs", "size": size, "limit": limit, "setting": setting},
        )


class StoreUnavailable(Unavailable):
    """The shared store that counts tenants' envs cannot be reached: creates wait, steps go on."""

    code = "quota_store_unavailable"


@dataclass(frozen=True)
class Kind:
    """One error answer: a row of the OpenAPI error table."""

    status: int
    code: str
    fault: Fault
    retryable: bool
    headers: tuple[str, ...]
    text: str  # when it is sent


def table() -> list[Kind]:
    """Every error answer this server sends, by status and code, from the classes themselves (status, code, fault,
    retryable, answer_headers, the first paragraph of the docstring): the OpenAPI error table and its tests."""
    rows: dict[tuple[int, str], Kind] = {}
    pending: list[type[GymServeError]] = list(GymServeError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        when = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        if cls is RoutingError:
            for status, (code, text) in RoutingError.CODES.items():
                rows[status, code] = Kind(status, code, cls.fault, cls.retryable, cls.answer_headers, text)
            continue
        # A subclass with its parent's status and code would add nothing: the parent's words stand.
        rows.setdefault(
            (cls.status, cls.code), Kind(cls.status, cls.code, cls.fault, cls.retryable, cls.answer_headers, when)
        )
    return sorted(rows.values(), key=lambda kind: (kind.status, kind.code))
