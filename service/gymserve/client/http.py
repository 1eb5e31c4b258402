"""The client's HTTP session: one keep-alive connection, bounded retries with backoff, server errors as exceptions."""

from __future__ import annotations

import gzip
import http.client
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from time import sleep
from urllib.parse import urlsplit

import orjson

from .connection import Closed, KeptConnection, send
from .errors import ConnectionFailed, EnvClosed, RemoteError, ResponseTimeout, ServerUnreachable

BUSY_STATUSES = frozenset({429, 503})
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

    def checked(self) -> Reply:
        """This reply, or RemoteError if it is an error (either API's error shape, or none at all)."""
        if self.status < 400:
            return self
        try:
            payload = orjson.loads(self.data)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            payload = payload["error"]  # /v2: {"error": {code, message, details}}
        if not isinstance(payload, dict):
            payload = {"message": self.data[:200].decode("utf-8", "replace")}
        raise RemoteError(
            self.status,
            str(payload.get("message", "")),
            str(payload.get("code", "")),
            payload.get("details"),
            payload.get("fault"),
            payload.get("retryable"),
        )


class HttpSession:
    """One keep-alive connection to one server (connection.KeptConnection), with retries and the client's errors.

    Every request is retried, with exponential backoff, when its connection could not be made (it
    never reached the server). `send(..., resend=True)` also retries when the answer was lost or
    did not come in time, for requests that are safe to repeat; `retry_busy=True` also retries 429
    and 503 after their Retry-After. A /v1 step is neither: it carries no sequence number, so
    resending it could step twice. Failures surface as the client's own errors (gymserve.client.errors);
    the OS's or http.client's error is kept as their `__cause__`. An idle connection that the server closed
    is noticed before it is used (as urllib3 does), so a kept connection never costs a request.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        retries: int = 4,
        headers: Mapping[str, str] | None = None,
        backoff: float = 0.05,
        max_wait: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
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
    ) -> Reply:
        headers = {**self.headers, **(headers or {})}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                conn = self._kept.take()
            except Closed as err:
                raise EnvClosed(f"{method} {path}: this client was closed; make a new one") from err
            except OSError as err:  # refused, unresolvable, or no answer to the connect: the request never left
                if last:
                    raise self._failed(ServerUnreachable, "could not connect", method, path, attempt, err) from err
                wait = self._backoff(attempt)
            else:
                try:
                    reply = self._exchange(conn, method, path, body, headers)
                except (OSError, http.client.HTTPException) as err:  # sent: resend only what is safe to repeat
                    if last or not resend:
                        kind = ResponseTimeout if isinstance(err, TimeoutError) else ConnectionFailed
                        raise self._failed(kind, "no answer", method, path, attempt, err) from err
                    wait = self._backoff(attempt)
                else:
                    if not (retry_busy and reply.status in BUSY_STATUSES) or last:
                        return reply
                    wait = self._retry_after(reply.headers.get("Retry-After"), attempt)
            sleep(wait)
        raise AssertionError("not reached: the last attempt returns or raises")

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

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _retry_after(self, value: str | None, attempt: int) -> float:
        if value is not None and value.strip().isdigit():
            return min(self.max_wait, float(value))
        return self._backoff(attempt)

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
