"""gymserve's gunicorn response: an answer whose body is all there goes out in one write, head included."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.http.wsgi import Response

from gymserve.gunicorn_worker import OneWriteResponse


class Socket:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def respond(
    headers: list[tuple[str, str]], chunks: list[bytes], method: str = "POST", kind: type[Response] = OneWriteResponse
) -> list[bytes]:
    """What a response of `kind` writes to its socket, Date lines left out."""
    sock = Socket()
    req: Any = SimpleNamespace(version=(1, 1), method=method, should_close=lambda: False)
    resp = kind(req, sock, SimpleNamespace(is_ssl=False))
    resp.start_response("200 OK", headers)
    for chunk in chunks:
        resp.write(chunk)
    resp.close()
    return [b"\r\n".join(line for line in w.split(b"\r\n") if not line.startswith(b"Date:")) for w in sock.writes]


def test_a_whole_body_goes_out_with_its_head_in_one_write() -> None:
    writes = respond([("Content-Type", "application/msgpack"), ("Content-Length", "5")], [b"hello"])
    assert len(writes) == 1
    head, body = writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nContent-Length: 5" in head and body == b"hello"
    assert b"Connection: keep-alive" in head


@pytest.mark.parametrize(
    ("headers", "chunks", "method"),
    [
        ([("Content-Length", "10")], [b"hello", b"world"], "POST"),  # a body in pieces: as gunicorn writes it
        ([], [b"hello"], "POST"),  # no length: chunked
        ([("Content-Length", "5")], [b"hello"], "HEAD"),  # no body at all
    ],
)
def test_anything_else_is_written_as_gunicorn_writes_it(
    headers: list[tuple[str, str]], chunks: list[bytes], method: str
) -> None:
    assert respond(headers, chunks, method) == respond(headers, chunks, method, Response)
