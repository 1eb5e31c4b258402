"""What every view shares: JSON bodies and answers, and the one error handler."""

from __future__ import annotations

import functools
import logging
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..codec import seed, values
from ..errors import BadRequest, GymServeError, Internal, MissingParameter, PayloadTooLarge, RoutingError, error_body
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..pipeline import handler
from ..pipeline.front import Incoming, caller_of, owned
from ..pipeline.models import absent
from ..pipeline.services import Services

log = logging.getLogger(__name__)


def services() -> Services:
    return current_app.extensions["gymserve"]


def envs() -> Envs:
    return services().envs


def caller() -> Caller:
    """Who this request acts for: built once by the front controller."""
    return caller_of(request.environ)


def local_id(instance_id: str) -> str:
    """`instance_id` if this worker holds the env the path names; else its lost or unknown error."""
    return owned(caller(), instance_id)


def handled(api: str, kind: str, instance_id: str) -> Response:
    """A reset or step by the one handler (the front controller answers these before Flask; this is the same call)."""
    call = handler.Call(
        api,
        kind,
        local_id(instance_id),
        request.get_data(cache=True),
        request.headers.get("Content-Type"),
        request.headers.get("Content-Encoding"),
        request.headers.get("Accept"),
        request.headers.get("Accept-Encoding"),
    )
    status, headers, body = handler.run(envs(), call, caller())
    return Response(body, status=status, headers=headers)


def add_reset_and_step(bp: Blueprint, api: str, path: str, endpoint: str) -> None:
    """The reset and step routes of `api` (`path` and `endpoint` hold {kind}): both are the one handler's."""
    for kind in ("reset", "step"):
        view = functools.partial(handled, api, kind)
        bp.add_url_rule(path.format(kind=kind), endpoint.format(kind=kind), view, methods=["POST"])


def incoming() -> Incoming:
    """The request as a forward to another worker needs it (its body kept, so that this worker can still answer)."""
    query = request.query_string.decode("latin-1")
    return Incoming(request.method, request.path, query, request.headers, request.get_data(cache=True))


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(seed.dumps(payload), status=status, headers=headers, mimetype="application/json")


def json_body() -> dict[str, Any]:
    """A /v1 body that no model declares (space membership checks), read as the seed read it."""
    raw = request.get_data(cache=True)
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise BadRequest("Request is not a valid json") from None
    if body is None:
        raise BadRequest("Request is not a valid json")
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    for name, value in body.items():
        values.check_depth(value, name)
    return body


def required_param(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if absent(value):
        raise MissingParameter(name)
    return value


def error_response(err: GymServeError, native: bool) -> Response:
    """A client error in its API's shape: /v2 `{"error": {...}}` with its own status, /v1 the seed's."""
    status = err.status if native else err.v1_status
    return json_response(error_body(err, native), status, err.headers)


def register_error_handlers(app: Flask) -> None:
    """One handler for every failure; /v2 paths get the native error shape, all others the seed's."""

    def native() -> bool:
        return request.path.startswith("/v2/")

    @app.errorhandler(GymServeError)
    def handle_gymserve_error(err: GymServeError) -> Response:
        return error_response(err, native())

    @app.errorhandler(HTTPException)
    def handle_http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 413:
            return error_response(PayloadTooLarge(current_app.config["MAX_CONTENT_LENGTH"]), native())
        code = RoutingError.CODES.get(status, ("http_error", ""))[0]
        response = error_response(RoutingError(status, code, err.description or err.name), native())
        if isinstance(err, MethodNotAllowed) and err.valid_methods:  # RFC 9110 15.5.6: a 405 says what is allowed
            response.headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(Internal(), native())
