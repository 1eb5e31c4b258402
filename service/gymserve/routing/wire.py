"""The frames that carry a forwarded request and its answer between two workers of one replica.

A message is two length-prefixed parts: a small JSON object (request: method, path, query,
headers; answer: status, headers) and the raw body. No HTTP parsing on either side of the hop:
the owner turns the request into a WSGI environ and calls the app directly.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import orjson

_LENGTH = struct.Struct("!I")


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def write_message(out: Any, meta: dict[str, Any], body: bytes) -> None:
    """Send one message on a socket (`sendall`) or a buffered file (`write`)."""
    head = orjson.dumps(meta)
    data = b"".join((_LENGTH.pack(len(head)), head, _LENGTH.pack(len(body)), body))
    if hasattr(out, "sendall"):
        out.sendall(data)
    else:
        out.write(data)
        out.flush()


def _read_part(stream: Readable) -> bytes | None:
    prefix = stream.read(_LENGTH.size)
    if not prefix:
        return None
    if len(prefix) < _LENGTH.size:  # part of a length: the peer went away while sending, not between messages
        raise ConnectionError("peer closed the connection in the middle of a message")
    (size,) = _LENGTH.unpack(prefix)
    data = stream.read(size)
    if len(data) < size:
        raise ConnectionError("peer closed the connection in the middle of a message")
    return data


def read_message(stream: Readable) -> tuple[dict[str, Any], bytes] | None:
    """The next message, or None when the peer closed the connection between messages."""
    head = _read_part(stream)
    if head is None:
        return None
    body = _read_part(stream)
    if body is None:
        raise ConnectionError("peer closed the connection in the middle of a message")
    return orjson.loads(head), body
