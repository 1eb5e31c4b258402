"""The stream loop (gymserve.stream_loop) with real sockets: one thread serves every stream whose bytes arrived, a
stream leaves it when its turn says so, and a retired loop gives every other stream away at once."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gymserve.stream_loop import StreamLoop

WAIT = 10.0


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    peer: socket.socket
    name: str
    read: list[bytes] = field(default_factory=list)


class Harness:
    """Streams (socket pairs) and a loop whose turns read what arrived and say what the test told them to."""

    def __init__(self) -> None:
        self.turns: queue.Queue[tuple[str, str]] = queue.Queue()  # (stream, thread name)
        self.leave: dict[str, str] = {}  # stream -> "close" once its next turn should end it
        self.block: dict[str, threading.Event] = {}  # stream -> its next turn waits for this
        self.after: queue.Queue[str] = queue.Queue()
        self.handed: queue.Queue[str] = queue.Queue()
        self.conns: list[Conn] = []
        self.loop = StreamLoop(self.serve, self.expire, lambda conn: self.handed.put(conn.name)).start()

    def stream(self, name: str) -> Conn:
        a, b = socket.socketpair()
        a.setblocking(False)
        conn = Conn(a, b, name)
        self.conns.append(conn)
        self.loop.add(conn)
        return conn

    def serve(self, conn: Conn) -> Any:
        try:
            conn.read.append(conn.sock.recv(4096))
        except BlockingIOError:
            return None
        self.turns.put((conn.name, threading.current_thread().name))
        if conn.name.startswith("bug"):
            raise RuntimeError("a bug in a turn")
        gate = self.block.pop(conn.name, None)
        if gate is not None:
            gate.wait(WAIT)
        if self.leave.get(conn.name):
            return lambda: self.after.put(conn.name)
        return None

    def expire(self, conn: Conn, now: float) -> Any:
        return None

    def close(self) -> None:
        self.loop.retire()
        for conn in self.conns:
            conn.sock.close()
            conn.peer.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


def test_every_streams_bytes_are_served_on_the_loops_own_thread(harness: Harness) -> None:
    streams = [harness.stream(f"s{i}") for i in range(5)]
    for conn in streams:
        conn.peer.send(b"step")
    served = {harness.turns.get(timeout=WAIT) for _ in streams}
    assert served == {(f"s{i}", "gymserve-streams") for i in range(5)}
    assert all(conn.read == [b"step"] for conn in streams)


def test_a_stream_that_leaves_is_out_of_the_selector_before_what_follows_runs(harness: Harness) -> None:
    gone = harness.stream("gone")
    harness.leave["gone"] = "close"
    gone.peer.send(b"bye")
    assert harness.after.get(timeout=WAIT) == "gone"
    assert gone not in harness.loop.conns
    gone.peer.send(b"more")  # no longer the loop's: nothing serves it
    stays = harness.stream("stays")
    stays.peer.send(b"step")
    assert harness.turns.get(timeout=WAIT) == ("gone", "gymserve-streams")
    assert harness.turns.get(timeout=WAIT) == ("stays", "gymserve-streams")
    assert gone.read == [b"bye"]


def test_a_retired_loop_gives_away_every_stream_but_the_one_it_serves_and_hands_that_one_over_after(
    harness: Harness,
) -> None:
    stuck, other = harness.stream("stuck"), harness.stream("other")
    gate = harness.block["stuck"] = threading.Event()
    stuck.peer.send(b"slow call")
    assert harness.turns.get(timeout=WAIT)[0] == "stuck"
    moving = harness.loop.retire()
    assert moving == [other]  # a new loop takes it now, while the stuck call runs on
    assert harness.handed.empty()
    gate.set()  # the call ends: the old loop hands its stream over and stops
    assert harness.handed.get(timeout=WAIT) == "stuck"
    harness.loop.thread.join(WAIT)
    assert not harness.loop.thread.is_alive()
    assert stuck not in harness.loop.conns


def test_a_turn_that_fails_is_logged_and_the_loop_serves_on(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    buggy = harness.stream("bug")
    buggy.peer.send(b"x")
    assert harness.turns.get(timeout=WAIT) == ("bug", "gymserve-streams")
    fine = harness.stream("fine")
    fine.peer.send(b"step")
    while (turn := harness.turns.get(timeout=WAIT))[0] != "fine":
        pass
    assert turn == ("fine", "gymserve-streams") and harness.loop.thread.is_alive()
    assert "a pass of the stream loop failed" in caplog.text
