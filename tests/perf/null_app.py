"""The HTTP floor: a Flask app that answers a step-shaped POST with a small JSON body and does nothing else."""

from flask import Flask, Response, request

app = Flask(__name__)
_ANSWER = b'{"observation":[0.0,0.0,0.0,0.0],"reward":1.0,"terminated":false,"truncated":false,"info":{}}'


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@app.post("/<path:anything>")
def step(anything: str) -> Response:
    request.get_data()
    return Response(_ANSWER, mimetype="application/json")
