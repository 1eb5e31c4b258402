"""Slow clients cannot stall a worker: 20 connections that send one line of a request head and wait, while a
normal client creates and steps over fresh connections as fast as without them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests

from servers import Server

pytestmark = pytest.mark.integration

SLOW = 20


@contextmanager
def slow_clients(url: str, count: int = SLOW) -> Iterator[list[socket.socket]]:
    """`count` connections, each having sent one line of a request head, then nothing."""
    parts = urlsplit(url)
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection((parts.hostname, parts.port), timeout=5)
            s.sendall(b"POST /v2/envs HTTP/1.1\r\n")
            socks.append(s)
        time.sleep(0.5)  # let the server take them in
        yield socks
    finally:
        for s in socks:
            s.close()


def normal_client(url: str, steps: int = 20) -> float:
    """Seconds for a create, a reset and `steps` steps, each on a fresh connection."""
    started = time.perf_counter()
    iid = requests.post(url + "/v2/envs", json={"env_id": "CartPole-v1"}, timeout=60).json()["instance_id"]
    requests.post(f"{url}/v2/envs/{iid}/reset", json={}, timeout=60).raise_for_status()
    for _ in range(steps):
        requests.post(f"{url}/v2/envs/{iid}/step", json={"action": 0}, timeout=60)
    elapsed = time.perf_counter() - started
    requests.delete(f"{url}/v2/envs/{iid}", timeout=60)
    return elapsed


def test_slow_heads_do_not_stall_a_normal_client(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    calm = min(normal_client(srv.url) for _ in range(3))
    with slow_clients(srv.url):
        stalled = normal_client(srv.url)
    assert stalled < max(1.0, 5 * calm), f"without slow clients: {calm:.3f}s, with {SLOW}: {stalled:.3f}s"


def test_a_slow_body_and_a_slow_second_request_hold_no_thread_either(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(threads=2)
    parts = urlsplit(srv.url)
    socks = []
    try:
        for i in range(10):
            s = socket.create_connection((parts.hostname, parts.port), timeout=10)
            if i % 2:  # a whole head announcing a body that never comes
                s.sendall(b"POST /v2/envs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            else:  # a whole first request on a kept-alive connection, then one line of the second
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
            socks.append(s)
        time.sleep(0.5)
        assert normal_client(srv.url) < 2.0
    finally:
        for s in socks:
            s.close()


def test_a_request_that_never_completes_is_closed_after_the_head_timeout(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(head_timeout_seconds=0.5)
    parts = urlsplit(srv.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"POST /v2/envs HTTP/1.1\r\n")
        time.sleep(0.8)
        s.sendall(b"Host: x\r\n")  # a byte after the deadline: the server closes the connection
        assert s.recv(4096) == b""
