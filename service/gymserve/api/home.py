"""GET /: where a person (or a program) who opened the server's address goes next: the /ui page, the docs and the
/v2 contract. Open on a farm with tenants too (pipeline/front.py's OPEN_PATHS): it shows no env and no setting."""

from __future__ import annotations

import functools
import html
from importlib import metadata

from flask import Blueprint, Response, jsonify, request

bp = Blueprint("home", __name__)

UI = "/ui/"
OPENAPI = "/v2/openapi.json"
# Where the docs are when the installed package names no Documentation URL (a checkout, the image): its own files.
DOCS_IN_SOURCE = "the docs: README.md and docs/ in the gymserve source"
_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


@functools.cache
def docs_url() -> str | None:
    """The package's Documentation URL (pyproject's [project.urls]), or None when it declares none."""
    try:
        entries = metadata.metadata("gymserve").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in entries:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("documentation", "docs") and url.strip():
            return url.strip()
    return None


def links() -> dict[str, str | None]:
    return {"ui": UI, "openapi": OPENAPI, "docs": docs_url()}


def page(found: dict[str, str | None]) -> str:
    docs = found["docs"]
    docs_item = f'<a href="{html.escape(docs)}">the docs</a>' if docs else html.escape(DOCS_IN_SOURCE)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8"><title>gymserve</title></head><body>\n'
        "<h1>gymserve</h1>\n"
        "<p>Gymnasium environments over HTTP. Clients create, reset and step envs through the API.</p>\n"
        "<ul>\n"
        f'<li><a href="{UI}">/ui/</a>: the envs and their live frames</li>\n'
        f'<li><a href="{OPENAPI}">{OPENAPI}</a>: the /v2 API contract (OpenAPI 3.1)</li>\n'
        f"<li>{docs_item}</li>\n"
        "</ul>\n"
        "</body></html>\n"
    )


@bp.get("/")
def home() -> Response:
    found = links()
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(found)
    response = Response(page(found), content_type="text/html; charset=utf-8")
    response.headers.update({"Content-Security-Policy": _POLICY, "X-Content-Type-Options": "nosniff"})
    return response
