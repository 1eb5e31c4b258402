"""create_app(settings) -> the Flask app of one worker."""

from __future__ import annotations

import logging

from flask import Flask

from . import __version__, routing
from .api import owner, v1
from .api.common import register_error_handlers
from .health import bp as health_bp
from .ids import Owner
from .settings import Settings
from .worker import Worker


def _log_through_gunicorn() -> None:
    """Under gunicorn, gymserve's log lines go where gunicorn's go, at its level."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        ours = logging.getLogger("gymserve")
        ours.handlers = gunicorn_log.handlers
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False


def create_app(settings: Settings | None = None, owner_id: Owner | None = None) -> Flask:
    """The app of one worker. Under gunicorn, the worker's slot in the replica comes from `routing.current()`."""
    settings = settings or Settings.from_env()
    _log_through_gunicorn()
    slot = routing.current()
    if slot is not None and owner_id is None:
        owner_id = Owner(settings.node_id, slot.slot, slot.generation)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, GYMSERVE_VERSION=__version__)
    app.extensions["gymserve"] = Worker(settings, owner_id, slot.replica if slot else None)
    owner.install(app)
    app.register_blueprint(v1.bp)
    app.register_blueprint(health_bp)
    register_error_handlers(app)
    return app
