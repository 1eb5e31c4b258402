"""RemoteEnv: a gymnasium.Env that forwards every call to an env held by a gymserve server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym

from .errors import EnvClosed
from .http import HttpSession
from .protocol_v1 import V1Protocol
from .protocol_v2 import ENCODINGS, V2Protocol, create_body, direct_session, opened, session


class _Remote(Protocol):
    instance_id: str | None
    action_space: gym.Space[Any]
    observation_space: gym.Space[Any]

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]: ...
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]: ...
    def render(self) -> Any: ...
    def close(self) -> None: ...


class RemoteEnv(gym.Env[Any, Any]):
    """`RemoteEnv("http://127.0.0.1:8000", "CartPole-v1")` behaves like `gymnasium.make("CartPole-v1")`.

    `protocol="v2"` (the default) speaks /v2: observations arrive in their native dtype and shape
    (`encoding="msgpack"`, or `"json"`), resets and steps carry sequence numbers, and a request
    whose connection fails, or that the server refuses as busy (429, 503), is retried `retries`
    times with backoff without ever running twice. `compress` asks for gzipped large answers.
    `wrappers=["AddRenderObservation"]` (with `render_mode="rgb_array"`) makes the frame the
    observation. `direct=True` (/v2) steps the env at the URL its replica advertises at create
    (GYMSERVE_PUBLIC_URL, e.g. its pod's DNS name), falling back to `base_url` for good when that
    does not answer. `protocol="v1"` speaks the seed's /v1 and never resends a step. Other keyword
    arguments go to the env's constructor on the server.

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
        timeout: float = 30.0,
        protocol: str = "v2",
        encoding: str = "msgpack",
        retries: int = 4,
        compress: bool = True,
        wrappers: Sequence[str] = (),
        direct: bool = False,
        **kwargs: Any,
    ) -> None:
        if protocol not in ("v1", "v2") or encoding not in ENCODINGS:
            raise ValueError(f"protocol must be 'v1' or 'v2' and encoding one of {sorted(ENCODINGS)}")
        if wrappers and protocol == "v1":
            raise ValueError("wrappers need protocol='v2'")
        self.render_mode = render_mode
        create = create_body(
            env_id, render_mode, kwargs, max_episode_steps=max_episode_steps, ttl=ttl, wrappers=list(wrappers)
        )
        http = session(base_url, timeout, retries, compress and protocol == "v2")
        self._remote: _Remote = opened(
            http,
            lambda h: (
                V2Protocol(h, create, ENCODINGS[encoding], direct_session(direct, timeout, compress))
                if protocol == "v2"
                else V1Protocol(h, create)
            ),
        )
        self._http: HttpSession = http
        self.action_space = self._remote.action_space
        self.observation_space = self._remote.observation_space
        self.spec = gym.spec(env_id) if env_id in gym.envs.registry else None

    @property
    def instance_id(self) -> str | None:
        """The env's id on the server; None once closed."""
        return self._remote.instance_id

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
        """The env on the server; EnvClosed once this RemoteEnv was closed (not urllib3's closed-pool error)."""
        if self._remote.instance_id is None:
            raise EnvClosed("this RemoteEnv was closed; make a new one")
        return self._remote

    def close(self) -> None:
        """Delete the env on the server; calling it again does nothing."""
        if self._remote.instance_id is not None:
            try:
                self._remote.close()
            finally:
                self._http.close()
        super().close()
