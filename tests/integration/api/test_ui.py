"""The /ui page in a real headless Chromium against a real server, and watching that keeps nothing alive."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from browser import Chromium

pytestmark = pytest.mark.integration

# Set to a directory (docs/images) to keep the page's screenshot for the docs.
SCREENSHOT_DIR = os.environ.get("GYMSERVE_UI_SCREENSHOT_DIR")


def create(url: str, env_id: str, **fields: Any) -> str:
    resp = requests.post(url + "/v2/envs", json={"env_id": env_id, **fields}, timeout=30)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["instance_id"])


def step(url: str, iid: str, action: Any) -> dict[str, Any]:
    resp = requests.post(f"{url}/v2/envs/{iid}/step", json={"action": action}, timeout=30)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def pixels(png_bytes: bytes) -> np.ndarray:
    pygame = pytest.importorskip("pygame")
    return np.asarray(pygame.surfarray.array3d(pygame.image.load(io.BytesIO(png_bytes), "shot.png")))


def card(iid: str) -> str:
    return f"document.querySelector('article[data-instance-id=\"{iid}\"]')"


def test_the_page_lists_a_stepped_env_and_shows_its_frame_change_until_it_expires(tmp_path: Path, make_server) -> None:
    srv = make_server(workers=2, reaper_interval_seconds=0.2)
    cart = create(srv.url, "CartPole-v1", kwargs={"render_mode": "rgb_array"}, ttl=5)
    lake = create(srv.url, "FrozenLake-v1", kwargs={"render_mode": "ansi", "is_slippery": False})
    plain = create(srv.url, "Pendulum-v1")
    for iid in (cart, lake, plain):
        assert requests.post(f"{srv.url}/v2/envs/{iid}/reset", json={"seed": 3}, timeout=30).status_code == 200
    for action in (2, 2, 1, 1, 1, 2):  # right, right, down, down, down, right: the goal of the 4x4 map
        last = step(srv.url, lake, action)
    assert last["terminated"] and last["reward"] == 1
    requests.post(f"{srv.url}/v2/envs/{lake}/reset", json={}, timeout=30)

    with Chromium(tmp_path) as browser:
        browser.open(srv.url + "/ui?fps=10")  # /ui redirects to /ui/, whose links are relative
        browser.wait_for(card(cart) + " !== null")
        text = browser.evaluate("document.getElementById('envs').innerText")
        assert "CartPole-v1" in text and "FrozenLake-v1" in text and "Pendulum-v1" in text
        assert "created without a render_mode" in browser.evaluate(card(plain) + ".innerText")
        browser.wait_for(card(lake) + ".querySelector('pre.frame').textContent.includes('F')")
        # ansi colours become highlights (the agent's cell), never raw escape characters
        assert browser.evaluate(card(lake) + ".querySelector('pre.frame mark').textContent") == "S"
        assert "\x1b" not in browser.evaluate(card(lake) + ".querySelector('pre.frame').textContent")
        assert browser.evaluate(card(lake) + ".querySelector('dd.return').textContent") == "1.00"
        assert browser.evaluate(card(lake) + ".querySelector('dd.length').textContent") == "6"
        img = f'article[data-instance-id="{cart}"] img.frame'
        browser.wait_for(f"document.querySelector('{img}').complete && {card(cart)}.dataset.frames >= 1")
        before = pixels(browser.screenshot(img))
        frames = int(browser.evaluate(card(cart) + ".dataset.frames"))

        for _ in range(8):  # push the cart right: the frame changes
            step(srv.url, cart, 1)
        browser.wait_for(f"{card(cart)}.dataset.frames > {frames}")
        browser.wait_for(f"document.querySelector('{img}').complete")
        time.sleep(0.3)  # the new blob is decoded and painted
        after = pixels(browser.screenshot(img))
        assert before.shape == after.shape
        changed = np.any(before != after, axis=-1).mean()
        assert changed > 0.002, f"only {changed:.4%} of the frame's pixels changed"
        browser.wait_for(card(cart) + ".querySelector('dd.steps').textContent === '8'")
        assert browser.evaluate(card(cart) + ".querySelector('dd.ttl').textContent").endswith(" s")
        # A key typed once is kept for the browser session only and sent with every request: harmless when open.
        browser.evaluate("document.getElementById('api-key').value = 'k-123'")
        browser.evaluate("document.getElementById('use-key').click()")
        assert browser.evaluate("sessionStorage.getItem('gymserve.apiKey')") == "k-123"
        assert browser.evaluate("localStorage.length + document.cookie.length") == 0
        browser.call("Network.enable")
        browser.events.clear()
        browser.wait_for("document.getElementById('status').textContent.startsWith('3 envs, updated')")
        time.sleep(2.5)  # at least one more list and a few frames, sent with the key
        browser.evaluate("0")  # the events that arrived meanwhile are read before its answer
        sent = [
            e["params"]["request"]
            for e in browser.events
            if e["method"] == "Network.requestWillBeSent" and "/v2/envs" in e["params"]["request"]["url"]
        ]
        assert {r["url"].rsplit("/", 1)[-1] for r in sent} >= {"envs", "frame"}, sent
        assert all(r["headers"].get("Authorization") == "Bearer k-123" for r in sent), sent
        browser.call("Network.disable")
        if SCREENSHOT_DIR:
            Path(SCREENSHOT_DIR, "ui.png").write_bytes(browser.screenshot())

        # Left alone, the env expires while the page keeps watching it at 10 frames per second.
        browser.wait_for(card(cart) + " === null", timeout=15)
        resp = requests.get(f"{srv.url}/v2/envs/{cart}", timeout=10)
        assert resp.status_code == 404, resp.text
        assert browser.evaluate(card(lake) + " !== null")  # the default TTL (15 min) keeps the others


def test_a_viewers_reads_never_keep_an_env_alive_while_renders_do(make_server) -> None:
    srv = make_server(workers=2, reaper_interval_seconds=0.1)
    watched = create(srv.url, "CartPole-v1", kwargs={"render_mode": "rgb_array"}, ttl=1.5)
    rendered = create(srv.url, "CartPole-v1", kwargs={"render_mode": "rgb_array"}, ttl=1.5)
    for iid in (watched, rendered):
        requests.post(f"{srv.url}/v2/envs/{iid}/reset", json={"seed": 0}, timeout=30)
    session = requests.Session()
    gone_at = None
    started = time.monotonic()
    while time.monotonic() - started < 4:
        # Everything the page reads, as often as a fast viewer would.
        session.get(srv.url + "/ui/", timeout=10)
        listed = {e["instance_id"] for e in session.get(srv.url + "/v2/envs", timeout=10).json()["envs"]}
        info = session.get(f"{srv.url}/v2/envs/{watched}", timeout=10)
        frame = session.get(f"{srv.url}/v2/envs/{watched}/frame", timeout=10)
        # The control: render is a use, so this one stays alive.
        assert session.get(f"{srv.url}/v2/envs/{rendered}/render", timeout=10).status_code == 200
        if frame.status_code == 200:
            assert frame.headers["Content-Type"] == "image/png" and watched in listed and info.status_code == 200
        elif gone_at is None:
            assert frame.status_code == 404 and frame.json()["error"]["code"] == "unknown_instance"
            gone_at = time.monotonic() - started
        time.sleep(0.05)
    assert gone_at is not None, "the watched env never expired"
    assert 1.5 <= gone_at < 3, gone_at
    assert session.get(f"{srv.url}/v2/envs/{watched}", timeout=10).status_code == 404
    assert session.get(f"{srv.url}/v2/envs/{rendered}", timeout=10).status_code == 200
