"""The clients' retry window (issue 22, section 3): the farm's own operations (an env moving between server
processes, a server or router restart) are ridden, with the same seq and instance_id, and nothing else is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import orjson
import pytest
from fake_server import Answer, Clock, Drop, Lose, Stub, moving

from conftest import serve
from gymserve.client import (
    ConnectionFailed,
    RemoteEnv,
    RemoteError,
    RemoteVectorEnv,
    ResponseTimeout,
    ServerUnreachable,
)
from gymserve.client.http import WINDOW_MAX_BACKOFF, HttpSession
from servers import free_port

STEP = "/v2/envs/x/step"


def error(status: int, code: str) -> Answer:
    return Answer(status, orjson.dumps({"error": {"code": code, "message": code, "details": {}}}))


def ride(session: HttpSession, body: bytes = b'{"seq": 7}', **flags: bool) -> Any:
    """A step as V2Protocol sends it: resent when its answer is lost, busy answers retried, the window ridden."""
    return session.send("POST", STEP, body, **{"resend": True, "retry_busy": True, "ride": True, **flags})


@pytest.fixture
def backend_stub(client: Any) -> Iterator[Stub]:
    """A stub in front of a real gymserve app (the `client` fixture): what is not scripted, the app answers."""
    server = Stub(backend=client)
    stop = serve(server)
    yield server
    stop()


def test_a_refused_connection_is_ridden_until_the_server_is_back(clock: Clock) -> None:
    port = free_port()
    session = HttpSession(f"http://127.0.0.1:{port}", retries=2, retry_window=60)
    back: list[Stub] = []
    stops: list[Any] = []

    def restart() -> None:  # a Stub listens once made: only now does the port answer
        back.append(Stub(port))
        stops.append(serve(back[0]))

    clock.at(20, restart)  # refused for 20 s, then answered
    try:
        assert ride(session).status == 200
    finally:
        for stop in stops:
            stop()
    assert 20 <= clock.now < 20 + WINDOW_MAX_BACKOFF and len(clock.waits) > 3
    assert max(clock.waits) <= WINDOW_MAX_BACKOFF  # capped backoff: the server is found soon after it is back
    assert back[0].paths("step") == [STEP]


def test_503_unavailable_is_ridden_after_retry_after_with_the_same_request(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=2, retry_window=60)
    stub.script.extend([moving()] * 8)
    assert ride(session).status == 200
    assert waits == [1.0] * 8
    assert len(stub.seen) == 9 and {s.body for s in stub.seen} == {b'{"seq": 7}'}


def test_an_answer_cut_off_is_ridden_only_when_the_request_may_be_resent(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=1, retry_window=60)
    stub.script.extend([Drop()] * 6)
    assert ride(session).status == 200 and len(stub.seen) == 7

    stub.script.append(Drop())
    with pytest.raises(ConnectionFailed):
        ride(session, resend=False)  # a fork, a /v1 step: it may have run, so it is never resent
    assert len(stub.seen) == 8


@pytest.mark.parametrize("failure", ["refused", "unavailable"])
def test_when_the_window_runs_out_the_last_error_is_raised(clock: Clock, failure: str) -> None:
    stub = Stub()
    stop = serve(stub)
    try:
        url = f"http://127.0.0.1:{free_port()}" if failure == "refused" else stub.url
        session = HttpSession(url, retries=1, retry_window=10)
        stub.script.extend([moving()] * 100)
        if failure == "refused":
            with pytest.raises(ServerUnreachable) as err:
                ride(session)
            assert err.value.attempts == len(clock.waits) + 1
        else:
            with pytest.raises(RemoteError) as raised:
                ride(session).checked()
            assert raised.value.unavailable and raised.value.details == {"reason": "moving"}
            assert len(stub.seen) == len(clock.waits) + 1 == 11  # ten waits of Retry-After: 1, the last cut short
    finally:
        stop()
    assert clock.now == pytest.approx(10, abs=0.3)  # the window counts from the first failure


def test_each_call_has_a_window_of_its_own(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=0, retry_window=5)
    stub.script.extend([moving()] * 4)
    assert ride(session).status == 200
    stub.script.extend([moving()] * 4)
    assert ride(session).status == 200  # not what the first call left of its window
    assert waits == [1.0] * 8


@pytest.mark.parametrize(
    "answer",
    [
        error(410, "instance_lost"),
        error(404, "unknown_instance"),
        error(422, "invalid_value"),
        error(409, "sequence_conflict"),
        error(504, "step_timeout"),  # the env is at fault: the same step would hang again
    ],
    ids=lambda a: f"{a.status}",
)
def test_final_answers_are_never_retried(stub: Stub, waits: list[float], answer: Answer) -> None:
    session = HttpSession(stub.url, retries=3, retry_window=60)
    stub.script.append(answer)
    assert ride(session).status == answer.status
    assert len(stub.seen) == 1 and waits == []


@pytest.mark.parametrize(
    "answer", [error(503, "capacity_exceeded"), error(503, "draining"), error(429, "rate_limited")]
)
def test_other_busy_answers_get_the_retries_only(stub: Stub, waits: list[float], answer: Answer) -> None:
    session = HttpSession(stub.url, retries=2, retry_window=60)
    stub.script.extend([answer] * 10)
    assert ride(session).status == answer.status and len(stub.seen) == 3


def test_a_timeout_gets_the_retries_only(stub: Stub, waits: list[float]) -> None:
    """The server may still be running the step: that is a slow env, not the farm's operations."""
    session = HttpSession(stub.url, timeout=0.1, retries=1, retry_window=60)
    stub.script.extend([Drop(after=0.3)] * 3)
    with pytest.raises(ResponseTimeout) as err:
        ride(session)
    assert err.value.attempts == 2


