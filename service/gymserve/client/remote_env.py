"""RemoteEnv: a gymnasium.Env that forwards every call to an env held by a gymserve server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym

from .errors import EnvClosed
from .held import Held, Reach, create
from .http import DEFAULT_TIMEOUT, RETRY_WINDOW, HttpSession
from .lease import Lease
from .protocol_v1 import V1Protocol
from .protocol_v2 import ENCODINGS, V2Protocol, direct_session


class _Remote(Protocol):
    instance_id: str | None
    action_space: gym.Space[Any]
    observation_space: gym.Space[Any]

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]: ...
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]: ...
    def render(self) -> Any: ...
    def close(self) -> None: ...


class RemoteEnv(Held, gym.Env[Any, Any]):
    """`RemoteEnv("http://127.0.0.1:8000", "CartPole-v1")` behaves like `gymnasium.make("CartPole-v1")`.

    `protocol="v2"` (the default) speaks /v2: observations arrive in their native dtype and shape
    (`encoding="msgpack"`, or `"json"`), resets and steps carry sequence numbers, and a request
    whose connection fails, or that the server refuses as busy (429, 503), is retried `retries`
    times with backoff without ever running twice. `compress` asks for gzipped large answers.
    `wrappers=["AddRenderObservation"]` (with `render_mode="rgb_array"`) makes the frame the
    observation. `labels={"run": "ppo-7"}` tags the env (DELETE /v2/envs?label=run=ppo-7 closes a run's
    envs). While this object lives, a daemon thread sends keepalives at a fraction of the env's TTL, so a
    learner pausing for minutes keeps its env (`keepalive=False` turns that off). `snapshot=blob` (from
    `snapshot()`) restores an env instead of making one (its render mode and constructor arguments come
    from the snapshot); `fork()` makes a copy of the env. `protocol="v1"` speaks the seed's /v1 and never
    resends a step. `api_key` (default: $GYMSERVE_API_KEY) is the tenant's key of a farm with tenants.
    `direct=True` (/v2) steps the env at the URL its replica advertises at create (GYMSERVE_PUBLIC_URL,
    e.g. its pod's DNS name), falling back to `base_url` for good when that does not answer.
    `retry_window` (seconds, default 120) rides the farm's own operations: once the env exists, a call
    that meets a refused or cut connection or a `503 unavailable` (the env moving between server
    processes, a server or router restart) keeps being retried, after Retry-After or with capped
    backoff, until that many seconds have passed since its first failure, then raises its last error;
    the same `instance_id` and the same `seq` throughout, so no step runs twice (/v1: refused
    connections only). `retry_window=0`: only the `retries` above. `stream` ("auto", True, False): resets and steps
    go over the env's WebSocket stream (/v2) when its upgrade answers 101 ("auto": HTTP otherwise; True: an error);
    a call it cannot answer goes over HTTP, and a broken or moved stream (1012) leaves HTTP for good. Other
    keyword arguments go to the env's constructor on the server.

    Every failure is a `gymserve.client.ClientError`: `RemoteError` (the server refused, with its
    status and code), `ServerUnreachable` (no connection), `ConnectionFailed` / `ResponseTimeout`
    (no answer), `EnvClosed` (used after `close()`).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array", "ansi", "rgb_array_list", "ansi_list"]}

    def __init__(
        self,
        base_url: str,
        env_id: str,
        *,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        protocol: str = "v2",
        encoding: str = "msgpack",
        retries: int = 4,
        compress: bool = True,
        wrappers: Sequence[str] = (),
        api_key: str | None = None,
        direct: bool = False,
        labels: Mapping[str, str] | None = None,
        snapshot: bytes | None = None,
        keepalive: bool = True,
        retry_window: float = RETRY_WINDOW,
        stream: bool | str = "auto",
        **kwargs: Any,
    ) -> None:
        if protocol not in ("v1", "v2") or encoding not in ENCODINGS:
            raise ValueError(f"protocol must be 'v1' or 'v2' and encoding one of {sorted(ENCODINGS)}")
        if (wrappers or snapshot) and protocol == "v1":
            raise ValueError("wrappers and snapshots need protocol='v2'")
        self.render_mode = render_mode
        body = create(
            env_id,
            render_mode,
            kwargs,
            {"max_episode_steps": max_episode_steps, "ttl": ttl, "snapshot": snapshot},
            wrappers,
            labels,
        )
        direct_to = direct_session(direct, timeout, compress, api_key)
        v2 = protocol == "v2"
        reach = Reach(base_url, timeout, retries, compress and v2, api_key, retry_window)
        http, remote = self._connect(
            reach,
            keepalive,
            lambda h: (
                V2Protocol(h, body, ENCODINGS[encoding], direct=direct_to, stream=stream) if v2 else V1Protocol(h, body)
            ),
        )
        self._attach(http, remote, env_id)

    def _attach(self, http: HttpSession, remote: _Remote, env_id: str) -> None:
        self._http: HttpSession = http
        self._remote: _Remote = remote
        self.action_space = remote.action_space
        self.observation_space = remote.observation_space
        self.spec = gym.spec(env_id) if env_id in gym.envs.registry else None
        self._lease: Lease | None = None
        if isinstance(remote, V2Protocol):  # a fork's or a restored env's render mode is its original's
            self.render_mode = remote.created["render_mode"]
            self._lease_for(remote)

    def snapshot(self) -> bytes:
        """The env's state on the server as an opaque blob signed by the farm (it needs GYMSERVE_SNAPSHOT_KEY);
        `RemoteEnv(url, env_id, snapshot=blob)` restores it on any replica of the farm."""
        return self._v2().snapshot()

    def fork(self, *, ttl: float | None = None, labels: Mapping[str, str] | None = None) -> RemoteEnv:
        """A new RemoteEnv (its own connection) for a fork of this env on the server: a new env in exactly this
        env's state, random generators included, so the same actions give the same trajectory (/v2 only)."""
        twin, http, forked = self._twin(self._v2(), ttl, labels)
        twin._attach(http, forked, forked.created["env_id"])
        return twin

    def _v2(self) -> V2Protocol:
        remote = self._open()
        if not isinstance(remote, V2Protocol):
            raise ValueError("forks and snapshots need protocol='v2'")
        return remote

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        remote = self._open()
        super().reset(seed=seed)
        return remote.reset(None if seed is None else int(seed), options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        return self._open().step(action)

    def render(self) -> Any:
        remote = self._open()
        return None if self.render_mode is None else remote.render()

    def _open(self) -> _Remote:
        """The env on the server; EnvClosed once this RemoteEnv was closed (not a transport's error)."""
        if self._remote.instance_id is None:
            raise EnvClosed("this RemoteEnv was closed; make a new one")
        return self._remote

    def close(self) -> None:
        """Delete the env on the server; calling it again does nothing."""
        self._release(self._remote)
        super().close()
