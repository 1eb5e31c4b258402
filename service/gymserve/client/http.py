"""The client's HTTP session: one keep-alive connection, bounded retries with backoff, a retry window for the
farm's own operations, server errors as exceptions."""

from __future__ import annotations

import gzip
import http.client
import itertools
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from .connection import Closed, KeptConnection, send
from .errors import ConnectionFailed, EnvClosed, RemoteError, ResponseTimeout, ServerUnreachable, is_unavailable

BUSY_STATUSES = frozenset({429, 503})
# Longer than the server's deadline on an env call (GYMSERVE_STEP_TIMEOUT_SECONDS, 30 s by default): a stuck call
# ends in the server's 504 step_timeout, which is never resent, not in a client timeout and a resend.
DEFAULT_TIMEOUT = 60.0
# The clients' default retry_window (seconds): long enough to ride a rolling restart of a replica or the router.
RETRY_WINDOW = 120.0
# Within a retry window backoff grows to this at most (seconds; Retry-After is honoured as sent, up to max_wait),
# so that a farm back from a restart is found within seconds, at a few dozen attempts over a whole window.
WINDOW_MAX_BACKOFF = 2.0
# Failures of a sent request that a farm's own operations cause: a connection reset, or closed before the answer.
CUT_OFF = (ConnectionError, http.client.IncompleteRead)
API_KEY_ENV = "GYMSERVE_API_KEY"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header of a farm with tenants: `api_key`, else $GYMSERVE_API_KEY; none when neither is set."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str] | http.client.HTTPMessage  # http.client's answer headers (case-insensitive)
    data: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def unavailable(self) -> bool:
        """Whether this is the farm's `503 unavailable`, which a client's retry window rides."""
        return self.status == 503 and is_unavailable(self.status, str(self.error().get("code", "")))

    def error(self) -> dict[str, Any]:
        """The fields of an error answer in either API's shape; {"message": its start} for an answer of no shape."""
        try:
            payload = orjson.loads(self.data)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            payload = payload["error"]  # /v2: {"error": {code, message, details}}
        if not isinstance(payload, dict):
            payload = {"message": self.data[:200].decode("utf-8", "replace")}
        return payload

    def checked(self) -> Reply:
        """This reply, or RemoteError if it is an error (either API's error shape, or none at all)."""
        if self.status < 400:
            return self
        payload = self.error()
        raise RemoteError(
            self.status,
            str(payload.get("message", "")),
            str(payload.get("code", "")),
            payload.get("details"),
            payload.get("fault"),
            payload.get("retryable"),
        )


class Failure(NamedTuple):
    """An attempt that brought no answer to return: what to raise (or, busy, the reply to return) if it is the
    last, whether it may be sent again, whether it rides the retry window, and the wait its Retry-After asked."""

    error: ConnectionFailed | Reply
    cause: BaseException | None
    retry: bool
    rides: bool
    retry_after: float | None


