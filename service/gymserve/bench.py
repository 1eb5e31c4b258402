"""`gymserve bench`: a closed-loop load generator that reports steps/s, requests/s, latency percentiles and errors.

Each client owns its envs (one env, a batch of envs, or one vector env) and steps them as fast as
the server answers (a closed loop), through /v1 or /v2 (JSON or msgpack), on one keep-alive
connection, on a fresh connection per request, or (`--stream`) as msgpack messages on the env's
WebSocket step stream (GET /v2/envs/<id>/stream; /v2/stream for batches). Clients are threads spread over several
processes so that the generator is not held by one GIL. Steps count env-steps: a batch or vector
request of N envs is N steps and one request.
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

from .client.connection import KeptConnection
from .client.http import auth_headers
from .client.stream import StreamBroken, StreamChannel
from .codec import spaces, values

JSON = "application/json"
MSGPACK = "application/msgpack"
MEDIA_TYPES = {"json": JSON, "msgpack": MSGPACK}
MODES = ("single", "batch", "vector")


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
    api: str = "v1"
    encoding: str = "json"  # /v2 only: json or msgpack
    mode: str = "single"  # /v2 only: single (one env per request), batch (/v2/batch/step), vector (num_envs)
    batch_size: int = 16  # batch mode: envs each client steps in one request
    num_envs: int = 16  # vector mode: sub-envs of each client's vector env
    stream: bool = False  # /v2 msgpack only: each step a message on the step stream, in lockstep
    api_key: str = field(default="", repr=False)  # a farm with tenants: sent as a Bearer token, never reported


@dataclass
class ClientResult:
    steps: int = 0  # env-steps: a batch or vector request steps many
    requests: int = 0
    latencies_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wire_bytes: int = 0
    forwarded: int = 0


class _Connection:
    """One keep-alive connection (the client's connection helper); `fresh`: a new connection per request."""

    def __init__(self, url: str, fresh: bool, api_key: str = "") -> None:
        parts = urlsplit(url)
        self.auth = auth_headers(api_key or None)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.fresh = fresh
        self.kept = KeptConnection(self.host, self.port, timeout=60)

    def call(self, method: str, path: str, body: bytes | None, media_type: str = JSON) -> tuple[int, bytes, int, bool]:
        """(status, body, bytes on the wire in both directions, forwarded by another worker)."""
        headers = {"Content-Type": media_type, "Accept": media_type, **self.auth}
        if self.fresh:
            headers["Connection"] = "close"  # the server closes it after its answer: the helper keeps none
        resp, data = self.kept.exchange(method, self.prefix + path, body, headers)
        wire = _request_bytes(method, self.prefix + path, self.host, self.port, headers, body) + _response_bytes(
            resp, data
        )
        return resp.status, data, wire, resp.getheader("X-Gymserve-Forwarded") == "1"

    def close(self) -> None:
        self.kept.close()


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


class SetupFailed(Exception):
    """A create or reset was refused: the client counts it as an error and stops."""


class _Driver:
    """What one client sends: its envs are made by `setup`, each `request` steps them once, `teardown` closes them."""

    media_type = JSON

    def __init__(self, cfg: BenchConfig, conn: _Connection) -> None:
        self.cfg = cfg
        self.conn = conn
        self.created: list[str] = []

    def setup(self, seed: int) -> None:
        raise NotImplementedError

    def request(self) -> tuple[str, bytes]:
        """The path and body of the next step request."""
        raise NotImplementedError

    def answered(self, status: int, data: bytes, errors: Counter[str]) -> int:
        """Env-steps done by an answer; errors counted by kind."""
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError


class _V1Single(_Driver):
    """The seed's /v1: create with auto_reset, reset seeded, step one sampled action forever."""

    def setup(self, seed: int) -> None:
        status, data, _, _ = self.conn.call(
            "POST", "/v1/envs/", json.dumps({"env_id": self.cfg.env_id, "auto_reset": True}).encode()
        )
        if status != 200:
            raise SetupFailed(f"create {status}")
        self.created.append(json.loads(data)["instance_id"])
        self.path = f"/v1/envs/{self.created[0]}"
        self.conn.call("POST", f"{self.path}/reset/", json.dumps({"seed": seed}).encode())
        sample = self.conn.call("GET", f"{self.path}/action_space/sample/", None)[1]
        self.body = json.dumps({"action": json.loads(sample)["action"]}).encode()

    def request(self) -> tuple[str, bytes]:
        return f"{self.path}/step/", self.body

    def answered(self, status: int, data: bytes, errors: Counter[str]) -> int:
        if status == 200:
            return 1
        errors[f"http {status}"] += 1
        return 0

    def teardown(self) -> None:
        for iid in self.created:
            self.conn.call("DELETE", f"/v1/envs/{iid}/", None)


class _V2(_Driver):
    """/v2 in JSON or msgpack, numbered like RemoteEnv: single envs, a batch of envs, or one vector env."""

    def __init__(self, cfg: BenchConfig, conn: _Connection) -> None:
        super().__init__(cfg, conn)
        self.media_type = MEDIA_TYPES[cfg.encoding]

    def _call(self, method: str, path: str, payload: Any, what: str) -> Any:
        body = None if payload is None else values.dumps(payload, self.media_type)
        status, data, _, _ = self.conn.call(method, path, body, self.media_type)
        if status >= 300:
            raise SetupFailed(f"{what} {status}")
        return values.loads(data, self.media_type) if data else None

    def setup(self, seed: int) -> None:
        create: dict[str, Any] = {"env_id": self.cfg.env_id}
        if self.cfg.mode == "vector":
            create["num_envs"] = self.cfg.num_envs
        else:
            create["auto_reset"] = True
        count = self.cfg.batch_size if self.cfg.mode == "batch" else 1
        actions = []
        for n in range(count):
            info = self._call("POST", "/v2/envs", create, "create")
            self.created.append(info["instance_id"])
            self._call("POST", f"/v2/envs/{info['instance_id']}/reset", {"seed": seed * count + n, "seq": 1}, "reset")
            space = spaces.rebuild_space(info["action_space"])
            space.seed(seed * count + n)
            actions.append(space.sample())
        self.seqs = [1] * count
        self.actions = actions

    def request(self) -> tuple[str, bytes]:
        path, payload = self._step()
        return path, values.dumps(payload, self.media_type)

    def message(self) -> bytes:
        """The next step as a message of the step stream (msgpack)."""
        _, payload = self._step()
        return values.dumps({"op": "batch_step" if self.cfg.mode == "batch" else "step", **payload}, MSGPACK)

    def _step(self) -> tuple[str, dict[str, Any]]:
        if self.cfg.mode == "batch":
            items = [
                {"id": iid, "action": action, "seq": seq + 1}
                for iid, action, seq in zip(self.created, self.actions, self.seqs, strict=True)
            ]
            return "/v2/batch/step", {"items": items}
        return f"/v2/envs/{self.created[0]}/step", {"action": self.actions[0], "seq": self.seqs[0] + 1}

    def answered(self, status: int, data: bytes, errors: Counter[str]) -> int:
        if status != 200:
            errors[f"http {status}"] += 1
            return 0
        if self.cfg.mode != "batch":
            self.seqs[0] += 1
            return self.cfg.num_envs if self.cfg.mode == "vector" else 1
        done = 0
        for i, result in enumerate(values.loads(data, self.media_type)["results"]):
            if "error" in result:
                errors[f"item {result['error']['code']}"] += 1
            else:
                self.seqs[i] += 1
                done += 1
        return done

    def teardown(self) -> None:
        for iid in self.created:
            self.conn.call("DELETE", f"/v2/envs/{iid}", None, self.media_type)


def _run_client(cfg: BenchConfig, seed: int, deadline: float, result: ClientResult) -> None:
    conn = _Connection(cfg.url, cfg.fresh_connections, cfg.api_key)
    driver: _Driver = _V1Single(cfg, conn) if cfg.api == "v1" else _V2(cfg, conn)
    try:
        driver.setup(seed)
        if isinstance(driver, _V2) and cfg.stream:
            _stream_steps(cfg, driver, deadline, result)
        else:
            _http_steps(driver, deadline, result)
    except SetupFailed as exc:
        result.errors[str(exc)] += 1
    except (OSError, http.client.HTTPException) as exc:
        result.errors[f"setup {type(exc).__name__}"] += 1
    finally:
        try:
            driver.teardown()
        except (OSError, http.client.HTTPException):
            result.errors["delete failed"] += 1
        conn.close()


def _http_steps(driver: _Driver, deadline: float, result: ClientResult) -> None:
    """The client's steps until `deadline`, each a request, the next sent once the last is answered."""
    while time.monotonic() < deadline:
        path, body = driver.request()
        started = time.perf_counter_ns()
        try:
            status, data, wire, hop = driver.conn.call("POST", path, body, driver.media_type)
        except (OSError, http.client.HTTPException) as exc:
            result.errors[type(exc).__name__] += 1
            continue
        result.latencies_us.append((time.perf_counter_ns() - started) // 1000)
        result.requests += 1
        result.wire_bytes += wire
        result.forwarded += hop
        result.steps += driver.answered(status, data, result.errors)


# An error message's answer on the stream: a msgpack map whose one key is "error" (answers never start so).
_STREAM_ERROR = b"\x81\xa5error"


def _stream_steps(cfg: BenchConfig, driver: _V2, deadline: float, result: ClientResult) -> None:
    """The client's steps until `deadline`, each a message on its stream, the next sent once the last is answered."""
    target = None if cfg.mode == "batch" else driver.created[0]
    try:
        channel = StreamChannel(cfg.url, target, dict(driver.conn.auth), timeout=60)
    except StreamBroken as exc:
        raise SetupFailed(f"stream refused ({exc})") from None
    try:
        while time.monotonic() < deadline:
            message = driver.message()
            started = time.perf_counter_ns()
            data = channel.call(message)
            result.latencies_us.append((time.perf_counter_ns() - started) // 1000)
            result.requests += 1
            result.wire_bytes += _frame_bytes(len(message), masked=True) + _frame_bytes(len(data), masked=False)
            if data.startswith(_STREAM_ERROR):
                result.errors[f"stream {values.loads(data, MSGPACK)['error']['code']}"] += 1
            else:
                result.steps += driver.answered(200, data, result.errors)
    except StreamBroken as exc:
        result.errors[f"stream broken ({exc})"] += 1
    finally:
        channel.close()


def _frame_bytes(size: int, masked: bool) -> int:
    """A WebSocket frame's bytes for a payload of `size` (RFC 6455 5.2: a client's frames carry a 4-byte mask)."""
    length = 0 if size < 126 else 2 if size < 65536 else 8
    return 2 + length + (4 if masked else 0) + size


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
        merged.requests += r.requests
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
    requests = sum(r.requests for r in results)
    latencies = sorted(v for r in results for v in r.latencies_us)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "api_key")},  # never the key
        "steps": steps,
        "steps_per_s": steps / cfg.seconds,
        "requests": requests,
        "requests_per_s": requests / cfg.seconds,
        "latency_us": {f"p{int(q * 100)}": _percentile(latencies, q) for q in (0.5, 0.9, 0.99)},
        "errors": dict(errors),
        "bytes_per_step": sum(r.wire_bytes for r in results) / max(steps, 1),
        "bytes_per_request": sum(r.wire_bytes for r in results) / max(len(latencies), 1),
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
        f"{'fresh connection per request' if cfg['fresh_connections'] else 'keep-alive'}, {cfg['seconds']:g}s, "
        f"{_describe_api(cfg)}",
        f"  steps/s        {report['steps_per_s']:10.0f}   ({report['steps']} env-steps)",
        f"  requests/s     {report['requests_per_s']:10.0f}   ({report['requests']} step requests)",
        f"  latency        p50 {lat['p50']:.0f} us   p90 {lat['p90']:.0f} us   p99 {lat['p99']:.0f} us   (per request)",
        f"  bytes/step     {report['bytes_per_step']:10.0f}   (request + response, headers included, per env-step)",
        f"  forwarded      {report['forwarded_share']:10.1%}   (answered by another worker than the one reached)",
        f"  errors         {sum(report['errors'].values()):10d}   {report['errors'] or ''}",
    ]
    if report["server_cpu_seconds"] is not None:
        lines.append(
            f"  server CPU     {report['server_cpu_seconds']:10.2f} s   "
            f"({report['server_cpu_us_per_step'] or 0:.0f} us per step)"
        )
    return "\n".join(lines)


