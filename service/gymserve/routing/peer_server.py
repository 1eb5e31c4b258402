"""Each worker's private Unix socket server: it answers the requests its sibling workers forward to it."""

from __future__ import annotations

import io
import logging
import os
import socket
import socketserver
import sys
import threading
from typing import Any

from ..errors import GymServeError, Internal, error_reply
from .forward import LATE_ANSWER, PEER_TENANT
from .wire import read_message, write_message

log = logging.getLogger(__name__)


def _environ(meta: dict[str, Any], body: bytes) -> dict[str, Any]:
    """A WSGI environ for a forwarded request (PEP 3333), as gunicorn would have built it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": meta["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": meta["path"],
        "QUERY_STRING": meta.get("query", ""),
        "SERVER_NAME": "gymserve-peer",
        "SERVER_PORT": "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in meta.get("headers", {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    if isinstance(meta.get("tenant"), str):  # authenticated by the sibling that forwarded it
        environ[PEER_TENANT] = meta["tenant"]
    return environ


class _PeerHandler(socketserver.StreamRequestHandler):
    """One sibling's persistent connection: messages in, the app's answers out, until it closes."""

    server: PeerServer

    def handle(self) -> None:
        while True:
            try:
                message = read_message(self.rfile)
            except (ConnectionError, OSError):
                return
            if message is None:
                return
            environ = _environ(*message)
            environ[LATE_ANSWER] = self.answer_late
            status, headers, body = self.server.call_app(environ)
            try:
                write_message(self.wfile, {"status": status, "headers": headers}, body)
            except OSError:
                return

    def answer_late(self, err: GymServeError, native: bool) -> None:
        """The deadline watchdog's answer for a stuck call, then the connection ends (the sibling connects anew)."""
        status, headers, body = error_reply(err, native)
        write_message(self.wfile, {"status": status, "headers": dict(headers)}, body)
        self.connection.shutdown(socket.SHUT_RDWR)


class PeerServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # Every thread of every sibling keeps a connection here, and they connect at once when a load starts:
    # socketserver's default backlog of 5 made them wait (Forwarder retries a full backlog until its timeout).
    request_queue_size = 256

    def __init__(self, path: str, app: Any) -> None:
        super().__init__(path, _PeerHandler)
        self.app = app

    def call_app(self, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), dict(headers)
            return lambda data: None

        try:
            chunks = self.app(environ, start_response)
        except Exception:  # Flask's handlers answer almost everything; never drop a sibling's connection
            log.exception("forwarded request failed")
            status, headers, body = error_reply(Internal(), native=environ["PATH_INFO"].startswith("/v2/"))
            return status, dict(headers), body

        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return answer["status"], answer["headers"], body


def start_peer_server(app: Any, path: str) -> PeerServer:
    """Serve `app` on the Unix socket `path` from daemon threads, one per connected sibling thread."""
    if os.path.exists(path):
        os.unlink(path)  # a socket left by this slot's previous, dead generation
    server = PeerServer(path, app)
    os.chmod(path, 0o600)
    threading.Thread(target=server.serve_forever, name="gymserve-peer-server", daemon=True).start()
    log.debug("peer socket listening at %s", path)
    return server