def test_a_window_of_zero_is_the_retries_alone(stub: Stub, waits: list[float]) -> None:
    session = HttpSession(stub.url, retries=2, retry_window=0)
    stub.script.extend([moving()] * 5)
    assert ride(session).status == 503 and len(stub.seen) == 3
    with pytest.raises(ServerUnreachable) as err:
        ride(HttpSession(f"http://127.0.0.1:{free_port()}", retries=2, retry_window=0))
    assert err.value.attempts == 3


def test_a_request_not_sent_to_ride_gets_the_retries_alone(stub: Stub, waits: list[float]) -> None:
    """A create, a keepalive: a wrong URL or a farm that is down fails within the retries, not after two minutes."""
    session = HttpSession(stub.url, retries=2, retry_window=60)
    stub.script.extend([moving()] * 5)
    assert ride(session, ride=False).status == 503 and len(stub.seen) == 3
    with pytest.raises(ServerUnreachable) as err:
        RemoteEnv(f"http://127.0.0.1:{free_port()}", "CartPole-v1", retries=2)  # the default window: 120 s
    assert err.value.attempts == 3


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_window"):
        HttpSession("http://127.0.0.1:1", retry_window=-1)


def outage() -> list[Answer | Drop | Lose]:
    """A move of the env, as a client sees it: the step runs and its answer is lost with the connection, the
    resend finds the env moving for a while, then the new process answers (the kept answer of that seq)."""
    return [Lose(), *[moving()] * 6]


def steps_sent(stub: Stub) -> list[bytes]:
    return [s.body for s in stub.seen if s.path.endswith("/step")]


def test_a_remote_env_steps_through_a_move_once_per_step(backend_stub: Stub, client: Any, waits: list[float]) -> None:
    remote = RemoteEnv(backend_stub.url, "CartPole-v1", retries=1, keepalive=False)
    local = gym.make("CartPole-v1")
    instance_id = remote.instance_id
    assert np.array_equal(remote.reset(seed=3)[0], local.reset(seed=3)[0])
    for n in range(10):
        if n == 4:
            backend_stub.script.extend(outage())
        got, want = remote.step(n % 2), local.step(n % 2)
        assert got[0].tobytes() == want[0].tobytes() and got[1:4] == want[1:4]
    assert remote.instance_id == instance_id and waits[-6:] == [1.0] * 6
    sent = steps_sent(backend_stub)
    assert len(sent) == 10 + 7 and len(set(sent[4:12])) == 1  # the fifth step, resent as it was, seq and all
    state = client.get(f"/v2/envs/{instance_id}").get_json()
    assert (state["steps"], state["seq"]) == (10, 11)  # the env stepped once per step of the client
    remote.close()


def test_a_remote_vector_env_steps_through_a_move_once_per_step(
    backend_stub: Stub, client: Any, waits: list[float]
) -> None:
    remote = RemoteVectorEnv(backend_stub.url, "CartPole-v1", 3, retries=0, keepalive=False)
    local = gym.make_vec("CartPole-v1", 3, vectorization_mode="sync")
    instance_id = remote.instance_id
    assert np.array_equal(remote.reset(seed=5)[0], local.reset(seed=5)[0])
    for n in range(6):
        if n == 2:
            backend_stub.script.extend(outage())
        actions = np.array([n % 2, 1, 0])
        got, want = remote.step(actions), local.step(actions)
        for a, b in zip(got[:4], want[:4], strict=True):
            assert np.array_equal(a, b)
    assert remote.instance_id == instance_id
    state = client.get(f"/v2/envs/{instance_id}").get_json()
    assert (state["steps"], state["seq"]) == (18, 7)
    remote.close()