def _describe_api(cfg: dict[str, Any]) -> str:
    if cfg["api"] == "v1":
        return "/v1 JSON, one env per request"
    if cfg["stream"]:
        return f"/v2 step stream (msgpack messages), {_MODE_WORDS[cfg['mode']](cfg)} per message"
    return f"/v2 {cfg['encoding']}, {_MODE_WORDS[cfg['mode']](cfg)} per request"


_MODE_WORDS = {
    "single": lambda cfg: "one env",
    "batch": lambda cfg: f"{cfg['batch_size']} envs (a batch step)",
    "vector": lambda cfg: f"a vector env of {cfg['num_envs']}",
}


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
    parser.add_argument("--api", choices=("v1", "v2"), default=None, help="which API to step through (default v1)")
    parser.add_argument("--encoding", choices=tuple(MEDIA_TYPES), default=None, help="/v2 body encoding (default json)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="step over the WebSocket step stream (/v2 msgpack messages, one env per connection in lockstep; "
        "batch mode: /v2/stream)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=BenchConfig.mode,
        help="/v2: single (one env per request), batch (--batch-size envs per /v2/batch/step), "
        "vector (one vector env of --num-envs per request)",
    )
    parser.add_argument("--batch-size", type=int, default=BenchConfig.batch_size, help="batch mode: envs per client")
    parser.add_argument(
        "--num-envs", type=int, default=BenchConfig.num_envs, help="vector mode: sub-envs of each client's vector env"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="a tenant's key for a farm with tenants (default: $GYMSERVE_API_KEY; never printed)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--progress", action="store_true", help="show elapsed time on stderr")


def main(args: argparse.Namespace) -> int:
    problem = _bad_arguments(args)
    if problem:
        print(f"gymserve bench: {problem}", file=sys.stderr)
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
        api=args.api,
        encoding=args.encoding,
        mode=args.mode,
        batch_size=args.batch_size,
        num_envs=args.num_envs,
        api_key=args.api_key or "",
        stream=args.stream,
    )
    report = run(cfg)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["steps"] == 0 else 0


def _bad_arguments(args: argparse.Namespace) -> str:
    """What is wrong with the arguments ("" if nothing); --api and --encoding are given their defaults here (the
    stream's are v2 and msgpack)."""
    if args.stream and (args.api == "v1" or args.encoding == "json" or args.fresh_connections):
        return (
            "--stream sends /v2 msgpack messages on one connection: "
            "not with --api v1, --encoding json or --fresh-connections"
        )
    args.api = args.api or ("v2" if args.stream else BenchConfig.api)
    args.encoding = args.encoding or ("msgpack" if args.stream else BenchConfig.encoding)
    if args.clients < 1 or args.seconds <= 0:
        return "--clients must be at least 1 and --seconds positive"
    if args.batch_size < 1 or args.num_envs < 1:
        return "--batch-size and --num-envs must be at least 1"
    if args.api == "v1" and (args.mode != "single" or args.encoding != "json"):
        return "--api v1 steps one env per request in JSON: --mode batch/vector and --encoding msgpack need --api v2"
    return ""
