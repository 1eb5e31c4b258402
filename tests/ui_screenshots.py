"""Make the pictures of docs/ui.md: the /ui page and the dashboard's episode panels, from real traffic.

    .venv/bin/python tests/ui_screenshots.py docs/images [seconds]

Starts a two-worker gymserve and Debian's Prometheus (scraping every second), drives a few envs for
`seconds` (default 120) with a CartPole agent that gets better as it goes, screenshots /ui in headless
Chromium, then asks Prometheus for the range of every query of the dashboard's episode row and draws
the series as SVG (Grafana itself does not run here), screenshotted by the same Chromium.
"""

from __future__ import annotations

import html
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import Chromium
from gymserve.codec import values
from servers import free_port, start_server

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "gymserve-overview.json"
PANEL_IDS = (101, 102)
COLORS = ("#2f6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d")


def call(session: requests.Session, url: str, body: dict[str, Any]) -> Any:
    """A /v2 reset or step, its answer as native values (observations as ndarrays)."""
    return values.loads(session.post(url, json=body, timeout=30).content, values.JSON)


def drive(url: str, env_id: str, stop: threading.Event, started: float, seconds: float, **fields: Any) -> None:
    """One env stepped until `stop`; CartPole with a policy whose random share falls from 1 to 0."""
    session = requests.Session()
    iid = session.post(url + "/v2/envs", json={"env_id": env_id, **fields}, timeout=30).json()["instance_id"]
    space = session.get(f"{url}/v2/envs/{iid}", timeout=30).json()["action_space"]
    obs = call(session, f"{url}/v2/envs/{iid}/reset", {"seed": 1})["observation"]
    while not stop.is_set():
        explore = max(0.0, 1 - (time.monotonic() - started) / (0.8 * seconds))
        if env_id == "CartPole-v1":  # push towards where the pole falls, less and less at random
            batch = np.atleast_2d(obs)
            moves = [random.randrange(2) if random.random() < explore else int(o[2] + 0.5 * o[3] > 0) for o in batch]
            action: Any = moves if fields.get("num_envs") else moves[0]
        else:
            action = random.randrange(space["n"])
        answer = call(session, f"{url}/v2/envs/{iid}/step", {"action": action})
        obs = answer["observation"]
        if not fields.get("num_envs") and (answer["terminated"] or answer["truncated"]):
            obs = call(session, f"{url}/v2/envs/{iid}/reset", {})["observation"]
        time.sleep(0.004)  # a gentle load: the machine is shared


