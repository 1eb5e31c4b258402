"""The client's end of an env's step stream (GET /v2/envs/<id>/stream, a WebSocket): msgpack messages in lockstep.

Framing is wsproto's (the server's library too). The channel knows nothing of retries: a failure or a close is
`StreamBroken`, and the protocol (protocol_v2.V2Protocol) then sends the same numbered call over HTTP, for good.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, Request
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

_RECV = 256 * 1024
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
            self.ws = WSConnection(ConnectionType.CLIENT)
            route = "/v2/stream" if instance_id is None else f"/v2/envs/{instance_id}/stream"
            target = parts.path.rstrip("/") + route
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items() if k.lower() == "authorization"]
            self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=target, extra_headers=extra)))
            self._next(AcceptConnection)
            self.sock.settimeout(timeout)
            # An env dropped without close() closes its socket when collected, as the HTTP session's does.
            self._finalizer = weakref.finalize(self, self.sock.close)
        except (OSError, StreamBroken) as err:
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
            self.sock.sendall(self.ws.send(BytesMessage(message)))
        except OSError as err:
            raise StreamBroken(str(err)) from err

    def receive(self) -> bytes:
        """The answer (msgpack) to the oldest message sent and not answered yet."""
        try:
            data: bytes = self._next(BytesMessage)
        except OSError as err:
            raise StreamBroken(str(err)) from err
        return data

    def _next(self, kind: type) -> Any:
        """The data of the next event of `kind` (a whole message), answering pings; StreamBroken at a close, at
        anything that is not a WebSocket, or when the whole answer took longer than the socket's timeout."""
        try:
            return self._read(kind)
        except (LocalProtocolError, RemoteProtocolError) as err:  # a peer that speaks no WebSocket, or badly
            raise StreamBroken(str(err)) from err

    def _read(self, kind: type) -> Any:
        deadline = time.monotonic() + (self.sock.gettimeout() or UPGRADE_SECONDS)
        pieces = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise StreamBroken("no answer in time")
            for event in self.ws.events():
                if isinstance(event, kind) and isinstance(event, BytesMessage):
                    pieces += event.data
                    if event.message_finished:
                        return bytes(pieces)
                elif isinstance(event, kind):
                    return event
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, (CloseConnection, RejectConnection)):
                    raise StreamBroken(f"closed: {getattr(event, 'code', None) or getattr(event, 'status_code', '')}")
            data = self.sock.recv(_RECV)
            if not data:
                raise StreamBroken("the server closed the connection")
            self.ws.receive_data(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing: nothing to tell anyone
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self._finalizer()
