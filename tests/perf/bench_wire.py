"""Bytes on the wire per step in /v1, /v2 JSON and /v2 msgpack, for CartPole and a 400x600x3 uint8 frame observation.

Not a pass/fail test, and not a timing: a byte-counting TCP proxy sits between the client and a
real `gymserve serve`, and every step's request and answer are measured as they cross it, HTTP
heads included. /v2 runs through RemoteEnv (msgpack or JSON, with or without gzip). /v1 runs
through the client's own session with RemoteEnv's /v1 headers and bodies; its frame rows step an
env made with /v2's AddRenderObservation wrapper (no Gymnasium env observes 400x600x3 frames
itself), so /v1 answers with the same frame in the seed's format: flattened, widened to int64,
zlib, base64.

Run: .venv/bin/python tests/perf/bench_wire.py [--steps 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: servers, tcp_proxy

from gymserve.client import RemoteEnv
from gymserve.client.http import HttpSession
from servers import start_server
from tcp_proxy import TcpProxy

FRAME = {"render_mode": "rgb_array", "wrappers": ["AddRenderObservation"]}
V1_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def v2_steps(url: str, steps: int, frame: bool, **client: Any) -> None:
    with RemoteEnv(url, "CartPole-v1", **(FRAME if frame else {}), **client) as env:
        env.reset(seed=0)
        for n in range(steps):
            *_, terminated, truncated, _ = env.step(n % 2)
            if terminated or truncated:
                env.reset()


def v1_steps(url: str, steps: int, frame: bool) -> None:
    """RemoteEnv's /v1 requests, on an env that /v2 made (so that it can observe frames)."""
    http = HttpSession(url)
    create: dict[str, Any] = {"env_id": "CartPole-v1"}
    if frame:
        create.update(kwargs={"render_mode": "rgb_array"}, wrappers=FRAME["wrappers"])
    iid = orjson.loads(http.send("POST", "/v2/envs", orjson.dumps(create), V1_HEADERS).checked().data)["instance_id"]
    http.send("POST", f"/v1/envs/{iid}/reset/", orjson.dumps({"seed": 0}), V1_HEADERS).checked()
    for n in range(steps):
        answer = orjson.loads(
            http.send("POST", f"/v1/envs/{iid}/step/", orjson.dumps({"action": n % 2}), V1_HEADERS).checked().data
        )
        if answer["done"]:
            http.send("POST", f"/v1/envs/{iid}/reset/", b"{}", V1_HEADERS).checked()
    http.send("DELETE", f"/v1/envs/{iid}/", None, V1_HEADERS)
    http.close()


def measure(server_url: str, steps: int, run: Callable[[str], None]) -> tuple[float, float, float]:
    proxy = TcpProxy(server_url)
    try:
        run(proxy.url)
    finally:
        proxy.close()
    stepped = [e for e in proxy.exchanges if b"/step" in e.request_line]
    assert len(stepped) == steps, (len(stepped), steps)
    return (
        sum(e.request_bytes for e in stepped) / steps,
        sum(e.answer_bytes for e in stepped) / steps,
        sum(e.answer_body_bytes for e in stepped) / steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    steps = parser.parse_args().steps
    server = start_server(Path(tempfile.mkdtemp(prefix="bench-wire-")), workers=1, log_level="warning")
    configs: list[tuple[str, Callable[[str, bool], None]]] = [
        ("/v1 (JSON, base64(zlib(int64)))", lambda url, frame: v1_steps(url, steps, frame)),
        ("/v2 JSON", lambda url, frame: v2_steps(url, steps, frame, encoding="json", compress=False)),
        ("/v2 JSON + gzip", lambda url, frame: v2_steps(url, steps, frame, encoding="json")),
        ("/v2 msgpack", lambda url, frame: v2_steps(url, steps, frame, compress=False)),
        ("/v2 msgpack + gzip (default)", lambda url, frame: v2_steps(url, steps, frame)),
    ]
    try:
        print(f"bytes per step (mean of {steps} steps; HTTP heads included)")
        print(f"{'observation':<26}{'protocol':<32}{'request':>9}{'answer':>10}{'(body)':>10}{'total':>10}")
        for label, frame in (("CartPole (4 x float32)", False), ("frame (400x600x3 uint8)", True)):
            for name, run in configs:
                sent, received, body = measure(server.url, steps, lambda url, run=run, frame=frame: run(url, frame))
                print(f"{label:<26}{name:<32}{sent:>9.0f}{received:>10.0f}{body:>10.0f}{sent + received:>10.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
