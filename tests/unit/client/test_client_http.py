"""The client's HTTP session against a tiny in-process HTTP server: retries, backoff, and the client's own errors."""

from __future__ import annotations

import http.client
import time
from typing import Any

import gymnasium
import pytest
from fake_server import Answer, Drop, Stub

from gymserve.client import (
    ClientError,
    ConnectionFailed,
    EnvClosed,
    RemoteEnv,
    RemoteError,
    RemoteVectorEnv,
    ResponseTimeout,
    ServerUnreachable,
)
from gymserve.client.http import HttpSession, Reply
from servers import free_port


def assert_backoff(waits: list[float], base: float) -> None:
    """Exponential backoff with jitter: the n-th wait lies in [0.5, 1] x base x 2**n."""
    for n, wait in enumerate(waits):
        assert 0.5 * base * 2**n <= wait <= base * 2**n, f"wait {n} was {wait}"


def test_a_port_nobody_listens_on_raises_server_unreachable_after_every_retry(waits: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing is started on it
    session = HttpSession(url, retries=3, backoff=0.1)
    with pytest.raises(ServerUnreachable) as err:
        session.send("POST", "/v2/envs", b"{}", resend=False)
    assert err.value.attempts == 4 and err.value.method == "POST" and err.value.url == f"{url}/v2/envs"
    assert "Connection refused" in str(err.value) and "after 4 attempts" in str(err.value)
    assert isinstance(err.value, ClientError) and isinstance(err.value, ConnectionError)
    assert isinstance(err.value.__cause__, ConnectionRefusedError)  # kept for debugging
    assert len(waits) == 3
    assert_backoff(waits, 0.1)


def test_backoff_is_capped_by_max_wait(waits: list[float]) -> None:
    session = HttpSession(f"http://127.0.0.1:{free_port()}", retries=6, backoff=1.0, max_wait=2.0)
    with pytest.raises(ServerUnreachable):
        session.send("GET", "/healthz")
    assert len(waits) == 6 and max(waits) <= 2.0 and min(waits[2:]) >= 1.0


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_remote_env_on_an_unreachable_server_raises_the_clients_error(waits: list[float], protocol: str) -> None:
    with pytest.raises(ServerUnreachable) as err:
        RemoteEnv(f"http://127.0.0.1:{free_port()}", "CartPole-v1", protocol=protocol, retries=2)
    assert err.value.attempts == 3 and len(waits) == 2


def test_remote_vector_env_on_an_unreachable_server_raises_the_clients_error(waits: list[float]) -> None:
    with pytest.raises(ServerUnreachable):
        RemoteVectorEnv(f"http://127.0.0.1:{free_port()}", "CartPole-v1", 4, retries=1)


def test_a_lost_answer_is_resent_only_when_resend_is_allowed(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=3, backoff=0.01)
    stub.script.extend([Drop(), Drop()])
    assert session.send("POST", "/v2/envs/x/step", b"{}", resend=True).status == 200
    assert len(stub.seen) == 3 and len(waits) == 2
    assert_backoff(waits, 0.01)

    stub.script.append(Drop())
    with pytest.raises(ConnectionFailed) as err:
        session.send("POST", "/v1/envs/x/step/", b"{}", resend=False)  # a /v1 step may have run: never resent
    assert type(err.value) is ConnectionFailed and err.value.attempts == 1
    assert "on the first attempt" in str(err.value)
    assert len(stub.seen) == 4 and len(waits) == 2


def test_an_answer_lost_every_time_raises_connection_failed_after_the_retries(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=2, backoff=0.01)
    stub.script.extend([Drop()] * 3)
    with pytest.raises(ConnectionFailed) as err:
        session.send("POST", "/v2/envs/x/reset", b"{}", resend=True)
    assert not isinstance(err.value, ServerUnreachable)  # it reached the server: it may have run
    assert isinstance(err.value.__cause__, http.client.RemoteDisconnected)
    assert err.value.attempts == 3 and len(stub.seen) == 3 and len(waits) == 2


def test_a_late_answer_raises_response_timeout(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, timeout=0.2, retries=2, backoff=0.01)
    stub.script.append(Drop(after=0.5))
    started = time.monotonic()
    with pytest.raises(ResponseTimeout) as err:
        session.send("POST", "/v2/envs", b"{}", resend=False)
    assert 0.2 <= time.monotonic() - started < 0.5
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, ConnectionFailed)
    assert isinstance(err.value.__cause__, TimeoutError)
    assert err.value.attempts == 1 and waits == []

    stub.script.extend([Drop(after=0.5), Answer(body=b'{"seq": 1}')])  # late once, then in time
    assert session.send("POST", "/v2/envs/x/step", b"{}", resend=True).data == b'{"seq": 1}'
    assert len(waits) == 1


