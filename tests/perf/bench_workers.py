"""Steps/s of `gymserve serve --workers 1` vs `--workers 2`, with keep-alive and fresh-connection clients.

Not a pass/fail test. The load comes from wrk (Debian's `wrk` package; a C load generator, so that
on a 2-core machine the server, not a Python client, is what is measured): one wrk thread and one
connection per client, each creating, resetting and then stepping its own CartPole env in a closed
loop, all on its connection (tests/perf/step.lua). Prints steps/s, errors,
p50/p99 latency and the share of requests that were forwarded to another worker, and 2-vs-1 ratios.

Run: .venv/bin/python tests/perf/bench_workers.py [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wrk import run_wrk

from servers import free_port

HERE = Path(__file__).resolve().parent


def start(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "GYMSERVE_PORT": str(port),
        "GYMSERVE_WORKERS": str(workers),
        "GYMSERVE_LOG_LEVEL": "warning",
        "GYMSERVE_DRAIN_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="gymserve-bench-"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymserve.cli", "serve"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if call(port, "GET", "/readyz", None).get("workers") == workers:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def call(port: int, method: str, path: str, body: dict | None) -> dict:
    """One request on a fresh connection (so creates spread over the workers, as fresh clients would)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"}
    )
    data = conn.getresponse().read()
    conn.close()
    return json.loads(data) if data else {}


def wrk(port: int, clients: int, seconds: float, fresh: bool) -> dict:
    result = run_wrk(port, "step.lua", clients, seconds, {"GYMSERVE_FRESH": "1" if fresh else "0"})
    result["steps_per_s"] = result["steps"] / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench_workers: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    rows = {}
    for workers in (1, 2):
        proc, port = start(workers)
        try:
            for mode in ("keep-alive", "fresh"):
                rows[workers, mode] = wrk(port, args.clients, args.seconds, fresh=mode == "fresh")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    print(
        f"CartPole-v1 /v1 step, {args.clients} clients (wrk, one connection each), {args.seconds:g}s per cell, "
        f"{os.cpu_count()} cores shared by server and wrk"
    )
    print(
        f"{'workers':>8} {'connection':>11} {'steps/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'forwarded':>10}"
    )
    for (workers, mode), r in rows.items():
        share = r["forwarded"] / max(r["steps"], 1)
        print(
            f"{workers:>8} {mode:>11} {r['steps_per_s']:>9.0f} {r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f} "
            f"{r['errors'] + r['socket_errors']:>7} {share:>9.0%}"
        )
    for mode in ("keep-alive", "fresh"):
        print(f"2 workers / 1 worker, {mode}: {rows[2, mode]['steps_per_s'] / rows[1, mode]['steps_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