class HttpSession:
    """One keep-alive connection to one server (connection.KeptConnection), with retries and the client's errors.

    Every request is retried, with exponential backoff, when its connection could not be made (it
    never reached the server). `send(..., resend=True)` also retries when the answer was lost or
    did not come in time, for requests that are safe to repeat; `retry_busy=True` also retries 429
    and 503 after their Retry-After. A /v1 step is neither: it carries no sequence number, so
    resending it could step twice. Those are `retries` more attempts at most.

    `send(..., ride=True)` (the calls on an env the client holds) goes on after them, while less than
    `retry_window` seconds have passed since the call's first failure, for the failures a farm's own
    operations cause: a refused connection, a connection reset or closed before the whole answer
    (when `resend`), a `503 unavailable` (when `retry_busy`). Its waits honour Retry-After and
    otherwise back off exponentially up to WINDOW_MAX_BACKOFF; the last failure is what the caller
    gets. A timeout, any other error answer and any other failure is never ridden: `retry_window=0`
    is the plain `retries` above.

    Failures surface as the client's own errors (gymserve.client.errors); the OS's or http.client's error
    is kept as their `__cause__`. An idle connection that the server closed is noticed before it is used
    (as urllib3 does), so a kept connection never costs a request.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 4,
        headers: Mapping[str, str] | None = None,
        backoff: float = 0.05,
        max_wait: float = 30.0,
        retry_window: float = 0.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], got {base_url!r}")
        if not retry_window >= 0:
            raise ValueError(f"retry_window must be 0 or more seconds, got {retry_window!r}")
        self.base_url = base_url.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.retry_window = retry_window
        self.headers = dict(headers or {})
        self.timeout = timeout
        # close() may come from another thread: the helper is thread-safe.
        self._kept = KeptConnection(
            parts.hostname, parts.port, timeout=timeout, connect_timeout=min(timeout, 10.0), tls=parts.scheme == "https"
        )

    @property
    def closed(self) -> bool:
        return self._kept.closed

    @property
    def _idle(self) -> list[http.client.HTTPConnection]:
        """The kept connection, when there is one (a list of at most one)."""
        return self._kept.idle

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        resend: bool = False,
        retry_busy: bool = False,
        ride: bool = False,
    ) -> Reply:
        """The answer to one request (a busy one when the retries ran out); the same bytes on every attempt."""
        headers = {**self.headers, **(headers or {})}
        window = self.retry_window if ride else 0.0
        first_failure = 0.0
        for attempt in itertools.count():
            outcome = self._attempt(method, path, body, headers, attempt, resend, retry_busy)
            if isinstance(outcome, Reply):
                return outcome
            now = monotonic()
            if attempt == 0:
                first_failure = now
            left = first_failure + window - now if outcome.rides else 0.0
            extra = attempt >= self.retries  # past the retries: only the window may go on
            if not outcome.retry or (extra and left <= 0):
                if isinstance(outcome.error, Reply):
                    return outcome.error
                raise outcome.error from outcome.cause
            wait = outcome.retry_after
            if wait is None:
                wait = self._backoff(attempt, min(self.max_wait, WINDOW_MAX_BACKOFF) if extra else self.max_wait)
            sleep(min(wait, left) if extra else wait)
        raise AssertionError("not reached: the last attempt returns or raises")

    def _attempt(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        attempt: int,
        resend: bool,
        retry_busy: bool,
    ) -> Reply | Failure:
        """One try of a request: the reply to return, or how it failed."""
        try:
            conn = self._kept.take()
        except Closed as err:
            raise EnvClosed(f"{method} {path}: this client was closed; make a new one") from err
        except OSError as err:  # refused, unresolvable, or no answer to the connect: the request never left
            unreachable = self._failed(ServerUnreachable, "could not connect", method, path, attempt, err)
            return Failure(unreachable, err, True, isinstance(err, ConnectionError), None)
        try:
            reply = self._exchange(conn, method, path, body, headers)
        except (OSError, http.client.HTTPException) as err:  # sent: resend only what is safe to repeat
            kind = ResponseTimeout if isinstance(err, TimeoutError) else ConnectionFailed
            lost = self._failed(kind, "no answer", method, path, attempt, err)
            return Failure(lost, err, resend, resend and isinstance(err, CUT_OFF), None)
        if retry_busy and reply.status in BUSY_STATUSES:
            return Failure(reply, None, True, reply.unavailable, self._retry_after(reply.headers.get("Retry-After")))
        return reply

    def _exchange(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        resp, data = send(conn, method, self.prefix + path, body, headers)
        if resp.getheader("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip"):
            data = gzip.decompress(data)
        self._kept.keep(conn, resp)
        return Reply(resp.status, resp.headers, data)

    def _failed(
        self, kind: type[ConnectionFailed], what: str, method: str, path: str, attempt: int, err: BaseException
    ) -> ConnectionFailed:
        url = self.base_url + path
        tries = f"after {attempt + 1} attempts" if attempt else "on the first attempt"
        return kind(f"{method} {url}: {what} {tries} ({_reason(err)})", method=method, url=url, attempts=attempt + 1)

    def _backoff(self, attempt: int, cap: float) -> float:
        return min(cap, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _retry_after(self, value: str | None) -> float | None:
        """Retry-After's seconds (capped by max_wait), or None when it is absent or an HTTP-date."""
        return min(self.max_wait, float(value)) if value is not None and value.strip().isdigit() else None

    def close(self) -> None:
        self._kept.close()


def _reason(err: BaseException) -> str:
    """The OS's words for a network error ("Connection refused"), else the error's own."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text
