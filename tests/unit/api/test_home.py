"""GET /: a small page (or JSON) that sends a first-time visitor to /ui/, the docs and the /v2 contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gymserve.api import home
from gymserve.app import create_app
from gymserve.settings import Settings
from tenant_files import write


def test_the_root_is_a_page_that_links_the_ui_and_the_contract(client: Any) -> None:
    answer = client.get("/")  # what a browser or a plain curl gets
    assert answer.status_code == 200
    assert answer.content_type == "text/html; charset=utf-8"
    page = answer.get_data(as_text=True)
    assert '<a href="/ui/">' in page and '<a href="/v2/openapi.json">' in page
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert client.head("/").status_code == 200


@pytest.mark.parametrize("accept", ["application/json", "application/json, text/plain;q=0.5"])
def test_the_root_answers_json_to_who_asks_for_it(client: Any, accept: str) -> None:
    answer = client.get("/", headers={"Accept": accept})
    assert answer.status_code == 200 and answer.content_type == "application/json"
    assert answer.json == {"ui": "/ui/", "openapi": "/v2/openapi.json", "docs": home.docs_url()}


def test_html_wins_when_a_browser_asks_for_both(client: Any) -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get("/", headers={"Accept": accept}).content_type.startswith("text/html")


def test_the_links_it_gives_answer(client: Any) -> None:
    for path in (home.UI, home.OPENAPI):
        assert client.get(path).status_code == 200, path


def test_the_root_is_open_on_a_farm_with_tenants(tmp_path: Path) -> None:
    settings = Settings.from_env({}, node_id="test", tenants_file=str(write(tmp_path / "tenants.toml")))
    tenants = create_app(settings).test_client()
    assert tenants.get("/").status_code == 200
    assert tenants.get("/", headers={"Accept": "application/json"}).json["openapi"] == "/v2/openapi.json"
    assert tenants.get("/v2/envs").status_code == 401  # only the root opened, nothing beside it


def test_the_docs_link_is_the_packages_documentation_url(monkeypatch: pytest.MonkeyPatch) -> None:
    class Found:
        def get_all(self, name: str) -> list[str]:
            assert name == "Project-URL"
            return ["Source, https://example.org/src", "Documentation, https://example.org/docs"]

    monkeypatch.setattr(home.metadata, "metadata", lambda name: Found())
    home.docs_url.cache_clear()
    try:
        assert home.docs_url() == "https://example.org/docs"
        assert '<a href="https://example.org/docs">the docs</a>' in home.page(home.links())
    finally:
        home.docs_url.cache_clear()


def test_without_a_documentation_url_the_page_names_the_docs_in_the_source() -> None:
    page = home.page({"ui": home.UI, "openapi": home.OPENAPI, "docs": None})
    assert home.DOCS_IN_SOURCE in page
