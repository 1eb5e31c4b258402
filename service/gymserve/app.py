"""create_app(settings) -> the Flask app of one worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request

from . import __version__, metrics
from .api import home, ui, v1, v2
from .api.common import register_error_handlers
from .envs import cost
from .errors import GymServeError, error_reply
from .headless import headless_sdl
from .health import bp as health_bp
from .lifecycle.envs import Envs
from .pipeline.front import FRONT, Front
from .pipeline.services import Services
from .routing import replica
from .routing.forward import Forwarder
from .routing.ids import Owner
from .settings import Settings
from .tenancy.tenants import Directory


class MetricsPortOnly:
    """On GYMSERVE_METRICS_PORT, /metrics and nothing else (a 404): whoever may scrape reaches no API there.
    gunicorn gives SERVER_PORT as the port of the listener that accepted the connection."""

    NOT_HERE = b'{"error":{"code":"not_found","message":"only /metrics is served on this port"}}'

    def __init__(self, wsgi_app: Callable[..., Any], port: int) -> None:
        self.wsgi_app, self.port = wsgi_app, str(port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("SERVER_PORT") != self.port or environ.get("PATH_INFO") == "/metrics":
            return self.wsgi_app(environ, start_response)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(self.NOT_HERE)))]
        start_response("404 NOT FOUND", headers)
        return [self.NOT_HERE]


def _log_through_gunicorn() -> None:
    """Under gunicorn, gymserve's log lines go where gunicorn's go, at its level."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        ours = logging.getLogger("gymserve")
        ours.handlers = gunicorn_log.handlers
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False


def _time_requests(app: Flask) -> None:
    """Request duration by route template (never the raw path: it holds instance ids), method and status."""

    @app.before_request
    def start_clock() -> None:
        # Timed by the worker that handles it: a forwarded request passes its first worker without Flask.
        g.gymserve_started = time.perf_counter()

    @app.after_request
    def stop_clock(response: Response) -> Response:
        started = g.get("gymserve_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.request_timer(route, request.method, response.status_code).observe(time.perf_counter() - started)
        return response


def _weigh_answers(app: Flask, limit: int) -> None:
    """Every answer of a view weighed against GYMSERVE_MAX_ANSWER_BYTES (the front controller weighs the hot path's):
    over it, the client gets 422 answer_too_large instead. Metrics and /v1 episodes recordings have their own bounds."""

    @app.after_request
    def weigh(response: Response) -> Response:
        size, path = response.content_length, request.path
        if size is None or response.is_streamed or path == "/metrics" or path.endswith("/episodes/"):
            return response
        try:
            cost.check_answer(size, limit)
        except GymServeError as err:
            status, headers, body = error_reply(err, native=not path.startswith("/v1/"))
            return Response(body, status, headers)
        return response


def create_app(settings: Settings | None = None, owner_id: Owner | None = None) -> Flask:
    """The app of one worker. Under gunicorn, the worker's slot in the replica comes from `replica.current()`."""
    settings = settings or Settings.from_env()
    headless_sdl()  # before the first render, in every process that serves (gunicorn's post_fork sets it too)
    _log_through_gunicorn()
    slot = replica.current()
    if slot is not None and owner_id is None:
        owner_id = Owner(settings.node_id, slot.slot, slot.generation)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, GYMSERVE_VERSION=__version__)
    replica_of_slot = slot.replica if slot else None
    tenants = Directory(settings.tenants_file, settings.tenants_reload_seconds)
    envs = Envs(settings, owner_id, replica_of_slot, open_server=tenants.open)
    forwarder = (
        Forwarder(replica_of_slot, envs.owner.slot, settings.forward_timeout_seconds) if replica_of_slot else None
    )
    app.extensions["gymserve"] = Services.build(envs, forwarder)
    metrics.publish_static(settings.max_envs_per_worker, settings.max_envs, settings.node_id)
    _time_requests(app)
    _weigh_answers(app, settings.max_answer_bytes)
    # Every request is authenticated and every env id resolved once, in front of Flask; resets and steps never
    # reach it.
    front = app.extensions[FRONT] = Front(app.wsgi_app, envs, tenants, forwarder)
    app.wsgi_app = front  # type: ignore[method-assign]
    if settings.metrics_port:
        app.wsgi_app = MetricsPortOnly(app.wsgi_app, settings.metrics_port)  # type: ignore[method-assign]
    app.register_blueprint(v1.bp)
    app.register_blueprint(v2.bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(home.bp)
    register_error_handlers(app)
    return app
