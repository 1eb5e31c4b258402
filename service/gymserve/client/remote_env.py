"""RemoteEnv: a gymnasium.Env that forwards every call to an env held by a gymserve server."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from ..codec import spaces as space_codec
from ..codec import v1 as codec
from .http import HttpSession


class RemoteEnv(gym.Env[Any, Any]):
    """`RemoteEnv("http://127.0.0.1:8000", "CartPole-v1")` behaves like `gymnasium.make("CartPole-v1")`.

    Spaces are rebuilt from the server's descriptions and observations are decoded to the dtype and
    shape of the observation space, so training code runs unchanged.
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
        **kwargs: Any,
    ) -> None:
        self.render_mode = render_mode
        self._http = HttpSession(base_url, timeout=timeout)
        self.instance_id: str | None = None
        make_kwargs = dict(kwargs)
        if render_mode is not None:
            make_kwargs["render_mode"] = render_mode
        body: dict[str, Any] = {"env_id": env_id, "kwargs": make_kwargs}
        if max_episode_steps is not None:
            body["max_episode_steps"] = max_episode_steps
        if ttl is not None:
            body["ttl"] = ttl
        created = self._http.request("POST", "/v1/envs/", body)
        self.instance_id = created["instance_id"]
        self._path = f"/v1/envs/{self.instance_id}"
        self.action_space = space_codec.rebuild(self._http.request("GET", f"{self._path}/action_space/")["info"])
        self.observation_space = space_codec.rebuild(
            self._http.request("GET", f"{self._path}/observation_space/")["info"]
        )
        self.spec = gym.spec(env_id) if env_id in gym.envs.registry else None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = int(seed)
        if options is not None:
            body["options"] = options
        answer = self._http.request("POST", f"{self._path}/reset/", body)
        return codec.observation_for(self.observation_space, answer["observation"]), answer.get("info", {})

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        answer = self._http.request("POST", f"{self._path}/step/", {"action": space_codec.to_jsonable(action)})
        obs = codec.observation_for(self.observation_space, answer["observation"])
        return obs, answer["reward"], answer["terminated"], answer["truncated"], answer["info"]

    def render(self) -> Any:
        if self.render_mode is None:
            return None
        return codec.decode_frame(self._http.request("GET", f"{self._path}/render/")["render_frame"])

    def close(self) -> None:
        """Delete the env on the server; calling it again does nothing."""
        if self.instance_id is not None:
            instance_id, self.instance_id = self.instance_id, None
            try:
                self._http.request("DELETE", f"/v1/envs/{instance_id}/")
            finally:
                self._http.close()
        super().close()
