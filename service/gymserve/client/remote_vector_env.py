"""RemoteVectorEnv: a gymnasium.vector.VectorEnv whose sub-envs live in one server-side vector env."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError
from gymnasium.vector import AutoresetMode

from ..codec import spaces
from .errors import EnvClosed
from .held import Held, Reach, create
from .http import DEFAULT_TIMEOUT, RETRY_WINDOW, HttpSession
from .protocol_v2 import ENCODINGS, V2Protocol, direct_session

# The server's names of Gymnasium's autoreset modes: each member's name in snake case, as the server derives them.
AUTORESET_NAMES = {mode: mode.name.lower() for mode in AutoresetMode}


class RemoteVectorEnv(Held, gym.vector.VectorEnv[Any, Any, Any]):
    """`RemoteVectorEnv(url, "CartPole-v1", 64)` behaves like `gymnasium.make_vec("CartPole-v1", 64,
    vectorization_mode="sync")`, with each reset and step of all sub-envs one HTTP request.

    The server runs `gymnasium.make_vec(..., vectorization_mode="sync")` with `autoreset_mode`
    (an `AutoresetMode` or its name: "next_step", "same_step", "disabled"), so autoresets and the
    `final_obs`/`final_info` entries of `info` are Gymnasium's own. Values travel as msgpack
    (`encoding="json"` for JSON) in their native dtypes and shapes; every reset and step carries the
    next sequence number, so a request whose answer was lost, or that was refused as busy, is resent
    up to `retries` times and never runs twice. A daemon thread keeps the env alive while this object lives
    (`keepalive=False`: not). `api_key` (default: $GYMSERVE_API_KEY) is the tenant's key of a farm with
    tenants. `direct=True` steps it at the URL its replica advertises, and `retry_window` (seconds,
    default 120) rides a move of the env, a server or router restart, and `stream` steps over the WebSocket stream,
    as for `RemoteEnv`. Other keyword arguments go to each sub-env's constructor.
    Failures are `gymserve.client.ClientError`s, as for `RemoteEnv`.
    """

    def __init__(
        self,
        base_url: str,
        env_id: str,
        num_envs: int,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
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
        name = AUTORESET_NAMES[autoreset_mode] if isinstance(autoreset_mode, AutoresetMode) else autoreset_mode
        if name not in AUTORESET_NAMES.values() or encoding not in ENCODINGS:
            raise ValueError(
                f"autoreset_mode must be one of {sorted(AUTORESET_NAMES.values())} (or an AutoresetMode) "
                f"and encoding one of {sorted(ENCODINGS)}"
            )
        self.render_mode = render_mode
        optional = {"num_envs": num_envs, "autoreset_mode": name, "max_episode_steps": max_episode_steps}
        body = create(env_id, render_mode, kwargs, {**optional, "ttl": ttl, "snapshot": snapshot}, wrappers, labels)
        direct_to = direct_session(direct, timeout, compress, api_key)
        reach = Reach(base_url, timeout, retries, compress, api_key, retry_window)
        media_type = ENCODINGS[encoding]
        self._attach(
            *self._connect(reach, keepalive, lambda h: V2Protocol(h, body, media_type, direct=direct_to, stream=stream))
        )

    def _attach(self, http: HttpSession, remote: V2Protocol) -> None:
        self._http: HttpSession = http
        self._remote = remote
        self._pending: Callable[[], tuple[Any, Any, Any, Any, dict[str, Any]]] | None = None  # a step_async's answer
        created = remote.created
        self.num_envs = int(created["num_envs"])
        self.action_space = remote.action_space
        self.observation_space = remote.observation_space
        self.single_action_space = spaces.rebuild_space(created["single_action_space"])
        self.single_observation_space = spaces.rebuild_space(created["single_observation_space"])
        self.render_mode = created["render_mode"]
        mode = created["autoreset_mode"]
        self.metadata = {"autoreset_mode": next(m for m, n in AUTORESET_NAMES.items() if n == mode)}
        env_id = created["env_id"]
        self.spec = gym.spec(env_id) if env_id in gym.envs.registry else None
        self._lease_for(remote)

    def snapshot(self) -> bytes:
        """The vector env's state on the server as an opaque blob signed by the farm;
        `RemoteVectorEnv(url, env_id, num_envs, snapshot=blob)` restores it on any replica of the farm."""
        return self._open().snapshot()

    def fork(self, *, ttl: float | None = None, labels: Mapping[str, str] | None = None) -> RemoteVectorEnv:
        """A new RemoteVectorEnv (its own connection) for a fork of this vector env on the server: every sub-env in
        exactly its state, random generators included, so the same actions give the same trajectories."""
        twin, http, forked = self._twin(self._open(), ttl, labels)
        twin._attach(http, forked)
        return twin

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every sub-env (or those of `options["reset_mask"]`); an int seed seeds sub-env i with seed + i."""
        remote = self._open()
        if seed is None or isinstance(seed, (int, np.integer)):
            super().reset(seed=None if seed is None else int(seed))
            wire_seed: Any = None if seed is None else int(seed)
        else:
            wire_seed = [None if s is None else int(s) for s in seed]
        obs, info = remote.reset(wire_seed, options)
        return obs, self._vector_info(info)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminations, truncations, info = self._open().step(actions)
        return obs, rewards, terminations, truncations, self._vector_info(info)

    def step_async(self, actions: Any) -> None:
        """Send the step now and return: the farm steps while the learner computes; `step_wait()` gives its answer.
        On the stream the step is one message sent; over HTTP a thread of this env's sends it."""
        self._pending = self._open().step_begin(actions)

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The answer to the step `step_async` sent (as `step` returns it)."""
        if self._pending is None:
            raise NoAsyncCallError("step_wait() without a step_async() before it", "step")
        pending, self._pending = self._pending, None
        obs, rewards, terminations, truncations, info = pending()
        return obs, rewards, terminations, truncations, self._vector_info(info)

    def render(self) -> tuple[Any, ...] | None:
        remote = self._open()
        return None if self.render_mode is None else remote.render()

    def info(self) -> dict[str, Any]:
        """What the server knows about this vector env: steps (env-steps), episodes, seq, TTL, owner, spaces."""
        return self._open().info()

    def _open(self) -> V2Protocol:
        """The vector env on the server; EnvClosed once this RemoteVectorEnv was closed, AlreadyPendingCallError
        while a step_async() waits for its step_wait()."""
        if self._remote.instance_id is None:
            raise EnvClosed("this RemoteVectorEnv was closed; make a new one")
        if self._pending is not None:
            raise AlreadyPendingCallError("a step_async() waits for its step_wait()", "step")
        return self._remote

    def close_extras(self, **kwargs: Any) -> None:
        """Delete the vector env on the server (after the answer of a step_async still pending)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):  # closing: the step's outcome no longer matters
                pending()
        self._release(self._remote)

    def __enter__(self) -> RemoteVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _vector_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """Gymnasium keeps per-sub-env values it cannot stack (final_obs) in object arrays; the wire carries
        those as lists, which become object arrays again (only where the `_key` mask says it is per sub-env)."""
        out: dict[str, Any] = {}
        for key, value in info.items():
            if isinstance(value, dict):
                value = self._vector_info(value)
            elif isinstance(value, list) and len(value) == self.num_envs and f"_{key}" in info:
                array = np.empty(self.num_envs, dtype=object)
                for i, item in enumerate(value):
                    array[i] = item
                value = array
            out[key] = value
        return out
