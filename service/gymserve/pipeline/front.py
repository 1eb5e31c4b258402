"""The front controller: every request is authenticated, given its Caller and resolved once here, before Flask.

A WSGI middleware in front of Flask. It builds the request's `Caller` (its tenant, how far it may travel, and
where the env its path names lives) once and leaves it in the environ for the views. A sibling's env is
forwarded to it over its socket; a lost env is answered as lost; a reset or step of an env this worker holds is
answered by the one handler without Flask's request context, URL map, hooks and Response object, which cost
about as much CPU as the step itself. Everything else (creates, lists, reads, renders, deletes) goes on to
Flask, whose views read the same Caller.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, Protocol

from .. import metrics
from ..envs import cost
from ..errors import (
    BadRequest,
    GymServeError,
    InstanceLost,
    Internal,
    Moving,
    PayloadTooLarge,
    Reply,
    Unauthorized,
    UnknownInstance,
    closing_answer,
    error_reply,
)
from ..lifecycle.caller import ANYONE, Caller
from ..lifecycle.envs import Envs
from ..lifecycle.moves import holder_name
from ..routing import peers
from ..routing.forward import FORWARDED_HEADER, LATE_ANSWER, PEER_TENANT, REQUEST_HEADERS, Forwarder, end_to_end
from ..routing.peers import FANOUT_HEADER
from ..routing.resolve import Where, resolve
from ..tenancy.tenants import Directory, Tenant
from . import handler, negotiation
from .hosts import AllowedHosts

log = logging.getLogger(__name__)

CALLER = "gymserve.caller"  # environ key: this request's Caller (never from a header)
FRONT = "gymserve.front"  # the Flask app's extensions key of its Front (the step stream's way to the handler)
# What anyone may read without a key: probes, the scrape, the contract, and the /ui page's own files (the page
# holds the key box; its data calls carry the key).
UI_PATHS = frozenset({"/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css"})
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/v2/openapi.json", *UI_PATHS})
_ENV_PATH = re.compile(r"/(v[12])/envs/([^/]{1,200})(/.*)?", re.DOTALL)
_HOT = {("v1", "/step/"): "step", ("v1", "/reset/"): "reset", ("v2", "/step"): "step", ("v2", "/reset"): "reset"}
_WSGI_HEADERS = {"CONTENT_TYPE": "Content-Type", **{f"HTTP_{h.upper().replace('-', '_')}": h for h in REQUEST_HEADERS}}
_STREAM_CALLER = "gymserve.stream_caller"  # a stream's Caller, kept in its environ while its key finds the same tenant
_FANOUT = f"HTTP_{FANOUT_HEADER.upper().replace('-', '_')}"


_WRITES = frozenset({"POST", "PUT", "PATCH"})
_LENGTH = re.compile(r"[0-9]+")


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH")
    return bool(length and length.strip() not in ("", "0")) or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "")


class Headers(Protocol):
    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a request is made of, as a forward to another worker needs it (from the environ or a Flask request)."""

    method: str
    path: str
    query: str
    headers: Headers  # looked up by name, case-insensitively where the request's own headers are
    body: bytes


def caller_of(environ: dict[str, Any]) -> Caller:
    """The Caller the front controller built for this request (anyone, on an open path)."""
    caller: Caller = environ.get(CALLER, ANYONE)
    return caller


def owned(caller: Caller, instance_id: str) -> str:
    """`instance_id` if this worker holds it; else the error its resolution calls for.

    The front controller has already forwarded a sibling's env; "another replica's" reads exactly like
    "unknown", and text that is not an id never reaches anything else.
    """
    where = caller.resolution.where if caller.resolution is not None else Where.UNKNOWN
    if where is Where.LOCAL:
        return instance_id
    if where is Where.LOST:
        raise InstanceLost(instance_id)
    raise UnknownInstance(instance_id[:100])


def sent_headers(incoming: Incoming) -> dict[str, str]:
    """The request's headers that a hop sends on (REQUEST_HEADERS), to a sibling or to another replica alike."""
    return {name: value for name in REQUEST_HEADERS if (value := incoming.headers.get(name)) is not None}


def relay(forwarder: Forwarder, slot: int, incoming: Incoming, instance_id: str, caller: Caller) -> Reply:
    """`incoming` sent once to the sibling in `slot`; its answer as it came, marked as having taken a hop (keep-alive
    clients should not see it). A GymServeError when the sibling is gone or slow."""
    answer = forwarder.send(
        slot,
        incoming.method,
        incoming.path,
        incoming.query,
        sent_headers(incoming),
        incoming.body,
        instance_id,
        tenant=caller.tenant.name,
    )
    out = [*answer.headers.items(), (FORWARDED_HEADER, "1"), ("Content-Length", str(len(answer.body)))]
    return answer.status, out, answer.body