def test_busy_answers_are_retried_after_retry_after_only_when_asked(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=3, backoff=0.01, max_wait=30)
    stub.script.extend([Answer(503, b"{}", {"Retry-After": "2"}), Answer(429, b"{}", {"Retry-After": "600"})])
    assert session.send("POST", "/v2/envs/x/step", b"{}", retry_busy=True).status == 200
    assert waits == [2.0, 30.0]  # Retry-After, capped by max_wait
    assert len(stub.seen) == 3

    stub.script.append(Answer(503, b"{}", {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))
    session.send("GET", "/v2/envs/x", retry_busy=True)
    assert 0.5 * 0.01 <= waits[-1] <= 0.01  # an HTTP-date Retry-After: plain backoff

    stub.script.append(Answer(503, b"{}", {"Retry-After": "1"}))
    assert session.send("GET", "/v2/envs/x").status == 503  # not asked: the caller sees the 503
    assert len(waits) == 3


def test_a_server_that_stays_busy_returns_its_last_answer(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=2)
    stub.script.extend([Answer(503, b'{"error": {"code": "capacity", "message": "full"}}', {"Retry-After": "1"})] * 3)
    reply = session.send("POST", "/v2/envs", b"{}", retry_busy=True)
    assert reply.status == 503 and waits == [1.0, 1.0] and len(stub.seen) == 3
    with pytest.raises(RemoteError) as err:
        reply.checked()
    assert (err.value.status, err.value.code, err.value.message) == (503, "capacity", "full")


@pytest.mark.parametrize(
    ("body", "status", "code", "message", "details"),
    [
        (b'{"error": {"code": "unknown_env", "message": "no such env", "details": {"field": "env_id"}}}',
         404, "unknown_env", "no such env", {"field": "env_id"}),  # /v2
        (b'{"message": "Instance_id abc unknown"}', 400, "", "Instance_id abc unknown", {}),  # /v1, the seed's shape
        (b"<html>Bad Gateway</html>", 502, "", "<html>Bad Gateway</html>", {}),  # a router's page
        (b"", 500, "", "", {}),
    ],
)  # fmt: skip
def test_error_answers_become_remote_errors(
    body: bytes, status: int, code: str, message: str, details: dict[str, Any]
) -> None:
    with pytest.raises(RemoteError) as err:
        Reply(status, {"Content-Type": "application/json"}, body).checked()
    assert (err.value.status, err.value.code, err.value.message, err.value.details) == (status, code, message, details)
    assert isinstance(err.value, ClientError) and isinstance(err.value, RuntimeError)


def test_a_success_is_returned_as_it_is() -> None:
    reply = Reply(201, {"Content-Type": "application/msgpack; charset=binary"}, b"\x80")
    assert reply.checked() is reply and reply.media_type == "application/msgpack"


def test_requests_share_one_keep_alive_connection_under_the_url_prefix(stub: Stub) -> None:
    session = HttpSession(stub.url + "/gyms/", headers={"Accept-Encoding": "gzip"})
    session.send("GET", "/v2/envs/a", headers={"Accept": "application/msgpack"})
    session.send("DELETE", "/v2/envs/a")
    assert [(s.method, s.path) for s in stub.seen] == [("GET", "/gyms/v2/envs/a"), ("DELETE", "/gyms/v2/envs/a")]
    assert stub.seen[0].headers["Accept-Encoding"] == "gzip" and stub.seen[0].headers["Accept"] == "application/msgpack"
    assert stub.seen[0].client_port == stub.seen[1].client_port  # one connection, kept alive


def test_a_closed_session_raises_env_closed_and_sends_nothing(stub: Stub) -> None:
    session = HttpSession(stub.url)
    session.send("GET", "/healthz")
    session.close()
    with pytest.raises(EnvClosed) as err:
        session.send("POST", "/v2/envs/x/step", b"{}", resend=True)
    assert isinstance(err.value, gymnasium.error.ClosedEnvironmentError) and isinstance(err.value, ClientError)
    assert len(stub.seen) == 1


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1", "http://"])
def test_a_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        HttpSession(url)


def test_an_idle_connection_the_server_closed_is_replaced_before_a_request_that_is_never_resent(stub: Stub) -> None:
    """A /v1 step (resend=False) after the server dropped the kept connection (its keep-alive timeout, a restart):
    sent once, on a new connection, and answered, never a lost answer."""
    session = HttpSession(stub.url, retries=0)
    session.send("GET", "/healthz")
    assert len(session._idle) == 1 and session._idle[0].sock is not None
    stub.script.append(Drop())  # the next request on the kept connection: read, then the connection closes
    with pytest.raises(ConnectionFailed):
        session.send("POST", "/v1/envs/x/step/", b"{}", resend=False)
    session.send("GET", "/healthz")  # a new connection
    (kept,) = session._idle
    assert kept.sock is not None
    kept.sock.shutdown(2)  # as if the server had closed it while idle: the client sees EOF on it
    stub.seen.clear()
    assert session.send("POST", "/v1/envs/x/step/", b"{}", resend=False).status == 200
    assert [s.path for s in stub.seen] == ["/v1/envs/x/step/"]


def test_a_gzip_answer_is_read_as_its_content(stub: Stub) -> None:
    import gzip

    stub.script.append(Answer(body=gzip.compress(b'{"big": 1}'), headers={"Content-Encoding": "gzip"}))
    session = HttpSession(stub.url, headers={"Accept-Encoding": "gzip"})
    assert session.send("GET", "/v2/envs/x").data == b'{"big": 1}'
