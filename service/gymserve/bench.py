"""`gymserve bench`: a closed-loop load generator that reports steps/s, latency percentiles and errors.

Each client owns one env and steps it as fast as the server answers (a closed loop), on one
keep-alive connection or on a fresh connection per request. Clients are threads spread over
several processes so that the generator is not held by one GIL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class BenchConfig:
    url: str = "http://127.0.0.1:8000"
    env_id: str = "CartPole-v1"
    clients: int = 16
    seconds: float = 10.0
    fresh_connections: bool = False
    processes: int = 0  # 0: min(clients, cores)
    server_pids: tuple[int, ...] = ()
    progress: bool = False


@dataclass
class ClientResult:
    steps: int = 0
    latencies_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wire_bytes: int = 0
    forwarded: int = 0


class _Connection:
    """http.client over one socket, reopened per request when asked for fresh connections."""

    def __init__(self, url: str, fresh: bool) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.fresh = fresh
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, int, bool]:
        """(status, body, bytes on the wire in both directions, forwarded by another worker)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        headers = dict(_JSON)
        if self.fresh:
            headers["Connection"] = "close"
        try:
            self.conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        wire = _request_bytes(method, self.prefix + path, self.host, self.port, headers, body) + _response_bytes(
            resp, data
        )
        if self.fresh:
            self.close()
        return resp.status, data, wire, resp.getheader("X-Gymserve-Forwarded") == "1"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _request_bytes(method: str, path: str, host: str, port: int, headers: dict[str, str], body: bytes | None) -> int:
    """The bytes http.client sends for this request: request line, headers, blank line, body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return sum(len(line) + 2 for line in lines) + 2 + len(body or b"")


def _response_bytes(resp: http.client.HTTPResponse, data: bytes) -> int:
    status_line = len(f"HTTP/1.1 {resp.status} {resp.reason}") + 2
    return status_line + sum(len(k) + len(v) + 4 for k, v in resp.getheaders()) + 2 + len(data)


def _run_client(cfg: BenchConfig, seed: int, deadline: float, result: ClientResult) -> None:
    conn = _Connection(cfg.url, cfg.fresh_connections)
    created = False
    try:
        status, data, _, _ = conn.call(
            "POST", "/v1/envs/", json.dumps({"env_id": cfg.env_id, "auto_reset": True}).encode()
        )
        if status != 200:
            result.errors[f"create {status}"] += 1
            return
        created = True
        path = f"/v1/envs/{json.loads(data)['instance_id']}"
        conn.call("POST", f"{path}/reset/", json.dumps({"seed": seed}).encode())
        step_path = f"{path}/step/"
        sample = conn.call("GET", f"{path}/action_space/sample/", None)[1]
        body = json.dumps({"action": json.loads(sample)["action"]}).encode()
        while time.monotonic() < deadline:
            started = time.perf_counter_ns()
            try:
                status, _, wire, hop = conn.call("POST", step_path, body)
            except (OSError, http.client.HTTPException) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            result.latencies_us.append((time.perf_counter_ns() - started) // 1000)
            result.wire_bytes += wire
            result.forwarded += hop
            if status == 200:
                result.steps += 1
            else:
                result.errors[f"http {status}"] += 1
    finally:
        if created:
            try:
                conn.call("DELETE", f"{path}/", None)
            except (OSError, http.client.HTTPException):
                result.errors["delete failed"] += 1
        conn.close()


def _process_main(cfg: BenchConfig, seeds: list[int], deadline: float, queue: Any) -> None:
    results = [ClientResult() for _ in seeds]
    threads = [
        threading.Thread(target=_run_client, args=(cfg, s, deadline, r)) for s, r in zip(seeds, results, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = ClientResult()
    for r in results:
        merged.steps += r.steps
        merged.latencies_us += r.latencies_us
        merged.errors.update(r.errors)
        merged.wire_bytes += r.wire_bytes
        merged.forwarded += r.forwarded
    queue.put(merged)


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """utime+stime of the given processes and all their children (the gunicorn master and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total / ticks


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and return its report (what `--json` prints)."""
    processes = cfg.processes or min(cfg.clients, os.cpu_count() or 1)
    seeds = list(range(cfg.clients))
    chunks = [seeds[i::processes] for i in range(processes) if seeds[i::processes]]
    queue: Any = multiprocessing.get_context("fork").Queue()
    cpu_before = _cpu_seconds(cfg.server_pids)
    started = time.monotonic()
    deadline = started + cfg.seconds
    procs = [
        multiprocessing.get_context("fork").Process(target=_process_main, args=(cfg, c, deadline, queue))
        for c in chunks
    ]
    for p in procs:
        p.start()
    while cfg.progress and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        print(f"\r{time.monotonic() - started:5.1f}s / {cfg.seconds:g}s", end="", file=sys.stderr, flush=True)
    results = [queue.get(timeout=cfg.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(cfg.server_pids) - cpu_before
    if cfg.progress:
        print(file=sys.stderr)
    steps = sum(r.steps for r in results)
    latencies = sorted(v for r in results for v in r.latencies_us)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "steps": steps,
        "steps_per_s": steps / cfg.seconds,
        "latency_us": {f"p{int(q * 100)}": _percentile(latencies, q) for q in (0.5, 0.9, 0.99)},
        "errors": dict(errors),
        "bytes_per_step": sum(r.wire_bytes for r in results) / max(len(latencies), 1),
        "forwarded_share": sum(r.forwarded for r in results) / max(len(latencies), 1),
        "server_cpu_seconds": cpu if cfg.server_pids else None,
        "server_cpu_us_per_step": cpu / steps * 1e6 if cfg.server_pids and steps else None,
        "elapsed_s": elapsed,
    }


def format_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lat = report["latency_us"]
    lines = [
        f"gymserve bench: {cfg['env_id']} at {cfg['url']}, {cfg['clients']} clients, "
        f"{'fresh connection per request' if cfg['fresh_connections'] else 'keep-alive'}, {cfg['seconds']:g}s",
        f"  steps/s        {report['steps_per_s']:10.0f}   ({report['steps']} steps)",
        f"  latency        p50 {lat['p50']:.0f} us   p90 {lat['p90']:.0f} us   p99 {lat['p99']:.0f} us",
        f"  bytes/step     {report['bytes_per_step']:10.0f}   (request + response, headers included)",
        f"  forwarded      {report['forwarded_share']:10.1%}   (answered by another worker than the one reached)",
        f"  errors         {sum(report['errors'].values()):10d}   {report['errors'] or ''}",
    ]
    if report["server_cpu_seconds"] is not None:
        lines.append(
            f"  server CPU     {report['server_cpu_seconds']:10.2f} s   "
            f"({report['server_cpu_us_per_step'] or 0:.0f} us per step)"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=BenchConfig.url, help="server or router base URL")
    parser.add_argument("--env-id", default=BenchConfig.env_id)
    parser.add_argument("--clients", type=int, default=BenchConfig.clients, help="concurrent clients, one env each")
    parser.add_argument("--seconds", type=float, default=BenchConfig.seconds, help="how long to step")
    parser.add_argument("--fresh-connections", action="store_true", help="a new TCP connection per request")
    parser.add_argument("--processes", type=int, default=0, help="load-generator processes (default: cores)")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="PID of the server (gunicorn master) on this machine, to report its CPU",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--progress", action="store_true", help="show elapsed time on stderr")


def main(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.seconds <= 0:
        print("gymserve bench: --clients must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        url=args.url,
        env_id=args.env_id,
        clients=args.clients,
        seconds=args.seconds,
        fresh_connections=args.fresh_connections,
        processes=args.processes,
        server_pids=tuple(args.server_pid),
        progress=args.progress,
    )
    report = run(cfg)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["steps"] == 0 else 0
