"""The client's end of an env's step stream (GET /v2/envs/<id>/stream, a WebSocket): msgpack messages in lockstep.

Framing is the `websockets` library's sans-I/O client protocol (the server's library too; masking in C). The channel
knows nothing of retries: a failure or a close is `StreamBroken`, and the protocol (protocol_v2.V2Protocol) then sends
the same numbered call over HTTP, for good.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import weakref
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

_RECV = 64 * 1024  # what one recv() asks for: no more, for the reason gunicorn_worker._RECV gives
UPGRADE_SECONDS = 5.0


class StreamBroken(Exception):
    """The stream is refused, closed (a move: 1012) or cut: the caller goes on over HTTP."""


class StreamChannel:
    """One WebSocket to one env's stream (or the batch stream): `call(message)` sends one msgpack message and
    returns its answer."""

    def __init__(self, base_url: str, instance_id: str | None, headers: dict[str, str], timeout: float) -> None:
        """The stream of env `instance_id`; None: the batch stream (GET /v2/stream)."""
        parts = urlsplit(base_url)
        host, tls = parts.hostname or "127.0.0.1", parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        sock: socket.socket | None = None
        try:
            # The upgrade is answered at once or not at all (a proxy that does not pass it on): a short wait.
            sock = socket.create_connection((host, port), timeout=min(timeout, UPGRADE_SECONDS))
            self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host) if tls else sock
            route = "/v2/stream" if instance_id is None else f"/v2/envs/{instance_id}/stream"
            target = parts.path.rstrip("/") + route
            # No limit on an answer's size here (the server bounds what it sends), and no compression offered.
            self.ws = ClientProtocol(parse_uri(f"{'wss' if tls else 'ws'}://{parts.netloc}{target}"), max_size=None)
            self._pending: deque[Any] = deque()  # events received, not yet taken (answers that came together)
            request = self.ws.connect()
            for name, value in headers.items():
                if name.lower() == "authorization":
                    request.headers["Authorization"] = value
            self.ws.send_request(request)
            self._flush()
            self._upgraded()
            self.sock.settimeout(timeout)
            # An env dropped without close() closes its socket when collected, as the HTTP session's does.
            self._finalizer = weakref.finalize(self, self.sock.close)
        except (OSError, InvalidURI, StreamBroken) as err:
            if sock is not None:
                sock.close()
            raise StreamBroken(f"no stream: {err}") from err

    def call(self, message: bytes) -> bytes:
        """The answer (msgpack) to one message (msgpack)."""
        self.send(message)
        return self.receive()

    def send(self, message: bytes) -> None:
        """One message (msgpack) sent; its answer is the next `receive()`'s."""
        try:
            self.ws.send_binary(message)
            self._flush()
        except OSError as err:
            raise StreamBroken(str(err)) from err

    def receive(self) -> bytes:
        """The answer (msgpack) to the oldest message sent and not answered yet."""
        try:
            return self._message()
        except OSError as err:
            raise StreamBroken(str(err)) from err

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.sock.sendall(data)

    def _upgraded(self) -> None:
        """The server's answer to the upgrade: its 101, or StreamBroken (another status, no HTTP, no answer)."""
        while not isinstance(event := self._next_event(), Response):
            pass
        if event.status_code != 101 or self.ws.handshake_exc is not None:
            raise StreamBroken(f"upgrade answered {event.status_code}")

    def _message(self) -> bytes:
        """The next whole data message (answering pings on the way); StreamBroken at a close."""
        pieces = bytearray()
        while True:
            event = self._next_event()
            if not isinstance(event, Frame):
                continue
            if event.opcode is Opcode.CLOSE:
                raise StreamBroken(f"closed: {int.from_bytes(event.data[:2], 'big') if event.data else ''}")
            if event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                pieces += event.data
                if event.fin:
                    return bytes(pieces)

    def _next_event(self) -> Any:
        """The protocol's next event, read as data arrives (pongs sent on the way); StreamBroken when the peer ends
        the connection, speaks no WebSocket or speaks it badly, or when it took longer than the socket's timeout."""
        deadline = time.monotonic() + (self.sock.gettimeout() or UPGRADE_SECONDS)
        while not self._pending:
            if self.ws.parser_exc is not None or self.ws.handshake_exc is not None:
                raise StreamBroken(str(self.ws.parser_exc or self.ws.handshake_exc))
            if time.monotonic() > deadline:
                raise StreamBroken("no answer in time")
            data = self.sock.recv(_RECV)
            if not data:
                raise StreamBroken("the server closed the connection")
            self.ws.receive_data(data)
            self._flush()
            self._pending.extend(self.ws.events_received())
        return self._pending.popleft()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing: nothing to tell anyone
            self.ws.send_close(1000)
            self._flush()
        self._finalizer()
