"""A scriptable in-process HTTP server and a fake clock for the client's unit tests.

Importable as `fake_server` from the tests of this folder (pytest puts a test file's folder on sys.path).
The server answers from its `script` in order; once that is empty, from its `backend` (a Flask test client
of a real gymserve app) if it has one, else 200 {"ok": true}.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servers import free_port

MOVING = b'{"error": {"code": "unavailable", "message": "the env is moving", "details": {"reason": "moving"}}}'


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def moving() -> Answer:
    """What a server answers while the env moves between its processes: 503 unavailable, Retry-After: 1."""
    return Answer(503, MOVING, {"Content-Type": "application/json", "Retry-After": "1"})


@dataclass
class Drop:
    """Read the request, then close the connection without a word (the answer is lost); `after` seconds late."""

    after: float = 0.0


@dataclass
class Lose:
    """Let the backend run the request, then close the connection without its answer."""


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    client_port: int


class Stub(ThreadingHTTPServer):
    """Answers requests from `script` in order (then from `backend`, else 200 {"ok": true}); records each one."""

    daemon_threads = True

    def __init__(self, port: int | None = None, backend: Any = None) -> None:
        super().__init__(("127.0.0.1", port or free_port()), _Handler)
        self.script: deque[Answer | Drop | Lose] = deque()
        self.seen: list[Seen] = []
        self.backend = backend

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a late answer closes its socket: not the test's failure

    def paths(self, part: str) -> list[str]:
        return [s.path for s in self.seen if part in s.path]

    def ask_backend(self, seen: Seen) -> Answer:
        if self.backend is None:
            return Answer()
        headers = {k: v for k, v in seen.headers.items() if k.lower() not in ("host", "content-length")}
        resp = self.backend.open(seen.path, method=seen.method, data=seen.body, headers=headers)
        keep = ("Content-Type", "Content-Encoding", "Retry-After", "Location")
        return Answer(resp.status_code, resp.get_data(), {k: v for k, v in resp.headers.items() if k in keep})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gymserve under gunicorn
    server: Stub

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(self.command, self.path, body, dict(self.headers), self.client_address[1])
        self.server.seen.append(seen)
        action = self.server.script.popleft() if self.server.script else self.server.ask_backend(seen)
        if isinstance(action, (Drop, Lose)):
            if isinstance(action, Lose):
                self.server.ask_backend(seen)
            else:
                time.sleep(action.after)
            self.close_connection = True
            return
        self.send_response(action.status)
        for name, value in action.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(action.body)))
        self.end_headers()
        self.wfile.write(action.body)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Clock:
    """The session's clock and sleep in a test: a wait is recorded, not slept, and moves the clock on by itself;
    `at(t, action)` runs `action` once the clock reaches t (a server that comes back, say)."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0
        self._due: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for due in [d for d in self._due if d[0] <= self.now]:
            self._due.remove(due)
            due[1]()

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._due.append((when, action))
