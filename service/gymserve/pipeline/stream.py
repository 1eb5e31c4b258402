"""The step stream: `GET /v2/envs/{id}/stream` (and `GET /v2/stream` for batches) upgraded to a WebSocket.

One more front for the same routes. Each message is a map `{"op": ..., <the HTTP body's fields>}`; it runs as the
HTTP request it stands for (POST .../reset, POST .../step, GET .../render, DELETE ..., POST /v2/batch/step) through
the whole WSGI app, so decoding, `seq` and its resend digest, errors, tenancy, forwarding, moves, deadlines and
metrics are the HTTP routes' own code. The answer is that request's body (an error's `{"error": {...}}` too), in a
frame of the request's kind: binary for msgpack, text for JSON. Framing is the `websockets` library's (RFC 6455: its
handshake, its frame parser and serializer, masking in C); this module knows no socket: the gunicorn worker feeds it
bytes and sends what it returns (gunicorn_worker.py).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from ..codec import values
from ..errors import BadRequest, GymServeError, InvalidValue, Reply, error_body
from ..routing.forward import LATE_ANSWER

# The stream routes, and what an upgrade request for one looks like in its head (the worker looks before a parse).
ENV_STREAM = re.compile(r"/v2/envs/([^/]{1,200})/stream")
BATCH_STREAM = "/v2/stream"
_UPGRADE_LINE = re.compile(rb"GET /v2/(?:envs/[^/ ?]{1,200}/)?stream(?:\?[^ ]*)? HTTP/1\.1\r\n")
_UPGRADE_HEADER = re.compile(rb"\r\nupgrade:[ \t]*websocket[ \t]*\r\n", re.IGNORECASE)
MOVED = 1012  # "service restart": the env moved (a drain); reconnect and resend what was not answered
# A stream's own message about a request: the route and method each op stands for.
_ENV_OPS = {
    "reset": ("POST", "/reset"),
    "step": ("POST", "/step"),
    "render": ("GET", "/render"),
    "close": ("DELETE", ""),
}
MAX_REASON = 120  # a close frame's reason, in bytes (a control frame carries at most 125, the code's 2 among them)
_HANDSHAKE_LOG = logging.getLogger(__name__ + ".handshake")  # the library's "connection open" for every stream: not
_HANDSHAKE_LOG.setLevel(logging.WARNING)  # worth a line of the worker's log each
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
HOP_HEADERS = ("HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION")

App = Callable[[dict[str, Any], Callable[..., Any]], Any]
# The front controller's way to a reset or step of an env its worker holds (Front.stream_message): the answer, or
# None when the message must go through the whole app instead.
Direct = Callable[[dict[str, Any], str, str, bytes, str], Reply | None]


def is_upgrade(head: bytes) -> bool:
    """Whether a request head asks to upgrade one of the stream routes to a WebSocket."""
    return _UPGRADE_LINE.match(head) is not None and _UPGRADE_HEADER.search(head) is not None


@dataclass
class Limits:
    max_bytes: int  # a message's largest size (GYMSERVE_MAX_BODY_BYTES): past it, close 1009
    pings_per_second: int  # past it, close 1008
    max_in_flight: int = 64  # answers made before they are sent (GYMSERVE_STREAM_MAX_IN_FLIGHT)
    max_unsent_bytes: int = 4 * 1024 * 1024  # bytes of answers made before they are sent (..._MAX_UNSENT_BYTES)


@dataclass
class Session:
    """One upgraded connection: bytes in, frames out. Not thread-safe: the worker runs one pass at a time."""

    app: App
    environ: dict[str, Any]  # the upgrade request's, each message's is made from it
    instance_id: str | None  # the env of /v2/envs/{id}/stream; None on /v2/stream (batches)
    limits: Limits
    closed: bool = False  # a close frame went out or came in, or the TCP side ended: nothing more is read
    partial: bytearray | None = None  # a message still arriving, since when, and whether it is binary
    partial_since: float = 0.0
    partial_binary: bool = True
    pings: list[float] = field(default_factory=list)
    # How the deadline watchdog's answer to a stuck call reaches the client: the worker sends these bytes itself.
    send_late: Callable[[bytes], None] | None = None
    binary: bool = True  # the kind of frame of the message running now
    unsent: bytearray = field(default_factory=bytearray)  # answers made in this pass, not yet given to the worker
    direct: Direct | None = None  # resets and steps of the worker's own envs, without a request made around them
    # On the worker's stream loop (stream_loop.py) only direct messages run: the first that needs the whole app (a
    # sibling's env, a render, a close, a batch) is held, `needs_thread` is set, and a pool thread runs it next.
    only_direct: bool = False
    held: tuple[bytes, bool] | None = None
    needs_thread: bool = False
    reader: StreamReader = field(default_factory=StreamReader)  # bytes received, not yet parsed into frames
    frames: deque[Frame] = field(default_factory=deque)  # frames parsed, not yet answered (at most a recv's worth)
    failed: tuple[int, str] | None = None  # what the parser found wrong: the close that ends the stream after the
    # frames before it are answered

    def __post_init__(self) -> None:
        # What every message's request is made from: the upgrade's, without its hop headers and compression (a
        # frame is never gzipped), and with the stream's own way for the watchdog to answer a stuck call.
        base = {k: v for k, v in self.environ.items() if k not in HOP_HEADERS}
        base.pop("HTTP_ACCEPT_ENCODING", None)
        base.pop("gunicorn.socket", None)
        base[LATE_ANSWER] = self._answer_late
        self.environ = base
        self.parser = self._parse()
        next(self.parser)

    def accept(self, head: bytes) -> bytes:
        """The 101 for the upgrade request `head` (already allowed by the app); BadRequest for a request that is not
        a valid WebSocket upgrade (its key or version), naming what is wrong."""
        handshake = ServerProtocol(logger=_HANDSHAKE_LOG)
        handshake.receive_data(head)
        request = next(iter(handshake.events_received()), None)
        if not isinstance(request, Request):
            raise BadRequest("not a WebSocket upgrade request", details={"field": "headers"})
        response = handshake.accept(request)
        if response.status_code != 101:
            why = (response.body or b"").decode("utf-8", "replace").strip().splitlines()[0]
            raise BadRequest(why.removeprefix("Failed to open a WebSocket connection: "), details={"field": "headers"})
        handshake.send_response(response)
        return b"".join(handshake.data_to_send())

    def receive(self, data: bytes | None) -> Iterator[bytes]:
        """What to send for `data` (b"" when the peer closed the TCP side; None: nothing new, only what is held or
        already buffered): answers in order, pongs, a close.

        The frames of what one recv brought are parsed, then answered one at a time, in order. A pipelining
        client's answers go out together, at the latest after `max_in_flight` of them or `max_unsent_bytes`: the
        worker sends each chunk before this answers on, and reads no more until every frame parsed is answered, so
        the answers a stream holds and the requests it has taken stay bounded.
        """
        if data is not None and not self.closed:
            self._feed(data)
        self.needs_thread = False
        answered = 0
        if self.held is not None:
            (whole, binary), self.held = self.held, None
            self.unsent += self._answer(whole, binary)
            answered += 1
        while self.frames and not (self.closed or self.needs_thread):
            out = self._on(self.frames.popleft())
            if out:
                self.unsent += out
                answered += 1
            if answered >= self.limits.max_in_flight or len(self.unsent) >= self.limits.max_unsent_bytes:
                yield self._take_unsent()
                answered = 0
        if self.failed is not None and not (self.frames or self.closed or self.needs_thread):
            self.unsent += self.close(*self.failed)  # after the answers to every frame before the bad one
        if self.unsent:
            yield self._take_unsent()

    def _feed(self, data: bytes) -> None:
        if self.failed is not None or self.reader.eof:
            return  # the parser stopped: nothing after a bad frame is read
        if data:
            self.reader.feed_data(data)
        else:
            self.reader.feed_eof()
        next(self.parser)

    def _parse(self) -> Generator[None, None, None]:
        """The frames of the bytes fed so far into `frames`, as they complete; a bad frame sets `failed` and ends
        the parse. A message's fragments are bounded together: past max_bytes, no payload is read (1009)."""
        arriving = 0  # bytes of the data frames of the message arriving now
        try:
            while True:
                room = self.limits.max_bytes - arriving
                frame = yield from Frame.parse(self.reader.read_exact, mask=True, max_size=room)
                if frame.opcode in _DATA:
                    arriving = 0 if frame.fin else arriving + len(frame.data)
                self.frames.append(frame)
        except PayloadTooBig:
            self.failed = (1009, f"a message over {self.limits.max_bytes} bytes (GYMSERVE_MAX_BODY_BYTES)")
        except ProtocolError as exc:
            self.failed = (1002, str(exc))
        except EOFError:  # the TCP side ended (within a frame, or between two): no close frame can reach it
            self.failed = (1006, "")
        yield

    def _take_unsent(self) -> bytes:
        out = bytes(self.unsent)
        self.unsent.clear()
        return out

    def _on(self, frame: Frame) -> bytes:
        opcode = frame.opcode
        if opcode in _DATA:
            return self._data(frame)
        if opcode is Opcode.PING:
            now = time.monotonic()
            self.pings = [t for t in self.pings if now - t < 1.0] + [now]
            if len(self.pings) > self.limits.pings_per_second:
                return self.close(1008, "too many pings")
            return _frame(Opcode.PONG, frame.data)
        if opcode is Opcode.CLOSE:
            try:
                Close.parse(frame.data)
            except ProtocolError as exc:
                return self.close(1002, str(exc))
            except UnicodeDecodeError:
                return self.close(1007, "a close reason that is not UTF-8")
            self.closed = True  # the client's close, echoed: the server closes the connection after it
            return _frame(Opcode.CLOSE, frame.data)
        return b""  # a pong

    def _data(self, frame: Frame) -> bytes:
        """A data frame: a whole message is answered; a fragment is kept (bounded by the parser) until its last."""
        if (frame.opcode is Opcode.CONT) != (self.partial is not None):
            return self.close(1002, "a continuation frame out of place")
        if self.partial is None:
            if frame.fin:  # the whole message in one frame: nothing to join
                return self._whole(bytes(frame.data), frame.opcode is Opcode.BINARY)
            self.partial, self.partial_since = bytearray(), time.monotonic()
            self.partial_binary = frame.opcode is Opcode.BINARY
        self.partial += frame.data
        if not frame.fin:
            return b""
        whole, self.partial = bytes(self.partial), None
        return self._whole(whole, self.partial_binary)

    def _whole(self, whole: bytes, binary: bool) -> bytes:
        if not binary:
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError:
                return self.close(1007, "a text message that is not UTF-8")
        return self._answer(whole, binary)

    def _answer(self, whole: bytes, binary: bool) -> bytes:
        try:
            answer, end = self.run(whole, binary)
        except _NeedsThread:
            self.held, self.needs_thread = (whole, binary), True
            return b""
        if self.closed:  # the watchdog answered this message late and ended the stream meanwhile
            return b""
        sent = _frame(Opcode.BINARY if binary else Opcode.TEXT, answer)
        return sent + (self.close(1000, "closed") if end else b"")

    def fragment_late(self, head_timeout: float) -> bool:
        """Whether a message has been arriving for longer than GYMSERVE_HEAD_TIMEOUT_SECONDS."""
        return self.partial is not None and time.monotonic() - self.partial_since > head_timeout

    def close(self, code: int, reason: str) -> bytes:
        """A close frame (once; none for 1006, the TCP side already gone); the worker closes the connection after
        sending it."""
        if self.closed:
            return b""
        self.closed = True
        if code == 1006:
            return b""
        reason = reason.encode("utf-8")[:MAX_REASON].decode("utf-8", "ignore")
        return _frame(Opcode.CLOSE, Close(code, reason).serialize())

    # --- one message, as the HTTP request it stands for ---

    def run(self, data: bytes, binary: bool) -> tuple[bytes, bool]:
        """The answer to one message (its body), and whether the stream ends after it (a close)."""
        media_type = values.MSGPACK if binary else values.JSON
        self.binary = binary
        try:
            op, method, path, body = self._request(data, binary)
        except GymServeError as err:
            return values.dumps(error_body(err, True), media_type), False
        reply = None
        if self.direct is not None and self.instance_id is not None and op in ("reset", "step"):
            reply = self.direct(self.environ, self.instance_id, op, body, media_type)
        if reply is None and self.only_direct:
            raise _NeedsThread
        status, headers, answer = reply or self._call(method, path, body, media_type)
        answer_type = _content_type(headers)
        if op == "close" and status < 300:
            return values.dumps({"closed": True}, media_type), True
        if binary and not values.is_msgpack(answer_type):  # errors are JSON on HTTP; a binary frame's are msgpack
            answer = msgpack.packb(orjson.loads(answer), use_bin_type=True)
        return answer, False

    def _request(self, data: bytes, binary: bool) -> tuple[str, str, str, bytes]:
        """The message's op, and the HTTP request it stands for: method, path, body."""
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=True) if binary else orjson.loads(data)
        except Exception:
            raise BadRequest(
                f"a message must be {'msgpack' if binary else 'JSON'} (a {'binary' if binary else 'text'} frame)",
                details={"field": "body"},
            ) from None
        if not isinstance(message, dict):
            raise BadRequest("a message must be a map with its op", details={"field": "body"})
        op = message.pop("op", None)
        if self.instance_id is None:
            if op != "batch_step":
                raise InvalidValue("op", f"expected 'batch_step' on /v2/stream, got {str(op)[:50]!r}")
            return op, "POST", "/v2/batch/step", _encoded(message, binary)
        if op not in _ENV_OPS:
            raise InvalidValue("op", f"expected one of {', '.join(_ENV_OPS)}, got {str(op)[:50]!r}")
        method, rest = _ENV_OPS[op]
        body = _encoded(message, binary) if method == "POST" else b""
        return op, method, f"/v2/envs/{self.instance_id}{rest}", body

    def _call(self, method: str, path: str, body: bytes, media_type: str) -> Reply:
        environ = dict(self.environ)
        environ.update(
            REQUEST_METHOD=method,
            PATH_INFO=path,
            QUERY_STRING="",
            CONTENT_TYPE=media_type if body else "",
            CONTENT_LENGTH=str(len(body)) if body else "",
            HTTP_ACCEPT=media_type,
        )
        environ["wsgi.input"] = io.BytesIO(body)
        line, headers, answer = call_app(self.app, environ)
        return int(line.split(" ", 1)[0]), headers, answer

    def _answer_late(self, err: GymServeError, native: bool) -> None:
        """The watchdog's: the stuck call's error as its answer, then the stream ends (1011): its thread is stuck."""
        if self.send_late is None or self.closed:
            return
        body = values.dumps(error_body(err, True), values.MSGPACK if self.binary else values.JSON)
        frame = _frame(Opcode.BINARY if self.binary else Opcode.TEXT, body)
        # After the answers made before it in this pass (the stuck thread holds them, and never touches them again).
        self.send_late(self._take_unsent() + frame + self.close(1011, err.code))


def _frame(opcode: Opcode, payload: bytes | bytearray | memoryview) -> bytes:
    """One frame the server sends (RFC 6455: a server's frames are never masked)."""
    return Frame(opcode, payload).serialize(mask=False)


class _NeedsThread(Exception):
    """A message the stream loop does not run: it needs the whole app (held for a pool thread)."""


def call_app(app: App, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """A WSGI app's whole answer to `environ`: its status line, headers and body (for a stream's message, or the
    worker's check of an upgrade, which answer it on their own terms)."""
    answer: list[Any] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., None]:
        answer[:] = [line, headers]
        return lambda _: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return answer[0], answer[1], body


def _content_type(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return values.JSON


def _encoded(message: dict[str, Any], binary: bool) -> bytes:
    return values.packb(message) if binary else orjson.dumps(message)
