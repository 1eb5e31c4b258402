"""RemoteEnv over /v2: native values as msgpack (or JSON), and numbered resets and steps that are safe to resend."""

from __future__ import annotations

from typing import Any

from ..codec import native
from .http import HttpSession, RemoteError


class V2Protocol:
    """An env created over /v2. Every reset and step carries the next sequence number, so that a request
    whose answer was lost is resent as it was and the server answers it again without running it twice."""

    def __init__(self, http: HttpSession, create: dict[str, Any], media_type: str = native.MSGPACK) -> None:
        self.http = http
        self.media_type = media_type
        # A create is not numbered: it is resent only if it never reached the server (or was refused as busy).
        info = self._call("POST", "/v2/envs", create, resend=False)
        self.instance_id: str | None = info["instance_id"]
        self.seq: int = info["seq"]
        self._path = f"/v2/envs/{self.instance_id}"
        self.action_space = native.rebuild_space(info["action_space"])
        self.observation_space = native.rebuild_space(info["observation_space"])

    def _call(self, method: str, path: str, body: Any = None, *, resend: bool = True) -> Any:
        headers = {"Accept": self.media_type}
        data = None
        if body is not None:
            data = native.dumps(body, self.media_type)
            headers["Content-Type"] = self.media_type
        reply = self.http.send(method, path, data, headers, resend=resend, retry_busy=True).checked()
        return native.loads(reply.data, reply.media_type or native.JSON, "answer") if reply.data else None

    def _sequenced(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._call("POST", f"{self._path}/{kind}", {**body, "seq": self.seq + 1})
        self.seq = answer["seq"]
        return answer

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        answer = self._sequenced("reset", {"seed": seed, "options": options})
        return answer["observation"], answer["info"]

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        answer = self._sequenced("step", {"action": action})
        return answer["observation"], answer["reward"], answer["terminated"], answer["truncated"], answer["info"]

    def render(self) -> Any:
        return self._call("GET", f"{self._path}/render")["frame"]

    def info(self) -> dict[str, Any]:
        """What the server knows about this env: steps, episodes, seq, TTL, owner, spec."""
        return self._call("GET", self._path)

    def close(self) -> None:
        if self.instance_id is not None:
            self.instance_id = None
            try:
                self._call("DELETE", self._path)
            except RemoteError as err:
                if err.status not in (404, 410):  # gone already (a resent delete, the TTL, a lost worker)
                    raise
