"""What every view shares: reading JSON bodies, writing JSON answers, and the one error handler."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import numpy as np
import orjson
from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from ..codec.spaces import to_jsonable
from ..errors import BadRequest, GymServeError, MissingParameter
from ..worker import Worker

log = logging.getLogger(__name__)
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def worker() -> Worker:
    return current_app.extensions["gymserve"]


def _default(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic, tuple)):
        return to_jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, default=_default, option=_ORJSON_OPTS)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status=status, headers=headers, mimetype="application/json")


def json_body(*, required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. An empty or `null` body counts as `{}` (old clients send them)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise BadRequest("Request is not a valid json")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Request is not a valid json") from None
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


def _absent(value: Any) -> bool:
    # The seed treats null, "" and [] alike as "not given".
    return value is None or (isinstance(value, (str, list)) and len(value) == 0)


def required_param(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if _absent(value):
        raise MissingParameter(name)
    return value


def optional_param(body: dict[str, Any], name: str, default: Any = None) -> Any:
    value = body.get(name)
    return default if _absent(value) else value


def _error_body(code: str, message: str, details: dict[str, Any] | None, native: bool) -> dict[str, Any]:
    if native:
        return {"error": {"code": code, "message": message, "details": details or {}}}
    body: dict[str, Any] = {"message": message, "code": code}
    if details:
        body["details"] = details
    return body


class ShortCircuit:
    """WSGI middleware that answers some requests itself and hands every other one to the app it wraps."""

    def __init__(self, app: Any, core: Worker) -> None:
        self.app = app
        self.core = core

    def answer(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes] | None:
        raise NotImplementedError

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        answer = self.answer(environ)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]


def error_response(err: GymServeError, native: bool) -> Response:
    """A client error in its API's shape: /v2 `{"error": {...}}` with its own status, /v1 the seed's."""
    status = err.status if native else err.v1_status
    return json_response(_error_body(err.code, err.message, err.details, native), status, err.headers)


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
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "http_error")
        message = err.description or err.name
        if status == 413:
            message = (
                f"request body exceeds the server's limit of {current_app.config['MAX_CONTENT_LENGTH']} "
                "bytes (GYMSERVE_MAX_BODY_BYTES)"
            )
        return json_response(_error_body(code, message, None, native()), status)

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response(_error_body("internal", "internal server error", None, native()), 500)
