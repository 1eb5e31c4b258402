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


# --- every shape of a slow or oversized request (issue 25) ---

SHAPES = {
    "a chunked body that never ends": b"POST /v2/envs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{",
    "a 13-digit Content-Length and one byte": (
        b"POST /v2/envs HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000000100\r\n\r\n{"
    ),
    "a head without its end": b"POST /v2/envs HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60_000,
    "a partial head": b"POST /v2/envs HTTP/1.1\r\nHost: x\r\n",
    "nothing at all": b"",
}


def connect(srv: Server, timeout: float = 10) -> socket.socket:
    parts = urlsplit(srv.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_slow_shape_stalls_the_server_and_each_is_closed_by_the_head_timeout(make_server, shape: str) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(head_timeout_seconds=2)
    calm = min(normal_client(srv.url, steps=10) for _ in range(2))
    socks = []
    try:
        for _ in range(48):
            s = connect(srv)
            if SHAPES[shape]:
                s.sendall(SHAPES[shape])
            socks.append(s)
        opened = time.monotonic()
        time.sleep(0.3)
        assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
        stalled = normal_client(srv.url, steps=10)
        assert stalled < max(1.0, 5 * calm), f"{shape}: without: {calm:.3f}s, with 48: {stalled:.3f}s"
        for s in socks:  # the server closes each within the head timeout (2 s) + 1 s of its first byte
            s.settimeout(max(0.1, opened + 3.5 - time.monotonic()))
            assert s.recv(4096) == b"", shape
        assert time.monotonic() - opened < 3.5
    finally:
        for s in socks:
            s.close()


def test_a_head_over_64_kib_is_answered_431_and_closed(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    with connect(srv) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 70_000)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"code":"header_too_large"' in answer, answer[:300]


def test_a_request_line_over_8190_bytes_is_answered_414_in_json_and_a_long_list_query_still_fits(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    with connect(srv) as s:
        s.sendall(b"GET /v2/envs?cursor=" + b"a" * 9_000)  # gunicorn answered HTML; now the worker, before it ends
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 414 ") and b'"code":"uri_too_long"' in answer, answer[:300]
    selectors = "&".join(f"label=team.example/k{i}={'v' * 60}" for i in range(16))  # the most the document allows
    assert requests.get(f"{srv.url}/v2/envs?{selectors}&cursor={'a' * 110}", timeout=10).status_code == 200


def test_an_undeclared_method_is_405_with_allow(make_server) -> None:  # type: ignore[no-untyped-def]
    resp = requests.request("TRACE", make_server().url + "/v2/batch/step", timeout=10)
    assert resp.status_code == 405 and set(resp.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}, resp.headers
    assert resp.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_an_over_limit_body_is_answered_413_at_once_and_closed_unread(make_server, api: str) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(max_body_bytes=4096)
    path = "/v1/envs/" if api == "v1" else "/v2/envs"
    started = time.monotonic()
    with connect(srv) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):  # closed after the answer: no body is drained on a thread
            answer += chunk
    assert time.monotonic() - started < 1.0
    assert answer.startswith(b"HTTP/1.1 413 ") and b"payload_too_large" in answer, answer[:300]
    # A chunked body over the limit too, by its chunks' sizes.
    with connect(srv) as s:
        s.sendall(b"POST /v2/envs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_is_buffered_then_served(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    with connect(srv) as s:
        s.sendall(
            b"POST /v2/envs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        first, rest = b'{"env_id": "Car', b'tPole-v1"}'
        s.sendall(b"%x\r\n%s" % (len(first), first))
        time.sleep(0.3)  # the rest comes later: no thread waits for it
        s.sendall(b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        assert s.recv(65536).startswith(b"HTTP/1.1 201 ")


def test_closes_whose_client_keeps_its_socket_open_never_freeze_the_worker(make_server) -> None:  # type: ignore[no-untyped-def]
    """gunicorn drained each connection it closed for up to 2 s in the worker's loop; here the loop does not wait."""
    srv: Server = make_server(workers=1)
    calm = min(normal_client(srv.url, steps=10) for _ in range(2))
    held = []
    try:
        started = time.monotonic()
        for _ in range(6):  # Connection: close, and the client never closes its side
            s = connect(srv)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            held.append(s)
        busy = normal_client(srv.url, steps=10)
        assert busy < max(1.0, 5 * calm), f"without: {calm:.3f}s, with 6 lingering closes: {busy:.3f}s"
        assert time.monotonic() - started < 3.0
    finally:
        for s in held:
            s.close()


def test_two_thousand_silent_connections_do_not_stop_the_server(make_server) -> None:  # type: ignore[no-untyped-def]
    """Past worker_connections - threads idle connections, the one idle longest is closed for a new one: 2,100
    silent connections (more than 2 workers x 1,000) leave room for a normal client, with no wait for them."""
    srv: Server = make_server(head_timeout_seconds=30)
    socks = []
    try:
        for _ in range(2100):
            socks.append(connect(srv))
        time.sleep(0.5)
        assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
        assert normal_client(srv.url, steps=10) < 2.0
    finally:
        for s in socks:
            s.close()
