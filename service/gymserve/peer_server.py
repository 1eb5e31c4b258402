"""Each worker's private Unix socket server: it answers the requests its sibling workers forward to it."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per forwarded step; errors still go to the log."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass


def start_peer_server(app: Any, path: str) -> BaseWSGIServer:
    """Serve `app` on the Unix socket `path` from daemon threads (HTTP/1.1 keep-alive, one thread per peer)."""
    if os.path.exists(path):
        os.unlink(path)  # a socket left by this slot's previous, dead generation
    server = make_server(f"unix://{path}", 0, app, threaded=True, request_handler=_QuietHandler)
    os.chmod(path, 0o600)
    threading.Thread(target=server.serve_forever, name="gymserve-peer-server", daemon=True).start()
    log.debug("peer socket listening at %s", path)
    return server
