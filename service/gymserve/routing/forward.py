"""Forwarding a request to the worker that owns its env, once, over that worker's private Unix socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..errors import InstanceLost, OwnerTimeout
from .replica import Replica
from .wire import read_message, write_message

# Set on a request one worker forwards to another: the receiver never forwards it again.
FORWARDED_HEADER = "X-Gymserve-Forwarded"
# Headers that travel with a forwarded request; nothing else does.
REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "Content-Encoding", "Idempotency-Key")
# The owner's answer goes back with every header but these: the hop-by-hop ones (RFC 9110, section 7.6.1; the
# Connection header may name more), which belong to the hop between the workers, and Content-Length, which the
# worker that answers the client computes for the body it sends.
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer", "content-length")
)
# The WSGI environ key under which the owner finds the tenant the forwarding worker authenticated:
# it comes from the message's meta, never from a header, so no client can claim a tenant.
PEER_TENANT = "gymserve.peer_tenant"
# The environ key of a forwarded request's late answer: how the deadline watchdog answers the sibling itself.
LATE_ANSWER = "gymserve.answer_late"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Forwarder:
    """Persistent connections from this worker's threads to each sibling's socket (one per thread and slot)."""

    def __init__(self, replica: Replica, my_slot: int, timeout: float) -> None:
        self.replica = replica
        self.my_slot = my_slot
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self, slot: int) -> tuple[socket.socket, Any, bool]:
        pool: dict[int, tuple[socket.socket, Any]] = self._local.__dict__.setdefault("pool", {})
        if slot in pool:
            return (*pool[slot], True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    sock.connect(self.replica.socket_path(slot))
                    break
                except BlockingIOError:
                    # The owner's accept backlog is full for a moment (many threads connecting at once): a Unix
                    # socket with a timeout says EAGAIN at once, where a blocking one would wait. The owner is
                    # alive; its env is not lost: wait for room, up to the forward timeout.
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the socket of worker {slot} accepted no connection") from None
                    time.sleep(0.001)
        except OSError:
            sock.close()
            raise
        pool[slot] = (sock, sock.makefile("rb"))
        return (*pool[slot], False)

    def _drop(self, slot: int) -> None:
        entry = self._local.__dict__.get("pool", {}).pop(slot, None)
        if entry is not None:
            entry[1].close()
            entry[0].close()

    def send(
        self,
        slot: int,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        instance_id: str = "",
        *,
        tenant: str,
    ) -> Answer:
        """Forward once, for `tenant`. A dead owner means its envs are gone: InstanceLost, never a re-create."""
        return self._exchange(slot, self._meta(method, path, query, headers, tenant), body, instance_id, retry=True)()

    def begin_post(
        self, slot: int, path: str, headers: dict[str, str], body: bytes, instance_id: str, *, tenant: str
    ) -> Callable[[], Answer]:
        """A POST as `send` sends it, in two steps: written now, and the call returned reads the answer (and raises
        what `send` raises), so that this thread can work while the owner does."""
        return self._exchange(slot, self._meta("POST", path, "", headers, tenant), body, instance_id, retry=True)

    def _meta(self, method: str, path: str, query: str, headers: dict[str, str], tenant: str) -> dict[str, Any]:
        return {
            "method": method,
            "path": path,
            "query": query,
            "headers": {**headers, FORWARDED_HEADER: str(self.my_slot)},
            "tenant": tenant,
        }

    def _exchange(
        self, slot: int, meta: dict[str, Any], body: bytes, instance_id: str, *, retry: bool
    ) -> Callable[[], Answer]:
        reused, failure, stream = False, None, None
        try:
            sock, stream, reused = self._connection(slot)
            write_message(sock, meta, body)
        except OSError as exc:
            failure = exc

        def answer() -> Answer:
            try:
                if failure is not None:
                    raise failure
                assert stream is not None
                message = read_message(stream)
                if message is None:
                    raise ConnectionError("the owner closed the connection")
            except TimeoutError:
                self._drop(slot)
                metrics.FORWARDS.labels("timeout").inc()
                raise OwnerTimeout(
                    f"the worker holding {instance_id} did not answer within {self.timeout:g}s "
                    "(GYMSERVE_FORWARD_TIMEOUT_SECONDS)"
                ) from None
            except OSError as exc:
                self._drop(slot)
                # A kept connection whose worker died and was replaced: ask the new one once (it refuses ids of
                # the old generation, so nothing can run twice). A missing or refusing socket is no such case.
                if reused and retry and not isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
                    return self._exchange(slot, meta, body, instance_id, retry=False)()
                metrics.FORWARDS.labels("lost").inc()
                raise InstanceLost(instance_id) from None
            metrics.FORWARDS.labels("ok").inc()
            answer_meta, answer_body = message
            return Answer(answer_meta["status"], end_to_end(answer_meta["headers"]), answer_body)

        return answer


def end_to_end(headers: dict[str, str]) -> dict[str, str]:
    """An answer's headers without the hop-by-hop ones (those RFC 9110 names and those its Connection header names)."""
    dropped = set(HOP_BY_HOP)
    for name, value in headers.items():
        if name.lower() == "connection":
            dropped.update(token.strip().lower() for token in value.split(","))
    return {name: value for name, value in headers.items() if name.lower() not in dropped}
