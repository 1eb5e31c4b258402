"""The client's exceptions: one base class, so that callers never have to catch the OS's or http.client's errors."""

from __future__ import annotations

from typing import Any

from gymnasium.error import ClosedEnvironmentError


class ClientError(Exception):
    """Base of every error gymserve.client raises: the server refused, could not be reached, or the env is closed."""


class RemoteError(ClientError, RuntimeError):
    """The server answered with an error; carries its status, message, code and details, and whose failure it is
    (`fault`: "client", "env" or "infrastructure") and whether the same request may succeed again (`retryable`).

    An answer without those fields (an older server, a proxy's own page) gets them from its status: 5xx is the
    infrastructure's (429, 502, 503 and 504 retryable), any other the client's.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "",
        details: dict[str, Any] | None = None,
        fault: str | None = None,
        retryable: bool | None = None,
    ):
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.details = details or {}
        self.fault = fault if fault in ("client", "env", "infrastructure") else _fault_of(status)
        self.retryable = retryable if isinstance(retryable, bool) else status in (429, 502, 503, 504)

    @property
    def unavailable(self) -> bool:
        """Whether this is the farm's `503 unavailable` (see `is_unavailable`)."""
        return is_unavailable(self.status, self.code)


def is_unavailable(status: int, code: str) -> bool:
    """A `503` with code `unavailable`: the env is kept but cannot be reached for now (it moves between server
    processes, its server or the router restarts; docs/api-v2.md). The one answer a client's retry window rides."""
    return status == 503 and code == "unavailable"


def _fault_of(status: int) -> str:
    return "infrastructure" if status >= 500 else "client"


class ConnectionFailed(ClientError, ConnectionError):
    """No answer came back: the connection broke or timed out, after `attempts` tries of `method url`.

    A ConnectionError (like requests' own), so `except OSError` code keeps working. Unless it is a
    ServerUnreachable, the request may have reached the server and run there.
    """

    def __init__(self, message: str, *, method: str, url: str, attempts: int) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.attempts = attempts


class ServerUnreachable(ConnectionFailed):
    """No connection could be made (refused, no route, unknown host, connect timeout): the server never saw it."""


class ResponseTimeout(ConnectionFailed, TimeoutError):
    """The request was sent but no answer came within the client's `timeout`; the server may still run it."""


class EnvClosed(ClientError, ClosedEnvironmentError):
    """The env (and its connection) was closed by this client; make a new one to go on."""
