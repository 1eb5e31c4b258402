"""Other replicas of the farm: a batch's items of another replica sent to it as one sub-batch, by validated node name.

Only node names that match GYMSERVE_PEER_NODE_PATTERN (whole name) are reached, at
http://<node><GYMSERVE_PEER_DOMAIN>:<GYMSERVE_PORT>; any other node's items fail with wrong_replica. A
sub-batch carries FANOUT_HEADER, so the replica that receives it steps its own envs (and its siblings')
and never sends items further: a batch crosses replicas at most once.
"""

from __future__ import annotations

import http.client
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from ..settings import Settings

FANOUT_HEADER = "X-Gymserve-Fanout"
BATCH_PATH = "/v2/batch/step"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def reachable(settings: Settings, node: str) -> bool:
    """Whether items of `node` may be sent to it: peers are configured and the name is one of them."""
    pattern = settings.peer_node_pattern
    return bool(pattern) and node != settings.node_id and re.fullmatch(pattern, node) is not None


def pool() -> ThreadPoolExecutor:
    """Threads that wait on other replicas (started on first use, after gunicorn's fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gymserve-peer-replica")
        return _pool


def post_batch(settings: Settings, node: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    """POST a sub-batch to replica `node` (already checked by `reachable`); its status and body.

    OSError (unresolvable, refused, timed out) is the caller's to turn into per-item errors.
    """
    assert reachable(settings, node)
    conn = http.client.HTTPConnection(
        f"{node}{settings.peer_domain}", settings.port, timeout=settings.forward_timeout_seconds
    )
    try:
        conn.request(
            "POST",
            BATCH_PATH,
            body=body,
            headers={"Content-Type": content_type, "Accept": content_type, FANOUT_HEADER: "1"},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
