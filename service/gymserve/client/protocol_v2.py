"""RemoteEnv over /v2: native values as msgpack (or JSON), and numbered resets and steps that are safe to resend."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgpack
import msgspec

from ..codec import spaces, values
from ..pipeline import models
from .errors import ConnectionFailed, RemoteError
from .http import HttpSession, auth_headers
from .stream import StreamBroken, StreamChannel

ENCODINGS = {"msgpack": values.MSGPACK, "json": values.JSON}
T = TypeVar("T")


def create_body(env_id: str, render_mode: str | None, kwargs: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """The body of a create, by the server's own declaration: the env's constructor kwargs (with render_mode), and
    the optional fields that are set (a name the server does not know is a TypeError here, before any request)."""
    kwargs = {**kwargs, "render_mode": render_mode} if render_mode is not None else dict(kwargs)
    body = models.CreateRequest(env_id=env_id, kwargs=kwargs, **{k: v for k, v in optional.items() if v})
    return {name: value for name in body.__struct_fields__ if (value := getattr(body, name)) is not None}


def session(
    base_url: str, timeout: float, retries: int, compress: bool, api_key: str | None = None, retry_window: float = 0.0
) -> HttpSession:
    return HttpSession(
        base_url,
        timeout=timeout,
        retries=retries,
        headers={**({"Accept-Encoding": "gzip"} if compress else {}), **auth_headers(api_key)},
        retry_window=retry_window,
    )


def direct_session(
    wanted: bool, timeout: float, compress: bool, api_key: str | None = None
) -> Callable[[str], HttpSession] | None:
    """What makes the session to an env's direct_url: one try per request and no retry window, since the router is
    the fallback."""
    return (lambda url: session(url, timeout, 0, compress, api_key)) if wanted else None


def opened(http: HttpSession, connect: Callable[[HttpSession], T]) -> T:
    """`connect(http)`, closing the session if it fails (the create was refused, or never reached the server)."""
    try:
        return connect(http)
    except BaseException:
        http.close()
        raise


class V2Protocol:
    """An env created over /v2. Every reset and step carries the next sequence number, so that a request
    whose answer was lost is resent as it was and the server answers it again without running it twice.
    Every call on the env, once created, rides the session's retry window (HttpSession.send's `ride`)."""

    def __init__(
        self,
        http: HttpSession,
        create: dict[str, Any] | None,
        media_type: str = values.MSGPACK,
        *,
        info: dict[str, Any] | None = None,
        direct: Callable[[str], HttpSession] | None = None,
        stream: bool | str = False,
    ) -> None:
        """Create an env from `create`, or (`info`) take on one the server already made (a fork).

        `direct`: given the direct_url the owner advertises at create, a session to it; resets and steps then go
        there, and back to `http` (the router) for good once it does not answer (a numbered request is safe to
        resend: the server never runs it twice)."""
        self.http = http
        self.media_type = media_type
        if info is None:
            assert create is not None
            info = self._create(create)
        self.created = info  # what the server said about the env when it made it
        url = info.get("direct_url")
        self.direct: HttpSession | None = direct(url) if direct is not None and isinstance(url, str) else None
        self.instance_id: str | None = info["instance_id"]
        self.seq: int = info["seq"]
        self.path = self._path = f"/v2/envs/{self.instance_id}"
        self.action_space = spaces.rebuild_space(info["action_space"])
        self.observation_space = spaces.rebuild_space(info["observation_space"])
        self.stream: StreamChannel | None = None
        self._overlap: ThreadPoolExecutor | None = None  # the thread of step_begin(overlap=True) over HTTP
        if stream not in (True, False, "auto"):
            raise ValueError(f"stream must be 'auto', True or False, got {stream!r}")
        if stream and self.direct is None:  # direct: steps go to the env's pod over HTTP, as asked
            try:
                self.stream = StreamChannel(
                    self.http.base_url, info["instance_id"], self.http.headers, self.http.timeout
                )
            except StreamBroken:
                if stream is True:
                    raise

    def _create(self, create: dict[str, Any]) -> Any:
        """A create named by a random Idempotency-Key: resent, like a step, when its answer is lost, and then
        answered with the env it made (adopted, not leaked); a resend that finds the first still running waits."""
        key = {"Idempotency-Key": str(uuid.uuid4())}
        # A snapshot travels as msgpack bin or JSON base64, as msgspec writes them (codec.values has no bytes).
        data = None
        if "snapshot" in create:
            encode = msgspec.msgpack.encode if values.is_msgpack(self.media_type) else msgspec.json.encode
            data = encode({k: v for k, v in create.items() if k != "kwargs" or v})
        for attempt in range(self.http.retries + 1):
            try:  # not ridden: a wrong URL or a farm that is down fails the create within the retries
                return self._call("POST", "/v2/envs", create, headers=key, data=data, ride=False)
            except RemoteError as err:
                if err.code != "idempotency_in_flight" or attempt == self.http.retries:
                    raise
                time.sleep(self.http.backoff * 2**attempt)
        raise AssertionError("not reached")

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        resend: bool = True,
        ride: bool = True,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        http: HttpSession | None = None,
    ) -> Any:
        """`body` (native values) or `data` (already encoded in this protocol's media type); the answer decoded.
        `http`: another session than the env's (the direct path)."""
        headers = {"Accept": self.media_type, **(headers or {})}
        if body is not None or data is not None:
            data = values.dumps(body, self.media_type) if data is None else data
            headers["Content-Type"] = self.media_type
        reply = (http or self.http).send(method, path, data, headers, resend=resend, retry_busy=True, ride=ride)
        reply = reply.checked()
        return values.loads(reply.data, reply.media_type or values.JSON, "answer") if reply.data else None

    def _sequenced(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send the reset or step numbered once: every resend, on either path, is the same request with the same seq."""
        return self._begin(kind, body, overlap=False)()

    def _begin(self, kind: str, body: dict[str, Any], overlap: bool) -> Callable[[], dict[str, Any]]:
        """The numbered call sent now (on the stream), or (`overlap`) sent over HTTP by a thread of its own; the
        call returned waits for its answer. Nothing else may be sent on this env before it was called."""
        numbered = {**body, "seq": self.seq + 1}
        sent = self.stream is not None and self._stream_send(kind, numbered)

        def answer() -> dict[str, Any]:
            got = self._stream_answer() if sent else None
            if got is None:
                got = self._over_http(kind, numbered)
            self.seq = got["seq"]
            return got

        if sent or not overlap:
            return answer
        if self._overlap is None:
            self._overlap = ThreadPoolExecutor(1, thread_name_prefix="gymserve-step")
        return self._overlap.submit(answer).result

    def _over_http(self, kind: str, numbered: dict[str, Any]) -> dict[str, Any]:
        answer = None
        if self.direct is not None:
            try:
                answer = self._call("POST", f"{self._path}/{kind}", numbered, http=self.direct)
            except ConnectionFailed:
                self.direct.close()  # the owner's own address does not answer: the router from now on
                self.direct = None
            except RemoteError as err:
                if not err.unavailable:
                    raise  # unavailable (the env moves): this call rides the router's retry window
        if answer is None:
            answer = self._call("POST", f"{self._path}/{kind}", numbered)
        return answer

    def _stream_send(self, kind: str, numbered: dict[str, Any]) -> bool:
        """The numbered call sent on the env's stream; False once the stream broke (then HTTP, for good)."""
        assert self.stream is not None
        try:
            self.stream.send(msgpack.packb({"op": kind, **values.to_wire(numbered, binary=True)}))
        except StreamBroken:
            self._stream_broke()
            return False
        return True

    def _stream_broke(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def _stream_answer(self) -> dict[str, Any] | None:
        """The stream's answer to the call sent; None to send it over HTTP instead: after an error answer (HTTP
        gives it with its status; nothing ran, errors use no number), or for good once the stream broke (a move
        closes it with 1012: HTTP rides the move, and the same seq never runs twice)."""
        if self.stream is None:
            return None
        try:
            data = self.stream.receive()
        except StreamBroken:
            self._stream_broke()
            return None
        answer = values.loads(data, values.MSGPACK, "answer")
        error = answer.get("error")
        if isinstance(error, dict) and error.get("code") == "step_timeout":  # it ran and got stuck: never resent
            raise RemoteError(
                504, str(error.get("message", "")), "step_timeout", error.get("details"), "env", retryable=False
            )
        return None if error is not None else answer

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        answer = self._sequenced("reset", {"seed": seed, "options": options})
        return answer["observation"], answer["info"]

    def step(self, action: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """A transition: a single env's (float reward, bool flags), or a vector env's (arrays, one per sub-env)."""
        return self.step_begin(action, overlap=False)()

    def step_begin(self, action: Any, overlap: bool = True) -> Callable[[], tuple[Any, Any, Any, Any, dict[str, Any]]]:
        """The step sent now; the call returned waits for its transition."""
        answer = self._begin("step", {"action": action}, overlap)

        def transition() -> tuple[Any, Any, Any, Any, dict[str, Any]]:
            got = answer()
            return got["observation"], got["reward"], got["terminated"], got["truncated"], got["info"]

        return transition

    def render(self) -> Any:
        return self._call("GET", f"{self._path}/render")["frame"]

    def snapshot(self) -> bytes:
        """The env's state as the server's signed blob (a read: resent if its answer is lost)."""
        headers = {"Accept": "application/octet-stream"}
        reply = self.http.send("GET", f"{self._path}/snapshot", None, headers, resend=True, retry_busy=True, ride=True)
        return reply.checked().data

    def fork(self, ttl: float | None, labels: Mapping[str, str] | None) -> dict[str, Any]:
        """The server's answer about a new fork of this env (not resent: a lost answer leaves the fork to its TTL)."""
        body = {k: v for k, v in (("ttl", ttl), ("labels", None if labels is None else dict(labels))) if v is not None}
        return self._call("POST", f"{self._path}/fork", body, resend=False)

    def info(self) -> dict[str, Any]:
        """What the server knows about this env: steps, episodes, seq, TTL, owner, spec."""
        return self._call("GET", self._path)

    def close(self) -> None:
        self._stream_broke()
        if self._overlap is not None:
            self._overlap.shutdown(wait=False)
            self._overlap = None
        if self.direct is not None:
            self.direct.close()
            self.direct = None
        if self.instance_id is not None:
            self.instance_id = None
            try:
                self._call("DELETE", self._path)
            except RemoteError as err:
                if err.status not in (404, 410):  # gone already (a resent delete, the TTL, a lost worker)
                    raise
