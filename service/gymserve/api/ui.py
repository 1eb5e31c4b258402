"""/ui: the page that watches this replica's envs, served from the package's own files (no build step, no CDN)."""

from __future__ import annotations

import functools
from importlib import resources

from flask import Blueprint, Response

from ..errors import RoutingError

bp = Blueprint("ui", __name__)

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page talks only to this origin and shows frames as blob: URLs; nothing else may load or run.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("gymserve").joinpath("ui", name).read_bytes()


@bp.get("/ui/")
def page() -> Response:
    return asset("index.html")


@bp.get("/ui/<name>")
def asset(name: str) -> Response:
    if name not in _FILES:  # a fixed list: a name never becomes a path
        raise RoutingError(404, "not_found", f"/ui has no file {name[:100]!r}")
    response = Response(_read(name), content_type=_FILES[name])
    response.headers.update(
        {
            "Content-Security-Policy": _POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",  # revalidated: an upgrade of the server shows its own page
        }
    )
    return response
