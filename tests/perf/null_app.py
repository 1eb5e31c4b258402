"""The HTTP floors: a null WSGI app (the Python floor under gunicorn) and a null Flask app (adds Flask's own cost).

Both answer a step-shaped POST with a small JSON body and do nothing else; gymserve's tables compare
against the WSGI one, since a null Flask app would hide what Flask itself costs.
"""

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request

_ANSWER = b'{"observation":[0.0,0.0,0.0,0.0],"reward":1.0,"terminated":false,"truncated":false,"info":{}}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_ANSWER)))]


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", _HEADERS)
    return [_ANSWER]


app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@app.post("/<path:anything>")
def step(anything: str) -> Response:
    request.get_data()
    return Response(_ANSWER, mimetype="application/json")
