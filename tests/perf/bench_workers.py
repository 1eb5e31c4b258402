"""Steps/s of `gymserve serve --workers 1` vs `--workers 2`, with keep-alive and fresh-connection clients.

Not a pass/fail test. Each env is stepped by one client (closed loop); clients are threads spread
over a few processes so that the load generator itself is not held by one GIL. Prints steps/s,
errors and the share of requests that were forwarded to another worker, and the 2-vs-1 ratios.

Run: .venv/bin/python tests/perf/bench_workers.py [--clients 16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


def free_port() -> int:
    for port in range(21000, 32000, 7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def start(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "GYMSERVE_PORT": str(port),
        "GYMSERVE_WORKERS": str(workers),
        "GYMSERVE_LOG_LEVEL": "warning",
        "GYMSERVE_DRAIN_SECONDS": "0",
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
            ready = call(port, "GET", "/readyz", None, keep=None)[1]
            if ready.get("workers") == workers:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def call(
    port: int, method: str, path: str, body: Any, keep: http.client.HTTPConnection | None
) -> tuple[int, Any, bool]:
    conn = keep or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    if keep is None:
        conn.close()
    return resp.status, json.loads(payload) if payload else None, resp.getheader("X-Gymserve-Forwarded") == "1"


def client_process(port: int, ids: list[str], seconds: float, fresh: bool, out: Any) -> None:
    totals = {"steps": 0, "errors": 0, "forwarded": 0}
    lock = threading.Lock()

    def run(iid: str) -> None:
        keep = None if fresh else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        steps = errors = forwarded = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                status, _, hop = call(port, "POST", f"/v1/envs/{iid}/step/", {"action": steps % 2}, keep)
            except OSError:
                errors += 1
                continue
            steps += status == 200
            errors += status != 200
            forwarded += hop
        with lock:
            totals["steps"] += steps
            totals["errors"] += errors
            totals["forwarded"] += forwarded

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(totals)


def measure(port: int, ids: list[str], seconds: float, fresh: bool, processes: int) -> dict[str, float]:
    out: Any = multiprocessing.Queue()
    chunks = [ids[i::processes] for i in range(processes)]
    procs = [multiprocessing.Process(target=client_process, args=(port, c, seconds, fresh, out)) for c in chunks]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    steps = sum(r["steps"] for r in results)
    return {
        "steps_per_s": steps / seconds,
        "errors": sum(r["errors"] for r in results),
        "forwarded": sum(r["forwarded"] for r in results) / max(steps, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes")
    args = parser.parse_args()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gymserve-bench-"))
    rows = {}
    for workers in (1, 2):
        proc, port = start(workers)
        try:
            ids = []
            for _ in range(args.clients):  # fresh connections: creates spread over the workers
                iid = call(port, "POST", "/v1/envs/", {"env_id": "CartPole-v1", "auto_reset": True}, None)[1]
                ids.append(iid["instance_id"])
                call(port, "POST", f"/v1/envs/{ids[-1]}/reset/", {"seed": len(ids)}, None)
            for mode in ("keep-alive", "fresh"):
                rows[workers, mode] = measure(port, ids, args.seconds, mode == "fresh", args.processes)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    print(
        f"CartPole-v1 /v1 step, {args.clients} clients, {args.seconds:g}s per cell, "
        f"{os.cpu_count()} cores (server and load generator share them)"
    )
    print(f"{'workers':>8} {'connection':>11} {'steps/s':>9} {'errors':>7} {'forwarded':>10}")
    for (workers, mode), r in rows.items():
        print(f"{workers:>8} {mode:>11} {r['steps_per_s']:>9.0f} {r['errors']:>7} {r['forwarded']:>9.0%}")
    for mode in ("keep-alive", "fresh"):
        ratio = rows[2, mode]["steps_per_s"] / rows[1, mode]["steps_per_s"]
        print(f"2 workers / 1 worker, {mode}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
