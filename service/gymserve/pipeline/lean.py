"""The lean path: every request that names an env is resolved once here, before Flask does any work on it.

A WSGI middleware in front of Flask. It computes `resolve(id)` once and leaves it in the environ for
the views. A sibling's env is forwarded to it over its socket; a lost env is answered as lost; a reset
or step of an env this worker holds is answered by the one handler without Flask's request context,
URL map, hooks and Response object, which cost about as much CPU as the step itself. Everything else
(creates, lists, reads, renders, deletes) goes on to Flask, whose views read the same resolution.
"""

from __future__ import annotations

import logging
import re
import time
from http import HTTPStatus
from typing import Any

from .. import metrics
from ..errors import GymServeError, InstanceLost, Internal, PayloadTooLarge, Reply, Unauthorized, error_reply
from ..registry import ASKING
from ..routing.forward import FORWARDED_HEADER, PEER_TENANT, REQUEST_HEADERS
from ..routing.resolve import Resolution, Where, resolve
from ..tenancy.tenants import ANONYMOUS, Tenant
from ..worker import Worker
from . import handler

log = logging.getLogger(__name__)

WHERE = "gymserve.where"  # environ key: this request's Resolution
TENANT = "gymserve.tenant"  # environ key: the Tenant this request authenticated as (never from a header)
# What anyone may read without a key: probes, the scrape and the contract.
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/v2/openapi.json"})
_ENV_PATH = re.compile(r"/(v[12])/envs/([^/]{1,200})(/.*)?", re.DOTALL)
_HOT = {("v1", "/step/"): "step", ("v1", "/reset/"): "reset", ("v2", "/step"): "step", ("v2", "/reset"): "reset"}
_WSGI_HEADERS = {"CONTENT_TYPE": "Content-Type", **{f"HTTP_{h.upper().replace('-', '_')}": h for h in REQUEST_HEADERS}}


def resolution(worker: Worker, environ: dict[str, Any], instance_id: str) -> Resolution:
    """The request's resolution of `instance_id`: computed here once, then read from the environ."""
    where: Resolution | None = environ.get(WHERE)
    if where is None:
        can_forward = worker.forwarder is not None and not forwarded(environ)
        where = environ[WHERE] = resolve(worker.owner, instance_id, can_forward)
    return where


def forwarded(environ: dict[str, Any]) -> bool:
    """A sibling forwarded this request: the peer server says so in the environ, where no client can write.

    (A client's X-Gymserve-Forwarded header used to decide this: it stopped the request's forwarding.)
    """
    return PEER_TENANT in environ


def tenant_of(environ: dict[str, Any]) -> Tenant:
    """The tenant the lean path authenticated this request as (anonymous on an open server or path)."""
    tenant: Tenant = environ.get(TENANT, ANONYMOUS)
    return tenant


class LeanPath:
    """WSGI middleware: forwards, answers lost envs, and runs resets and steps; hands every other request on."""

    def __init__(self, app: Any, worker: Worker) -> None:
        self.app = app
        self.worker = worker

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # This thread answers for the request's tenant until the answer is built (Flask's too: gymserve's
        # answers are never streamed); a sibling's env is looked up by that sibling, told the tenant.
        token = ASKING.set(None)
        try:
            reply = self.answer(environ)
            if reply is None:
                return self.app(environ, start_response)
        finally:
            ASKING.reset(token)
        status, headers, body = reply
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def answer(self, environ: dict[str, Any]) -> Reply | None:
        path = environ.get("PATH_INFO", "")
        if path not in OPEN_PATHS:
            tenant = self._authenticate(environ)
            if tenant is None:
                metrics.REFUSED_BY_TENANT.labels("unauthenticated", Unauthorized.code).inc()
                return error_reply(Unauthorized(), not path.startswith("/v1/"))
            environ[TENANT] = tenant
            ASKING.set(tenant.name)  # Registry.get hides other tenants' envs from here on
        match = _ENV_PATH.fullmatch(path)
        if match is None:
            return None
        api, instance_id, rest = match.groups()
        native = api == "v2"
        where = resolution(self.worker, environ, instance_id).where
        if where is Where.SIBLING:
            return self._forward(environ, instance_id, native)
        if where is Where.LOST:
            return error_reply(InstanceLost(instance_id), native)
        kind = _HOT.get((api, rest or "")) if environ["REQUEST_METHOD"] == "POST" else None
        if where is Where.LOCAL and kind is not None:
            return self._run(environ, api, kind, instance_id)
        return None

    def _authenticate(self, environ: dict[str, Any]) -> Tenant | None:
        """Once per request: a sibling's forward names its tenant in the message; a client shows its key."""
        directory = self.worker.tenants
        peer_tenant = environ.get(PEER_TENANT)
        if peer_tenant is not None:
            return directory.by_name(peer_tenant)
        return directory.authenticate(environ.get("HTTP_AUTHORIZATION"))

    def _run(self, environ: dict[str, Any], api: str, kind: str, instance_id: str) -> Reply:
        started = time.perf_counter()
        try:
            call = handler.Call(
                api,
                kind,
                instance_id,
                self._body(environ),
                environ.get("CONTENT_TYPE"),
                environ.get("HTTP_CONTENT_ENCODING"),
                environ.get("HTTP_ACCEPT"),
                environ.get("HTTP_ACCEPT_ENCODING"),
            )
            reply = handler.run(self.worker, call)
        except GymServeError as err:
            reply = error_reply(err, api == "v2")
        except Exception:  # a bug: logged with its traceback, the client told only that it happened
            log.exception("unexpected error on %s %s", environ["REQUEST_METHOD"], environ.get("PATH_INFO"))
            reply = error_reply(Internal(), api == "v2")
        metrics.request_timer(handler.ROUTES[(api, kind)], "POST", reply[0]).observe(time.perf_counter() - started)
        return reply

    def _forward(self, environ: dict[str, Any], instance_id: str, native: bool) -> Reply:
        """Once, to the sibling that holds the env; its answer goes back as it is, marked as having taken a hop."""
        w = self.worker
        owner = resolution(w, environ, instance_id).owner
        assert w.forwarder is not None and owner is not None
        try:
            body = self._body(environ)
            headers = {name: environ[key] for key, name in _WSGI_HEADERS.items() if key in environ}
            answer = w.forwarder.send(
                owner.slot,
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                environ.get("QUERY_STRING", ""),
                headers,
                body,
                instance_id,
                tenant=tenant_of(environ).name,
            )
        except GymServeError as err:  # the owner is gone or slow: answered in the API's shape
            return error_reply(err, native)
        out = [*answer.headers.items(), (FORWARDED_HEADER, "1"), ("Content-Length", str(len(answer.body)))]
        return answer.status, out, answer.body

    def _body(self, environ: dict[str, Any]) -> bytes:
        """The whole body, bounded by GYMSERVE_MAX_BODY_BYTES whether it has a Content-Length or is chunked."""
        limit = self.worker.settings.max_body_bytes
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
            except ValueError:
                size = limit + 1
            if size > limit:
                raise PayloadTooLarge(limit)
            return bytes(stream.read(size))
        if environ.get("wsgi.input_terminated"):  # chunked: gunicorn ends the stream at the last chunk
            body = bytes(stream.read(limit + 1))
            if len(body) > limit:
                raise PayloadTooLarge(limit)
            return body
        return b""