class Front:
    """WSGI middleware: authenticates, forwards, answers lost envs, and runs resets and steps; hands every other
    request on to Flask."""

    def __init__(self, app: Any, envs: Envs, tenants: Directory, forwarder: Forwarder | None) -> None:
        self.app = app
        self.envs = envs
        self.tenants = tenants
        self.forwarder = forwarder
        self.hosts = AllowedHosts(envs.settings.allowed_host_items)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        reply = self.answer(environ)
        if reply is None:
            return self.app(environ, start_response)
        status, headers, body = reply
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def answer(self, environ: dict[str, Any]) -> Reply | None:
        path = environ.get("PATH_INFO", "")
        if path in OPEN_PATHS:
            return None
        if PEER_TENANT not in environ:  # a sibling's forward was checked by the worker that received it
            try:
                self._check_origin(environ)
            except GymServeError as err:
                return error_reply(err, not path.startswith("/v1/"))
        tenant = self._authenticate(environ)
        if tenant is None:
            metrics.REFUSED_BY_TENANT.labels("unauthenticated", Unauthorized.code).inc()
            return error_reply(Unauthorized(), not path.startswith("/v1/"))
        match = _ENV_PATH.fullmatch(path)
        caller = environ[CALLER] = self._caller(environ, tenant, match[2] if match else None)
        if match is None:
            return None
        api, instance_id, rest = match.groups()
        try:
            caller = environ[CALLER] = self.envs.located(caller, instance_id)
        except GymServeError as err:
            return error_reply(err, api == "v2")
        assert caller.resolution is not None
        where = caller.resolution.where
        if where is Where.SIBLING:
            return self._forward(environ, caller, instance_id, api == "v2")
        if where is Where.REPLICA:
            return self._relay(environ, caller, instance_id, api == "v2")
        if where is Where.LOST:
            return error_reply(self.envs.lost(instance_id, caller.resolution.owner), api == "v2")
        kind = _HOT.get((api, rest or "")) if environ["REQUEST_METHOD"] == "POST" else None
        if where is Where.LOCAL and kind is not None:
            return self._run(environ, caller, api, kind, instance_id)
        return None

    def _check_origin(self, environ: dict[str, Any]) -> None:
        """What keeps web pages out of an open server: a Host it is known by (DNS rebinding would give a page full
        access), and writes in JSON or msgpack only (a form or text/plain post needs no CORS preflight)."""
        host = environ.get("HTTP_HOST")
        if not self.hosts.admits(host):
            raise BadRequest(
                f"Host {str(host)[:100]!r} is not one this server answers to (GYMSERVE_ALLOWED_HOSTS)",
                details={"field": "Host"},
            )
        if environ["REQUEST_METHOD"] in _WRITES and _has_body(environ):
            length = environ.get("CONTENT_LENGTH", "")
            limit = self.envs.settings.max_body_bytes
            if _LENGTH.fullmatch(length) and (len(length) > 18 or int(length) > limit):  # before what type it is
                raise PayloadTooLarge(limit)
            negotiation.write_type(environ.get("CONTENT_TYPE"), environ.get("HTTP_CONTENT_ENCODING"))

    def _authenticate(self, environ: dict[str, Any]) -> Tenant | None:
        """Once per request: a sibling's forward names its tenant in the message; a client shows its key."""
        peer_tenant = environ.get(PEER_TENANT)
        if peer_tenant is not None:
            return self.tenants.by_name(peer_tenant)
        return self.tenants.authenticate(environ.get("HTTP_AUTHORIZATION"))

    def _caller(self, environ: dict[str, Any], tenant: Tenant, instance_id: str | None) -> Caller:
        forwarded = PEER_TENANT in environ  # the peer server says so, where no client can write
        can_forward = self.forwarder is not None and not forwarded
        return Caller(
            tenant=tenant,
            forwarded=forwarded,
            fanned_out=bool(environ.get(_FANOUT)),
            authorization=environ.get("HTTP_AUTHORIZATION"),
            resolution=None if instance_id is None else resolve(self.envs.owner, instance_id, can_forward),
            answer_late=_late_answer(environ),
        )

    def _run(self, environ: dict[str, Any], caller: Caller, api: str, kind: str, instance_id: str) -> Reply:
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
        except GymServeError as err:
            return error_reply(err, api == "v2")
        return self._execute(call, caller, started)

    def _execute(self, call: handler.Call, caller: Caller, started: float) -> Reply:
        """The one handler's answer to a reset or step of an env this worker holds, weighed, timed and counted."""
        native = call.api == "v2"
        try:
            reply = handler.run(self.envs, call, caller)
            cost.check_answer(len(reply[2]), self.envs.settings.max_answer_bytes)
        except GymServeError as err:
            reply = error_reply(err, native)
        except Exception:  # a bug: logged with its traceback, the client told only that it happened
            log.exception("unexpected error on %s of env %s", call.kind, call.instance_id)
            reply = error_reply(Internal(), native)
        route = handler.ROUTES[(call.api, call.kind)]
        metrics.request_timer(route, "POST", reply[0]).observe(time.perf_counter() - started)
        return reply

    def stream_message(
        self, environ: dict[str, Any], instance_id: str, kind: str, body: bytes, media: str
    ) -> Reply | None:
        """A step stream's reset or step (pipeline/stream.py) of an env this worker holds, answered by the handler
        with no HTTP request made around it: `environ` is the upgrade's, whose Host was checked at the upgrade;
        the key is checked again, as each request's is. None for anything else (another worker's env, a lost one,
        a refused key, an env whose lock a call holds now): the stream then sends the message through the whole app,
        as the HTTP request it stands for, on a pool thread (the stream loop never waits for an env's lock).
        """
        started = time.perf_counter()
        tenant = self._authenticate(environ)
        if tenant is None:
            return None
        caller = environ.get(_STREAM_CALLER)  # a stream's messages share their upgrade's environ: made once per key
        if caller is None or caller.tenant is not tenant:
            caller = environ[_STREAM_CALLER] = self._caller(environ, tenant, instance_id)
        if caller.resolution is None or caller.resolution.where is not Where.LOCAL or not self.envs.quick(instance_id):
            return None
        return self._execute(handler.Call("v2", kind, instance_id, body, media, None, media), caller, started)

    def _forward(self, environ: dict[str, Any], caller: Caller, instance_id: str, native: bool) -> Reply:
        """Once, to the sibling that holds the env; its answer goes back as it is."""
        assert self.forwarder is not None and caller.resolution is not None and caller.resolution.owner is not None
        try:
            with self.envs.deadlines.waiting(instance_id, caller.tenant.name):
                return relay(self.forwarder, caller.resolution.owner.slot, self._incoming(environ), instance_id, caller)
        except InstanceLost:  # it exited meanwhile: a drain parked the env first, a crash lost it
            return error_reply(self.envs.hop_lost(caller, instance_id), native)
        except GymServeError as err:  # the owner is slow, or the body too large: answered in the API's shape
            return error_reply(err, native)

    def _relay(self, environ: dict[str, Any], caller: Caller, instance_id: str, native: bool) -> Reply:
        """Once, to the replica that adopted the env (the park store says which); its answer as it came."""
        assert caller.resolution is not None and caller.resolution.owner is not None
        holder = caller.resolution.owner
        try:
            incoming = self._incoming(environ)
            headers = sent_headers(incoming)
            if caller.authorization is not None:
                headers["Authorization"] = caller.authorization
            target = incoming.path + (f"?{incoming.query}" if incoming.query else "")
            send = peers.begin(
                self.envs.settings, holder.node, holder.slot, incoming.method, target, headers, incoming.body
            )
            with self.envs.deadlines.waiting(instance_id, caller.tenant.name):
                status, answer_headers, body = send()
        except GymServeError as err:
            return error_reply(err, native)
        except (OSError, http.client.HTTPException):
            # Its replica is restarting, parking it, or not in DNS yet: the env moves again in a moment, so the
            # client retries; unless that worker stopped beating in the store, having crashed with it.
            moves = self.envs.moves
            if moves is not None and not moves.store.alive(holder_name(holder)):
                return error_reply(InstanceLost(instance_id, "holder_gone"), native)
            return error_reply(Moving(instance_id), native)
        kept = [(k, v) for k, v in end_to_end(dict(answer_headers)).items() if k.lower() != "content-length"]
        return status, [*kept, (FORWARDED_HEADER, "1"), ("Content-Length", str(len(body)))], body

    def _incoming(self, environ: dict[str, Any]) -> Incoming:
        """The request as a hop to another worker or replica sends it on: the headers that go along, and its body."""
        headers = {name: environ[key] for key, name in _WSGI_HEADERS.items() if key in environ}
        method, path, query = environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        return Incoming(method, path, query, headers, self._body(environ))

    def _body(self, environ: dict[str, Any]) -> bytes:
        """The whole body, bounded by GYMSERVE_MAX_BODY_BYTES whether it has a Content-Length or is chunked."""
        limit = self.envs.settings.max_body_bytes
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


def _late_answer(environ: dict[str, Any]) -> Callable[[GymServeError], None] | None:
    """How the deadline watchdog answers this request when its env call is stuck: on the sibling's connection (a
    forward), on the client's socket (gunicorn), or not at all (a test client)."""
    native = not environ.get("PATH_INFO", "").startswith("/v1/")
    peer = environ.get(LATE_ANSWER)
    if peer is not None:
        return partial(peer, native=native)
    sock = environ.get("gunicorn.socket")
    return None if sock is None else partial(_answer_and_close, sock, native)


def _answer_and_close(sock: socket.socket, native: bool, err: GymServeError) -> None:
    """The error's answer, then no more: the request's own thread, if it ever returns, writes to a closed end."""
    sock.sendall(closing_answer(err, native))
    sock.shutdown(socket.SHUT_WR)
