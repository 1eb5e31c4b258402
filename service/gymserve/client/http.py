"""One keep-alive HTTP connection to a gymserve server, JSON in and out, server errors as exceptions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.util import Retry


class RemoteError(RuntimeError):
    """The server answered with an error; carries its status, message, code and details."""

    def __init__(self, status: int, message: str, code: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.details = details or {}


class HttpSession:
    """A pooled keep-alive connection. Only requests that never reached the server are retried:
    a /v1 step carries no sequence number, so resending one after a lost answer could step twice."""

    def __init__(self, base_url: str, timeout: float = 30.0, connect_retries: int = 3) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], got {base_url!r}")
        self.prefix = parts.path.rstrip("/")
        self.pool = urllib3.connection_from_url(
            base_url,
            maxsize=1,
            block=False,
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            retries=Retry(
                total=connect_retries,
                connect=connect_retries,
                read=0,
                status=0,
                other=0,
                redirect=0,
                backoff_factor=0.05,
            ),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        resp = self.pool.request(method, self.prefix + path, body=data)
        payload = _decode(resp.data)
        if resp.status >= 400:
            if isinstance(payload, dict) and "error" in payload and isinstance(payload["error"], dict):
                payload = payload["error"]
            if not isinstance(payload, dict):
                payload = {"message": resp.data[:200].decode("utf-8", "replace")}
            raise RemoteError(
                resp.status, str(payload.get("message", "")), str(payload.get("code", "")), payload.get("details")
            )
        return payload

    def close(self) -> None:
        self.pool.close()


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
