"""Other replicas of the farm: a batch's items sent to their replica by validated node name, lists asked of all.

Batches: only node names that match GYMSERVE_PEER_NODE_PATTERN (whole name) are reached, at
http://<node><GYMSERVE_PEER_DOMAIN>:<GYMSERVE_PORT> (with GYMSERVE_PEERS_DNS set, only at an address that
name gives too); any other node's items fail with wrong_replica. With GYMSERVE_WORKER_PORT_BASE set (the farm's
replicas share their settings), each worker's items go to that worker's own port instead, so that they take no
second hop inside the other replica.
Lists: every address that GYMSERVE_PEERS_DNS resolves to (never a name from a request). Either request
carries FANOUT_HEADER, so the replica that receives it answers for itself (its workers included) and asks
no other replica: a request crosses replicas at most once.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NoReturn

from ..client.connection import KeptConnection
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


# Keep-alive connections to other replicas, one per thread and node: a new connection (and DNS lookup) per
# sub-batch cost more than the hop itself. One idle longer than this is closed rather than reused, well before
# gunicorn's keepalive (75 s) closes it from the other side, so that a request never meets a closed connection
# (a sub-batch is never resent: it may have run). The client's connection helper keeps them.
IDLE_SECONDS = 30.0
_local = threading.local()


def begin_batch(
    settings: Settings,
    node: str,
    body: bytes,
    content_type: str,
    accept: str,
    authorization: str | None = None,
    slot: int | None = None,
) -> Callable[[], tuple[int, bytes]]:
    """POST a sub-batch to replica `node` (already checked by `reachable`), with the caller's own key
    (`authorization`: that replica steps that tenant's envs and no one else's). It is sent now; the call returned
    reads its status and body, so that the caller steps its own items while the other replica steps these.

    That call raises OSError or http.client.HTTPException (unresolvable, refused, reset, timed out), for the caller
    to turn into per-item errors; the connection is closed then.
    """
    headers = {"Content-Type": content_type, "Accept": accept}
    if authorization is not None:
        headers["Authorization"] = authorization
    answer = begin(settings, node, slot, "POST", BATCH_PATH, headers, body)

    def status_and_body() -> tuple[int, bytes]:
        status, _, data = answer()
        return status, data

    return status_and_body


def begin(
    settings: Settings, node: str, slot: int | None, method: str, target: str, headers: dict[str, str], body: bytes
) -> Callable[[], tuple[int, list[tuple[str, str]], bytes]]:
    """`method target` sent once to replica `node` (checked by `reachable`), marked so that it goes no further: to
    the own port of its worker in `slot` when workers have one (one that refuses or does not answer the connect,
    so that nothing was sent, is skipped for the shared port), else to the shared port. The call returned reads
    the status, headers and body; it raises OSError or http.client.HTTPException, having closed the connection.
    """
    assert reachable(settings, node)
    headers = {**headers, FANOUT_HEADER: "1"}
    own = settings.worker_port(slot) if slot is not None else None
    # A worker port that cannot be connected to, so that nothing was sent: the shared one serves. It refuses when
    # its worker is being replaced or could not open it; its SYNs are dropped (a timeout, after
    # GYMSERVE_PEER_CONNECT_TIMEOUT_SECONDS) when a network policy admits the shared port only.
    for port in [own, settings.port] if own else [settings.port]:
        kept = _kept(settings, node, port)
        try:
            conn = kept.take()
        except (OSError, http.client.HTTPException) as exc:
            if port == own and isinstance(exc, ConnectionRefusedError | TimeoutError):
                continue
            return partial(_raise, exc)
        try:
            conn.request(method, target, body=body, headers=headers)
            break
        except (OSError, http.client.HTTPException) as exc:  # that connection is closed: the next one is new
            conn.close()
            return partial(_raise, exc)

    def answer() -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        kept.keep(conn, resp)
        return status, resp.getheaders(), data

    return answer


def _raise(exc: BaseException) -> NoReturn:
    raise exc


def _kept(settings: Settings, node: str, port: int) -> KeptConnection:
    """This thread's connection helper for `node`'s `port`. A new connection resolves the node's address anew, with
    the settings of the call that makes it."""
    pool: dict[tuple[str, int], KeptConnection] = _local.__dict__.setdefault("pool", {})
    kept = pool.get((node, port))
    if kept is None:
        kept = pool[node, port] = KeptConnection(
            node,
            port,
            timeout=settings.forward_timeout_seconds,
            connect_timeout=settings.peer_connect_timeout_seconds,
            max_idle=IDLE_SECONDS,
        )
    kept.host = lambda: address_of(settings, node)
    return kept


def address_of(settings: Settings, node: str) -> str:
    """The address of replica `node`: its name resolved, and with GYMSERVE_PEERS_DNS set, only an address that
    name also gives (the router's rule: a name that matches the pattern but is no replica, e.g. another
    container on a shared network, is not reached). socket.gaierror when there is none: the replica is gone."""
    infos = socket.getaddrinfo(f"{node}{settings.peer_domain}", settings.port, socket.AF_INET, socket.SOCK_STREAM)
    found = sorted({str(info[4][0]) for info in infos})
    if settings.peers_dns:
        replicas = set(addresses(settings))  # one lookup, not one per address
        found = [a for a in found if a in replicas]
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{node} is not a replica of {settings.peers_dns}")
    return found[0]


def _drop(node: str, port: int) -> None:
    """Close this thread's connection to `node`'s `port` (the next sub-batch makes a new one)."""
    kept = _local.__dict__.get("pool", {}).pop((node, port), None)
    if kept is not None:
        kept.close()


def addresses(settings: Settings) -> list[str]:
    """The replicas' addresses (this one's too) as GYMSERVE_PEERS_DNS resolves; none when unset or unresolvable."""
    if not settings.peers_dns:
        return []
    try:
        infos = socket.getaddrinfo(settings.peers_dns, settings.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def ask_all(settings: Settings, path: str, headers: dict[str, str], method: str = "GET") -> list[bytes]:
    """Every replica's 200 answer to `method path` (a list, or a bulk delete), asked in parallel; a replica that
    fails is left out (its envs are not listed, or not deleted, as when it is gone)."""
    futures = [pool().submit(_ask, settings, address, path, headers, method) for address in addresses(settings)]
    return [body for future in futures if (body := future.result()) is not None]


def _ask(settings: Settings, address: str, path: str, headers: dict[str, str], method: str = "GET") -> bytes | None:
    once = KeptConnection(
        address,
        settings.port,
        timeout=settings.forward_timeout_seconds,
        connect_timeout=settings.peer_connect_timeout_seconds,
    )
    try:
        resp, body = once.exchange(method, path, headers={**headers, FANOUT_HEADER: "1"})
        return body if resp.status == 200 else None
    except OSError:
        return None
    finally:
        once.close()
