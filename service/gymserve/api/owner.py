"""Sends each request for an instance id to the worker that owns it, once; answers for owners that are gone."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request

from .. import ids
from ..errors import GymServeError, InstanceLost, UnknownInstance
from ..routing import FORWARDED_HEADER, REQUEST_HEADERS, Answer
from ..worker import Worker
from .common import ShortCircuit, worker


def route_to_owner() -> Response | None:
    """before_request: None lets this worker's view answer; a Response is the owner's answer."""
    instance_id = (request.view_args or {}).get("instance_id")
    if instance_id is None:
        return None
    failed = request.environ.get(FORWARD_ERROR)
    if failed is not None:
        raise failed
    w = worker()
    owner = ids.parse(instance_id)
    if owner is None or owner == w.owner or owner.node != w.owner.node:
        return None  # ours, or not of this replica: the view answers (it may say "unknown")
    if owner.slot == w.owner.slot or w.forwarder is None or request.headers.get(FORWARDED_HEADER):
        # Our slot in an older generation, or a slot that cannot be reached: that worker died.
        raise InstanceLost(instance_id)
    return forward_to(w, owner.slot, instance_id)


def create_elsewhere_if_full(weight: int = 1) -> Response | None:
    """A create this worker has no room for goes to the sibling with the fewest envs (a vector env needs room
    for all its sub-envs); None: create here, which answers 503 if the replica is full."""
    w = worker()
    if w.registry.has_room(weight) or w.forwarder is None or request.headers.get(FORWARDED_HEADER):
        return None
    slot = w.roomiest_sibling(weight)
    return None if slot is None else forward_to(w, slot, "")


def checked_id(instance_id: str) -> str:
    """A string that is not an id of ours is unknown, whatever it holds: it never reaches anything else."""
    if ids.parse(instance_id) is None:
        raise UnknownInstance(instance_id[:100])
    return instance_id


def sibling_answers(path: str, accept: str) -> Iterator[bytes]:
    """Every other live worker's answer to GET `path`: the rest of a replica-wide list.

    Nothing when this request was itself forwarded (the asking worker collects) or the worker stands alone.
    """
    w = worker()
    if w.forwarder is None or w.replica is None or request.headers.get(FORWARDED_HEADER):
        return
    for slot in w.replica.live_slots():
        if slot == w.owner.slot:
            continue
        try:
            answer = w.forwarder.send(slot, "GET", path, "", {"Accept": accept}, b"")
        except GymServeError:
            continue  # that worker just died: its envs are gone, nothing to list
        if answer.status == 200:
            yield answer.body


def forward_to(w: Worker, slot: int, instance_id: str) -> Response:
    assert w.forwarder is not None
    headers = {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    query = request.query_string.decode("latin-1")
    answer = w.forwarder.send(
        slot, request.method, request.path, query, headers, request.get_data(cache=False), instance_id
    )
    # Tell the client (and benchmarks) that this answer took a hop: keep-alive clients should not see it.
    return Response(answer.body, status=answer.status, headers={**answer.headers, FORWARDED_HEADER: "1"})


FORWARD_ERROR = "gymserve.forward_error"
_ENV_PATH = re.compile(r"/v[12]/envs/([^/]{1,200})")
_WSGI_HEADERS = {"CONTENT_TYPE": "Content-Type", **{f"HTTP_{h.upper().replace('-', '_')}": h for h in REQUEST_HEADERS}}


class ForwardFirst(ShortCircuit):
    """WSGI middleware: a request for a live sibling's env is forwarded before Flask does any work on it.

    This is the hot path of every request that reached the wrong worker (about half of them for
    clients that open a fresh connection per request, on two workers). Anything unusual (no
    Content-Length, a body over the limit, an owner that is gone) falls through to Flask, whose
    `route_to_owner` hook forwards it or answers with the right error in the right shape.
    """

    def answer(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes] | None:
        answer = self._try_forward(environ)
        if answer is None:
            return None
        headers = [*answer.headers.items(), (FORWARDED_HEADER, "1"), ("Content-Length", str(len(answer.body)))]
        return answer.status, headers, answer.body

    def _try_forward(self, environ: dict[str, Any]) -> Answer | None:
        core = self.core
        if core.forwarder is None or "HTTP_X_GYMSERVE_FORWARDED" in environ:
            return None
        match = _ENV_PATH.match(environ.get("PATH_INFO", ""))
        owner = ids.parse(match[1]) if match else None
        if owner is None or owner.node != core.owner.node or owner.slot == core.owner.slot:
            return None
        if environ.get("CONTENT_LENGTH") is None and environ["REQUEST_METHOD"] in ("POST", "PUT", "PATCH"):
            return None  # a chunked body: Flask reads it whole and its hook forwards it
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length > core.settings.max_body_bytes:
            return None
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # Flask can still read it if we fall through
        headers = {name: environ[key] for key, name in _WSGI_HEADERS.items() if key in environ}
        try:
            return core.forwarder.send(
                owner.slot,
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                environ.get("QUERY_STRING", ""),
                headers,
                body,
                match[1] if match else "",
            )
        except GymServeError as err:
            environ[FORWARD_ERROR] = err  # the owner is gone or slow: Flask's hook answers, in the API's shape
            return None


def install(app: Flask) -> None:
    app.before_request(route_to_owner)
    app.wsgi_app = ForwardFirst(app.wsgi_app, app.extensions["gymserve"])  # type: ignore[method-assign]