def prometheus(workdir: Path, target: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [{"job_name": "gymserve", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return f"http://127.0.0.1:{port}", proc


def series(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = {"query": expr, "start": start, "end": end, "step": 2}
    body = requests.get(prom + "/api/v1/query_range", params=params, timeout=30).json()
    assert body["status"] == "success", body
    found: list[dict[str, Any]] = body["data"]["result"]
    return found


def chart(title: str, lines: list[tuple[str, list[tuple[float, float]]]], start: float, end: float) -> str:
    """An SVG line chart: one polyline per series, axes labelled with their ranges."""
    width, height, left, bottom, top = 560, 260, 56, 28, 12
    values = [v for _, points in lines for _, v in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        high = low + 1

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (width - left - 8)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{width - left - 8}" height="{height - top - bottom}" fill="#fafbfc" '
        'stroke="#d9dde3"/>',
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        v = low + fraction * (high - low)
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eceef1"/>')
    parts.append(f'<text x="{left}" y="{height - 8}">{time.strftime("%H:%M:%S", time.gmtime(start))} UTC</text>')
    parts.append(
        f'<text x="{width - 8}" y="{height - 8}" text-anchor="end">'
        f"{time.strftime('%H:%M:%S', time.gmtime(end))} UTC</text>"
    )
    legend = []
    env_ids = sorted({name.split(" ", 1)[1] for name, _ in lines})
    dashes = {"p50": "", "mean": "", "p10": ' stroke-dasharray="2 3"', "p90": ' stroke-dasharray="6 3"'}
    for name, points in lines:
        stat, env_id = name.split(" ", 1)
        color = COLORS[env_ids.index(env_id) % len(COLORS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"{dashes[stat]}/>')
    for n, env_id in enumerate(env_ids):
        legend.append(f'<li><span style="background:{COLORS[n % len(COLORS)]}"></span>{html.escape(env_id)}</li>')
    legend.append("<li>solid: p50 or mean; dashes: p90; dots: p10</li>")
    parts.append("</svg>")
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(parts)}<ul>{''.join(legend)}</ul></figure>"


def panels_page(prom: str, replica: str, start: float, end: float) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    figures = []
    for panel in dashboard["panels"]:
        if panel["id"] not in PANEL_IDS:
            continue
        lines = []
        for target in panel["targets"]:
            expr = (
                target["expr"].replace("$__rate_interval", "30s").replace("$replica", replica).replace("$env_id", ".*")
            )
            for found in series(prom, expr, start, end):
                name = target["legendFormat"].replace("{{env_id}}", found["metric"].get("env_id", ""))
                points = [(float(t), float(v)) for t, v in found["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if points:
                    lines.append((name, points))
        figures.append(chart(panel["title"], sorted(lines), start, end))
    style = (
        "body{font-family:system-ui,sans-serif;margin:12px;background:#fff;color:#1d2330}"
        "figure{display:inline-block;margin:0 16px 8px 0;vertical-align:top}"
        "figcaption{font-weight:600;margin-bottom:4px}ul{list-style:none;padding:0;margin:4px 0;"
        "columns:2;font-size:12px}li span{display:inline-block;width:14px;height:3px;margin:0 6px 3px 0}"
        "p{font-size:12px;color:#5f6b7a;margin:0 0 8px}"
    )
    note = (
        "Not Grafana (it does not run here): the query_range answers of Prometheus for the dashboard's "
        "episode row (panels 101 and 102), $__rate_interval = 30s, drawn as SVG."
    )
    return f"<!doctype html><meta charset=utf-8><style>{style}</style><p>{note}</p>{''.join(figures)}"


def main(out: Path, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="gymserve-shots-"))
    srv = start_server(work, workers=2, episode_return_buckets="CartPole-*=10,25,50,100,200,300,400,500")
    prom_url, prom = prometheus(work, srv.url.split("//")[1])
    stop = threading.Event()
    started = time.monotonic()
    envs: list[tuple[str, dict[str, Any]]] = [
        ("CartPole-v1", {"kwargs": {"render_mode": "rgb_array"}}),
        ("CartPole-v1", {"num_envs": 2, "kwargs": {"render_mode": "rgb_array"}}),
        ("MountainCar-v0", {"kwargs": {"render_mode": "rgb_array"}}),
        ("FrozenLake-v1", {"kwargs": {"render_mode": "ansi"}}),
        ("Acrobot-v1", {}),
    ]
    threads = [
        threading.Thread(target=drive, args=(srv.url, env_id, stop, started, seconds), kwargs=fields, daemon=True)
        for env_id, fields in envs
    ]
    begin = time.time()
    try:
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        with Chromium(work, width=1400, height=960) as browser:
            browser.open(srv.url + "/ui/?fps=5")
            browser.wait_for("document.querySelectorAll('article.env img.frame[src]').length >= 3")
            time.sleep(1.5)
            (out / "ui.png").write_bytes(browser.screenshot())
            stop.set()
            time.sleep(3)  # the last scrapes
            page = work / "panels.html"
            page.write_text(panels_page(prom_url, srv.url.split("//")[1], begin, time.time()))
            browser.call(
                "Emulation.setDeviceMetricsOverride", width=1200, height=420, deviceScaleFactor=1, mobile=False
            )
            browser.open(page.as_uri())
            (out / "episode-panels.png").write_bytes(browser.screenshot())
        for expr in (
            "sum by (env_id) (gymserve_episode_return_count)",
            "sum by (env_id) (gymserve_episode_return_sum) / sum by (env_id) (gymserve_episode_return_count)",
            "sum by (env_id) (gymserve_episode_length_sum) / sum by (env_id) (gymserve_episode_length_count)",
        ):
            answer = requests.get(prom_url + "/api/v1/query", params={"query": expr}, timeout=30).json()
            sys.stdout.write(expr + "\n")
            for found in answer["data"]["result"]:
                sys.stdout.write(f"  {found['metric'].get('env_id')}: {float(found['value'][1]):.2f}\n")
    finally:
        stop.set()
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)
        srv.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 120)
