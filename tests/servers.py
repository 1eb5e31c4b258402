"""Real `gymserve serve` processes for tests: a free port below 32768, start, wait until ready, stop by PID.

Importable as `servers` from any test module (pytest puts tests/ on sys.path for the root conftest).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gymserve.routing import ids

# Test servers stay below the ephemeral range (32768+), so a port picked here never collides with
# a client socket's port, and below Kubernetes' NodePort range (30000+).
_PORT_RANGE = (20000, 30000)


def free_port(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A port on 127.0.0.1 that nothing listens on now, other than the ones in `taken`."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(*_PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 30000")


def free_port_base(n: int = 10) -> int:
    """A base port whose `n` ports (GYMSERVE_WORKER_PORT_BASE: the workers' slots and spare ones) are all free now."""
    for _ in range(50):
        base = free_port()
        if ports_free(base, n):
            return base
    raise RuntimeError(f"no {n} free ports in a row")


def ports_free(base: int, n: int) -> bool:
    """Whether nothing listens on 127.0.0.1 ports base .. base + n - 1 now."""
    for port in range(base, base + n):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@dataclass
class Server:
    """A `gymserve serve` subprocess: its URL, PID and log; stopped by PID."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def worker_pids(self) -> dict[int, int]:
        """slot -> pid of its current worker, from the server log (gunicorn_conf.post_fork logs each)."""
        return {int(slot): int(pid) for pid, slot in re.findall(r"worker pid (\d+) has slot (\d+)", self.log())}

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def slot_of(instance_id: str) -> int:
    """The worker slot that holds an env, as its id says."""
    owner = ids.parse(instance_id)
    assert owner is not None, instance_id
    return owner.slot


def start_server(
    tmp_path: Path, workers: int = 2, ready_timeout: float = 30, port: int | None = None, **settings: Any
) -> Server:
    """`gymserve serve` on 127.0.0.1 (a free port unless given), parking in the test's own directory."""
    port = port or free_port()
    env = dict(os.environ)
    settings.setdefault("drain_seconds", 1)  # tests stop servers that still hold envs: keep that short
    settings.setdefault("state_dir", str(tmp_path / "state"))  # never the user's own state directory
    env.update({f"GYMSERVE_{k.upper()}": str(v) for k, v in settings.items()})
    env.update(
        GYMSERVE_HOST="127.0.0.1",
        GYMSERVE_PORT=str(port),
        GYMSERVE_WORKERS=str(workers),
        GYMSERVE_NODE_ID=settings.get("node_id", "itest"),
    )
    log_path = next(p for n in range(100) if not (p := tmp_path / f"server-{port}-{n}.log").exists())
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gymserve.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path, env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gymserve exited with {proc.returncode}:\n{server.log()}")
        try:  # ready when every worker has its socket up, so that tests can rely on all of them
            if requests.get(server.url + "/readyz", timeout=1).json().get("workers") == workers:
                return server
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy booting on a loaded machine
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"gymserve did not have {workers} workers ready within {ready_timeout}s:\n{server.log()}")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to 127.0.0.1:`port` on a fresh connection (no keep-alive: a router routes each one on its own);
    a JSON body is sent and read as JSON (an answer that is not JSON is kept as text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = {"Connection": "close", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU so far of process `pid` and its children (a gunicorn master and its workers), from /proc."""
    total = 0.0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
