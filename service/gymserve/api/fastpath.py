"""The hot path: a /v2 step answered without Flask's request machinery, by the same code and in the same shape.

Flask's request context, URL map, hooks and Response object cost about as much CPU as the step
itself. This WSGI middleware answers the common case of `POST /v2/envs/<id>/step` on an env this
worker owns: a body with a Content-Length, in JSON or msgpack, asking for JSON or msgpack. Anything
else (another owner, an unknown id, odd headers, unknown fields, a malformed seq) falls through to
Flask untouched, which answers it, errors included, exactly as before.
"""

from __future__ import annotations

import gzip
import io
import re
import time
from typing import Any

from .. import ids, metrics
from ..codec import native
from ..errors import GymServeError
from ..worker import Worker
from . import calls
from .common import ShortCircuit, error_response

ROUTE = "/v2/envs/<instance_id>/step"
_PATH = re.compile(r"/v2/envs/([^/]{1,200})/step")
_FIELDS = frozenset({"action", "seq"})
_MEDIA = frozenset({native.JSON, *native.MSGPACK_TYPES})
GZIP_MIN_BYTES = 16 * 1024  # as /v2's other answers: frames shrink, a CartPole step is never worth it


def _media_type(header: str | None) -> str | None:
    media = (header or native.JSON).split(";", 1)[0].strip().lower()
    return media if media in _MEDIA else None


class FastStep(ShortCircuit):
    """WSGI middleware in front of Flask for the one route that carries nearly all the traffic."""

    def answer(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if environ["REQUEST_METHOD"] != "POST" or environ.get("HTTP_CONTENT_ENCODING", "identity") != "identity":
            return None
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or ids.parse(match[1]) != self.core.owner or self.core.registry.find(match[1]) is None:
            return None
        # No Content-Type falls through: the view's resend digest uses the header as given.
        content_type = environ.get("CONTENT_TYPE")
        media = _media_type(content_type) if content_type else None
        answer_type = _media_type(environ.get("HTTP_ACCEPT"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if media is None or answer_type is None or not 0 < length <= self.core.settings.max_body_bytes:
            return None
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # Flask can still read it if this falls through
        started = time.perf_counter()
        try:
            body = native.loads(raw, media)
        except GymServeError:
            return None
        if not isinstance(body, dict) or "action" not in body or not body.keys() <= _FIELDS:
            return None
        seq = body.get("seq")
        if seq is not None and not calls.is_seq(seq):
            return None
        status, headers, out = self._step(match[1], media, raw, body["action"], seq, answer_type, environ)
        metrics.request_timer(ROUTE, "POST", status).observe(time.perf_counter() - started)
        return status, [*headers, ("Content-Length", str(len(out)))], out

    def _step(
        self,
        instance_id: str,
        media: str,
        raw: bytes,
        action: Any,
        seq: int | None,
        answer_type: str,
        environ: dict[str, Any],
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        # The same digest /v2's view computes, so a resend may come through either path.
        digest = b"" if seq is None else calls.digest(b"step", media.encode(), raw)
        try:
            with self.core.registry.use(instance_id) as record:
                out = calls.answer_bytes(record, seq, digest, answer_type, lambda: calls.step_payload(record, action))
        except GymServeError as err:
            response = error_response(err, native=True)
            return response.status_code, list(response.headers.items()), response.get_data()
        headers = [("Content-Type", answer_type)]
        if len(out) >= GZIP_MIN_BYTES and "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            out = gzip.compress(out, compresslevel=1, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        return 200, headers, out


def install(app: Any, core: Worker) -> None:
    app.wsgi_app = FastStep(app.wsgi_app, core)
