"""The client's HTTP session: one keep-alive connection, bounded retries with backoff, server errors as exceptions."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

BUSY_STATUSES = frozenset({429, 503})


class RemoteError(RuntimeError):
    """The server answered with an error; carries its status, message, code and details."""

    def __init__(self, status: int, message: str, code: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.details = details or {}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
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
            self.status, str(payload.get("message", "")), str(payload.get("code", "")), payload.get("details")
        )


class HttpSession:
    """A pooled keep-alive connection to one server.

    Every request is retried, with exponential backoff, when its connection could not be made (it
    never reached the server). `send(..., resend=True)` also retries when the answer was lost, for
    requests that are safe to repeat; `retry_busy=True` also retries 429 and 503 after their
    Retry-After. A /v1 step is neither: it carries no sequence number, so resending it could step twice.
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
        self.prefix = parts.path.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.headers = dict(headers or {})
        self.pool = urllib3.connection_from_url(
            base_url, maxsize=1, block=False, timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
        )

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
                resp = self.pool.urlopen(
                    method, self.prefix + path, body=body, headers=headers, retries=False, redirect=False
                )
            except (NewConnectionError, ConnectTimeoutError):
                if last:
                    raise
                wait = self._backoff(attempt)
            except HTTPError:
                if last or not resend:
                    raise
                wait = self._backoff(attempt)
            else:
                if not (retry_busy and resp.status in BUSY_STATUSES) or last:
                    return Reply(resp.status, resp.headers, resp.data)
                wait = self._retry_after(resp.headers.get("Retry-After"), attempt)
            time.sleep(wait)
        raise AssertionError("not reached: the last attempt returns or raises")

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _retry_after(self, value: str | None, attempt: int) -> float:
        if value is not None and value.strip().isdigit():
            return min(self.max_wait, float(value))
        return self._backoff(attempt)

    def close(self) -> None:
        self.pool.close()
