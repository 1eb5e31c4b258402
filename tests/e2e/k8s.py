"""Helpers for the Helm end-to-end test: kubectl and helm runs, port-forwards, HTTP calls, and a stand-in cluster DNS.

The local test cluster (../shared/infra/k8s-local.sh) has no cluster DNS and no kube-proxy. `ClusterDNS` answers
what CoreDNS would answer for one namespace, from its Endpoints objects, so that the chart's router can be run
unchanged with `router.resolver` pointing at it: a pod of a headless Service by its host name, a Service by its
name. A ClusterIP Service's name resolves to its ready pods instead of its (unrouted) ClusterIP: that stands in
for kube-proxy.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from servers import Answer, call

# Host ports stay below the ephemeral range (32768+) and Kubernetes' NodePort range (30000+).
PORT_RANGE = (20000, 30000)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE} on {host}")


def interface_ipv4(name: str) -> str:
    """The IPv4 address of a network interface (SIOCGIFADDR), e.g. docker0, where the pods' gateway is."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
    return socket.inet_ntoa(packed[20:24])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last!r})")


# --- kubectl and helm --------------------------------------------------------------------------------


@dataclass
class Kube:
    """kubectl and helm against one cluster (KUBECONFIG) and one namespace."""

    env: dict[str, str]
    namespace: str
    helm_bin: str = "helm"

    def run(self, *cmd: str, input: str | None = None, timeout: float = 300, check: bool = True) -> str:
        proc = subprocess.run(
            cmd,
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{_stderr(proc)}")
        return proc.stdout

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.run("kubectl", "--namespace", self.namespace, *args, **kw)

    def helm(self, *args: str, **kw: Any) -> str:
        return self.run(self.helm_bin, "--namespace", self.namespace, *args, **kw)

    def get(self, *what: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", *what, "--output", "json")))

    def pods(self, selector: str) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self.get("pods", "--selector", selector)["items"]}


def _stderr(proc: subprocess.CompletedProcess[str]) -> str:
    # kubectl 1.32 warns about its version skew with the 1.20 server on every call: noise, not news.
    return "\n".join(line for line in proc.stderr.splitlines() if "version difference" not in line)[-3000:]


def is_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def parse_time(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def seconds_to_ready(pod: dict[str, Any]) -> float:
    """From the pod's creation to its Ready condition (the API's timestamps have whole seconds)."""
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return parse_time(ready["lastTransitionTime"]) - parse_time(pod["metadata"]["creationTimestamp"])


# --- port-forwards and HTTP --------------------------------------------------------------------------


class PortForward:
    """`kubectl port-forward` to one pod or Service on a free local port, for as long as the context lasts."""

    def __init__(self, kube: Kube, target: str, remote_port: int) -> None:
        self.kube, self.target, self.remote_port = kube, target, remote_port
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> PortForward:
        self.port = free_port()
        cmd = ["kubectl", "--namespace", self.kube.namespace, "port-forward", "--address", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*cmd, self.target, f"{self.port}:{self.remote_port}"],
            env=self.kube.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> REMOTE" once it listens
        if "Forwarding from" not in line:
            self.stop()
            raise AssertionError(f"kubectl port-forward {self.target}: {line!r}")
        # Keep reading its output so that a full pipe never blocks it.
        self._drain = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self._drain.start()
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Answer:
        return call(self.port, method, path, body, timeout)


@contextmanager
def port_forwards(kube: Kube, targets: Sequence[str], remote_port: int) -> Iterator[dict[str, PortForward]]:
    forwards: dict[str, PortForward] = {}
    try:
        for target in targets:
            forwards[target] = PortForward(kube, target, remote_port).start()
        yield forwards
    finally:
        for forward in forwards.values():
            forward.stop()


# --- a stand-in for the cluster DNS --------------------------------------------------------------------

_QTYPE_A = 1
_LABEL = re.compile(rb"[a-z0-9-]{1,63}")


class ClusterDNS:
    """A UDP DNS server with CoreDNS' answers for the Services of one namespace, from their Endpoints.

    `<host>.<service>.<ns>.svc.<domain>` is a pod of a headless Service (its Endpoints address with that host
    name, which StatefulSet pods have); `<service>.<ns>.svc.<domain>` is every address of its Endpoints (ready
    ones only, unless the Service publishes not-ready addresses). Anything else is NXDOMAIN.
    """

    def __init__(
        self, kube: Kube, address: str, domain: str = "cluster.local", refresh: float = 0.5, port: int | None = None
    ) -> None:
        self.kube, self.domain, self.refresh = kube, domain.strip("."), refresh
        self.port = port or free_port(address, socket.SOCK_DGRAM)
        self.address = address
        self.records: dict[str, list[str]] = {}
        self.queries = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, self.port))
        self._sock.settimeout(0.2)
        self._threads = [
            threading.Thread(target=self._serve, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    @property
    def resolver(self) -> str:
        """The value for the chart's router.resolver."""
        return f"{self.address}:{self.port}"

    def start(self) -> ClusterDNS:
        self._load()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._sock.close()

    def _load(self) -> None:
        suffix = f"{self.kube.namespace}.svc.{self.domain}"
        records: dict[str, list[str]] = {}
        for ep in self.kube.get("endpoints")["items"]:
            service = ep["metadata"]["name"]
            for subset in ep.get("subsets") or []:
                for addr in subset.get("addresses") or []:
                    records.setdefault(f"{service}.{suffix}", []).append(addr["ip"])
                    if addr.get("hostname"):
                        records[f"{addr['hostname']}.{service}.{suffix}"] = [addr["ip"]]
        self.records = records

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self._load()
            except (AssertionError, subprocess.TimeoutExpired, ValueError):
                continue  # keep the last answer; the next round tries again

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self._sock.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            answer = self.answer(query)
            if answer:
                self.queries += 1
                self._sock.sendto(answer, client)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            return None
        labels, pos = [], 12
        while pos < len(query) and query[pos]:
            size = query[pos]
            labels.append(query[pos + 1 : pos + 1 + size].lower())
            pos += 1 + size
        if pos + 5 > len(query) or not all(_LABEL.fullmatch(label) for label in labels):
            return None
        qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
        question = query[12 : pos + 5]
        ips = self.records.get(b".".join(labels).decode())
        if ips is None:
            return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        answers = b""
        if qtype == _QTYPE_A:
            # A pointer to the question's name, type A, class IN, TTL 1 s, 4 bytes of address.
            answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(ip) for ip in ips)
        return struct.pack("!HHHHHH", qid, 0x8180, 1, len(ips) if answers else 0, 0, 0) + question + answers
