"""RemoteEnv over /v1: the seed's JSON routes and wire format; a step is never resent (once the env exists, only a
refused connection rides the retry window: such a request never reached the server)."""

from __future__ import annotations

from typing import Any

import orjson

from ..codec import seed as codec
from ..codec import spaces as space_codec
from .http import HttpSession

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class V1Protocol:
    """An env created over /v1, its spaces rebuilt from the seed's descriptions."""

    def __init__(self, http: HttpSession, create: dict[str, Any]) -> None:
        self.http = http
        self.instance_id: str | None = self._call("POST", "/v1/envs/", create, ride=False)["instance_id"]
        self._path = f"/v1/envs/{self.instance_id}"
        self.action_space = space_codec.rebuild(self._call("GET", f"{self._path}/action_space/")["info"])
        self.observation_space = space_codec.rebuild(self._call("GET", f"{self._path}/observation_space/")["info"])

    def _call(self, method: str, path: str, body: Any = None, *, ride: bool = True) -> Any:
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        reply = self.http.send(method, path, data, _HEADERS, ride=ride).checked()
        return orjson.loads(reply.data) if reply.data else None

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = seed
        if options is not None:
            body["options"] = options
        answer = self._call("POST", f"{self._path}/reset/", body)
        return codec.observation_for(self.observation_space, answer["observation"]), answer.get("info", {})

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        answer = self._call("POST", f"{self._path}/step/", {"action": codec.to_jsonable(action)})
        obs = codec.observation_for(self.observation_space, answer["observation"])
        return obs, answer["reward"], answer["terminated"], answer["truncated"], answer["info"]

    def render(self) -> Any:
        return codec.decode_frame(self._call("GET", f"{self._path}/render/")["render_frame"])

    def close(self) -> None:
        if self.instance_id is not None:
            self._path, self.instance_id = f"/v1/envs/{self.instance_id}/", None
            self._call("DELETE", self._path)
