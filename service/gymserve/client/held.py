"""What RemoteEnv and RemoteVectorEnv share: the create both send, the session to the server, the lease that keeps
the env alive, forks, and close. Decided once here; each class keeps its own public signature and docs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Self, TypeVar

from .http import HttpSession
from .lease import Lease
from .protocol_v2 import V2Protocol, create_body, opened, session

T = TypeVar("T")


class Reach(NamedTuple):
    """How a client reaches the server: what every session it makes (the env's, a lease's, a fork's) is made of."""

    base_url: str
    timeout: float
    retries: int
    compress: bool
    api_key: str | None
    retry_window: float

    def session(self) -> HttpSession:
        return session(*self)


def create(
    env_id: str,
    render_mode: str | None,
    kwargs: dict[str, Any],
    options: Mapping[str, Any],
    wrappers: Sequence[str],
    labels: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The create body of either class: `options` are its optional create fields (ttl, snapshot, num_envs, ...)."""
    return create_body(env_id, render_mode, kwargs, wrappers=list(wrappers), labels=dict(labels or {}), **options)


class Held:
    """The env on the server that a RemoteEnv or RemoteVectorEnv holds: its session, lease and twin (a fork)."""

    render_mode: str | None
    _reach: Reach
    _keepalive: bool
    _http: HttpSession
    _lease: Lease | None
    _remote: Any

    @property
    def instance_id(self) -> str | None:
        """The env's id on the server (a vector env's one id for all its sub-envs); None once closed."""
        return self._remote.instance_id

    def _connect(self, reach: Reach, keepalive: bool, connect: Callable[[HttpSession], T]) -> tuple[HttpSession, T]:
        """A session to the server and `connect(session)` on it (the session closed if that fails)."""
        self._reach, self._keepalive = reach, keepalive
        http = reach.session()
        return http, opened(http, connect)

    def _lease_for(self, remote: V2Protocol) -> None:
        """Keepalives at a fraction of the env's TTL while this object lives (unless turned off, or no TTL)."""
        ttl = remote.created["ttl"]
        self._lease = Lease(self._reach.session(), remote.path, ttl, remote) if self._keepalive and ttl > 0 else None

    def _twin(
        self, remote: V2Protocol, ttl: float | None, labels: Mapping[str, str] | None
    ) -> tuple[Self, HttpSession, V2Protocol]:
        """A new object of this class, on its own session, and the forked env it holds (for its `_attach`)."""
        info = remote.fork(ttl, labels)
        twin = type(self).__new__(type(self))
        twin.render_mode = self.render_mode
        http, forked = twin._connect(
            self._reach, self._keepalive, lambda h: V2Protocol(h, None, remote.media_type, info=info)
        )
        return twin, http, forked

    def _release(self, remote: Any) -> None:
        """Stop the lease, delete the env on the server (once), close the session."""
        if self._lease is not None:
            self._lease.stop()
        if remote.instance_id is not None:
            try:
                remote.close()
            finally:
                self._http.close()
