"""/v2 over raw HTTP on a real two-worker gymserve: every answer, success or error, is held to the OpenAPI document.

Each request opens a fresh connection, so it lands on either worker and requests for the other
worker's envs are forwarded; answers must not care.
"""

from __future__ import annotations

import io
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

import gymnasium as gym
import msgpack
import numpy as np
import orjson
import pytest
import requests
from gymnasium.wrappers import AddRenderObservation
from jsonschema import Draft202012Validator, validators
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gymserve.api.openapi import DOCUMENT
from gymserve.app import create_app
from gymserve.codec import spaces as space_codec
from gymserve.codec import values as native
from gymserve.settings import Settings
from servers import start_server

pytestmark = pytest.mark.integration

MSGPACK = native.MSGPACK
JSON = native.JSON
LOST_ID = "itest.7-1." + "0" * 32  # a worker slot this two-worker replica does not have
_DOC_URI = "urn:gymserve:openapi"
# msgpack bins decode to bytes; the document describes them as strings with a contentMediaType.
_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("string", lambda _c, v: isinstance(v, (str, bytes))),
)


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """The OpenAPI document, and the check of one real answer against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        validate_openapi(document)
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(_DOC_URI, resource)
        self.paths = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in document["paths"]]
        self.checked: set[tuple[str, str, int]] = set()

    def _entry(self, path: str, method: str, status: int) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The documented response and the pointer parts that lead to it (following a $ref)."""
        template = next((t for rx, t in self.paths if rx.match(path)), None)
        operation = self.document["paths"][template].get(method) if template else None
        if operation is None:  # no such route or method: the shared error responses
            parts: tuple[str, ...] = ("components", "responses", str(status))
        else:
            responses = operation["responses"]
            assert str(status) in responses, f"{method.upper()} {template} does not document {status}"
            parts = ("paths", template or "", method, "responses", str(status))
        entry = self._resolve(parts)
        if "$ref" in entry:
            parts = tuple(entry["$ref"].removeprefix("#/").split("/"))
            entry = self._resolve(parts)
        self.checked.add((template or path, method, status))
        return entry, parts

    def _resolve(self, parts: tuple[str, ...]) -> dict[str, Any]:
        node: Any = self.document
        for part in parts:
            node = node[part]
        return node

    def check(self, resp: requests.Response) -> Any:
        """Validate `resp` against the document; returns its body decoded (native values for JSON/msgpack)."""
        assert resp.request.method is not None and resp.request.url is not None
        method = resp.request.method.lower()
        entry, parts = self._entry(urlsplit(resp.request.url).path, method, resp.status_code)
        for header, spec in entry.get("headers", {}).items():
            if spec.get("required"):
                assert header in resp.headers, f"{resp.status_code} answers must carry {header}"
        content = entry.get("content")
        if not content:
            assert resp.content == b"", "an answer without documented content must be empty"
            return None
        media_type = resp.headers["Content-Type"].split(";")[0]
        assert media_type in content, f"{media_type} is not documented for {resp.status_code}"
        tree: Any = resp.content
        if media_type == JSON:
            tree = orjson.loads(resp.content)
        elif native.is_msgpack(media_type):
            tree = msgpack.unpackb(resp.content)
        elif media_type.startswith("text/"):
            tree = resp.text
        schema = {"$ref": _DOC_URI + _pointer(*parts, "content", media_type, "schema")}
        _Validator(schema, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(tree)
        return native.loads(resp.content, media_type) if media_type == JSON or native.is_msgpack(media_type) else tree


class Api:
    """Raw /v2 requests on fresh connections; every answer is checked against the contract."""

    def __init__(self, url: str, contract: Contract) -> None:
        self.url = url
        self.contract = contract

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        send_as: str = JSON,
        accept: str = JSON,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[requests.Response, Any]:
        all_headers = {"Accept": accept, **(headers or {})}
        if body is not None:
            data = native.dumps(body, send_as)
            all_headers.setdefault("Content-Type", send_as)
        resp = requests.request(method, self.url + path, data=data, headers=all_headers, timeout=30)
        return resp, self.contract.check(resp)

    def create(self, env_id: str = "CartPole-v1", **fields: Any) -> str:
        resp, info = self.call("POST", "/v2/envs", {"env_id": env_id, **fields})
        assert resp.status_code == 201, resp.text
        return info["instance_id"]

    def steps_of(self, instance_id: str) -> int:
        return self.call("GET", f"/v2/envs/{instance_id}")[1]["steps"]


def expect_error(resp: requests.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error["details"].get("field") == field, error
    return error


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, np.generic)):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def contract(server: Any) -> Contract:
    served = requests.get(server.url + "/v2/openapi.json", timeout=30)
    assert served.status_code == 200 and served.json() == orjson.loads(orjson.dumps(DOCUMENT))
    return Contract(served.json())


@pytest.fixture(scope="module")
def api(server: Any, contract: Contract) -> Api:
    return Api(server.url, contract)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, contract: Contract) -> Any:
    """A server with tight limits: one env in all, 4 KiB bodies, CartPole only."""
    srv = start_server(
        tmp_path_factory.mktemp("limited"),
        max_envs_per_worker=1,
        max_envs=1,
        max_body_bytes=4096,
        allowed_envs="CartPole-v1",
        retry_after_seconds=7,
    )
    yield Api(srv.url, contract)
    srv.stop()


def test_the_document_is_valid_openapi_3_1_and_names_every_v2_route_and_method(contract: Contract) -> None:
    validate_openapi(contract.document)
    app = create_app(Settings.from_env({}, node_id="test"))
    routes = {
        (re.sub(r"<(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v2/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in contract.document["paths"].items() for method in item}
    assert routes == documented - {(path, "parameters") for path in contract.document["paths"]}


def test_a_json_session_from_create_to_delete_matches_a_local_env(api: Api) -> None:
    resp, info = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1", "ttl": 60, "max_episode_steps": 50})
    assert resp.status_code == 201 and resp.headers["Location"] == f"/v2/envs/{info['instance_id']}"
    iid = info["instance_id"]
    assert info["env_id"] == "CartPole-v1" and info["ttl"] == 60 and 59 < info["ttl_left"] <= 60
    assert info["spec"]["max_episode_steps"] == 50 and info["seq"] == 0 and info["gymnasium_version"] == gym.__version__
    local = gym.make("CartPole-v1", max_episode_steps=50)
    assert space_codec.rebuild_space(info["observation_space"]) == local.observation_space
    assert space_codec.rebuild_space(info["action_space"]) == local.action_space
    assert info["owner"]["node"] == "itest" and iid.startswith(f"itest.{info['owner']['worker']}-")

    _, answer = api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 5})
    want, _ = local.reset(seed=5)
    assert same(answer["observation"], want) and answer["seq"] == 1
    for n in range(3):
        _, answer = api.call("POST", f"/v2/envs/{iid}/step", {"action": n % 2})
        want, reward, terminated, truncated, _ = local.step(n % 2)
        assert same(answer["observation"], want) and answer["reward"] == reward == 1.0
        assert (answer["terminated"], answer["truncated"], answer["seq"]) == (terminated, truncated, n + 2)

    _, got = api.call("GET", f"/v2/envs/{iid}")
    assert (got["steps"], got["episodes"], got["seq"], got["seed"]) == (3, 1, 4, 5)
    _, listed = api.call("GET", "/v2/envs")
    assert iid in {e["instance_id"] for e in listed["envs"]}
    _, alive = api.call("POST", f"/v2/envs/{iid}/keepalive")
    assert alive["ttl_left"] > 59 and alive["expires_at"] > got["created_at"]
    resp, _ = api.call("DELETE", f"/v2/envs/{iid}")
    assert resp.status_code == 204
    expect_error(api.call("GET", f"/v2/envs/{iid}")[0], 404, "unknown_instance")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Taxi-v4", "Blackjack-v1", "MountainCarContinuous-v0"])
def test_msgpack_answers_are_the_local_envs_values_bit_for_bit(api: Api, env_id: str) -> None:
    iid = api.create(env_id)
    local = gym.make(env_id)
    local.action_space.seed(3)
    _, answer = api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 3}, send_as=MSGPACK, accept=MSGPACK)
    want, info = local.reset(seed=3)
    assert same(answer["observation"], want) and same(answer["info"], info)
    for _ in range(20):
        action = local.action_space.sample()
        _, answer = api.call("POST", f"/v2/envs/{iid}/step", {"action": action}, send_as=MSGPACK, accept=MSGPACK)
        want, reward, terminated, truncated, info = local.step(action)
        assert same(answer["observation"], want) and same(answer["info"], info)  # Taxi: action_mask stays int8
        assert answer["reward"] == reward and answer["terminated"] == terminated
        if terminated or truncated:
            break


def test_json_and_msgpack_answers_carry_the_same_information(api: Api) -> None:
    ids = [api.create("Taxi-v4"), api.create("Taxi-v4")]
    answers = [
        api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 9}, send_as=media_type, accept=media_type)[1]
        for iid, media_type in zip(ids, (JSON, MSGPACK), strict=True)
    ]
    assert same(answers[0], answers[1])
    answers = [
        api.call("POST", f"/v2/envs/{iid}/step", {"action": 1}, send_as=media_type, accept=media_type)[1]
        for iid, media_type in zip(ids, (JSON, MSGPACK), strict=True)
    ]
    assert same(answers[0], answers[1]) and answers[0]["info"]["action_mask"].dtype == np.int8


def test_frame_observations_stay_uint8_and_large_answers_are_gzipped(api: Api) -> None:
    iid = api.create("CartPole-v1", kwargs={"render_mode": "rgb_array"}, wrappers=["AddRenderObservation"])
    local = AddRenderObservation(gym.make("CartPole-v1", render_mode="rgb_array"))
    resp, answer = api.call(
        "POST", f"/v2/envs/{iid}/reset", {"seed": 2}, accept=MSGPACK, headers={"Accept-Encoding": "gzip"}
    )
    want, _ = local.reset(seed=2)
    assert answer["observation"].dtype == np.uint8 and answer["observation"].shape == (400, 600, 3)
    assert same(answer["observation"], want)
    assert resp.headers["Content-Encoding"] == "gzip" and int(resp.headers["Content-Length"]) < 50_000
    resp, answer = api.call("POST", f"/v2/envs/{iid}/step", {"action": 0}, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers and same(answer["observation"], local.step(0)[0])
    small, _ = api.call("POST", f"/v2/envs/{api.create()}/reset", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers  # a CartPole answer is not worth the CPU


def test_render_is_png_for_frames_text_for_ansi_and_native_on_request(api: Api) -> None:
    pygame = pytest.importorskip("pygame")
    iid = api.create("CartPole-v1", kwargs={"render_mode": "rgb_array"})
    local = gym.make("CartPole-v1", render_mode="rgb_array")
    api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 4})
    local.reset(seed=4)
    want = local.render()
    resp, body = api.call("GET", f"/v2/envs/{iid}/render", accept="*/*")
    assert resp.headers["Content-Type"] == "image/png" and len(body) < 20_000
    frame = pygame.surfarray.array3d(pygame.image.load(io.BytesIO(body), "frame.png")).transpose(1, 0, 2)
    assert np.array_equal(frame, want)
    _, answer = api.call("GET", f"/v2/envs/{iid}/render", accept=MSGPACK)
    assert same(answer["frame"], want)

    ansi = api.create("FrozenLake-v1", kwargs={"render_mode": "ansi"})
    api.call("POST", f"/v2/envs/{ansi}/reset", {"seed": 0})
    resp, text = api.call("GET", f"/v2/envs/{ansi}/render", accept="*/*")
    assert resp.headers["Content-Type"].startswith("text/plain") and "FFF" in text
    assert api.call("GET", f"/v2/envs/{ansi}/render", accept=JSON)[1]["frame"] == text

    plain = api.create()
    error = expect_error(api.call("GET", f"/v2/envs/{plain}/render")[0], 422, "not_supported", "render_mode")
    assert "render_mode" in error["message"]


def decoded_png(body: bytes) -> np.ndarray:
    pygame = pytest.importorskip("pygame")
    return np.asarray(pygame.surfarray.array3d(pygame.image.load(io.BytesIO(body), "frame.png")))


def test_frames_are_the_renders_a_viewer_sees_and_episodes_are_reported_as_they_finish(api: Api) -> None:
    iid = api.create("CartPole-v1", kwargs={"render_mode": "rgb_array"})
    expect_error(api.call("GET", f"/v2/envs/{iid}/frame")[0], 409, "reset_needed")
    api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 4})
    resp, frame = api.call("GET", f"/v2/envs/{iid}/frame", accept="*/*")
    assert resp.headers["Content-Type"] == "image/png"
    render = api.call("GET", f"/v2/envs/{iid}/render", accept="image/png")[1]
    assert np.array_equal(decoded_png(frame), decoded_png(render))
    expect_error(api.call("GET", f"/v2/envs/{iid}/frame?sub_env=1")[0], 422, "invalid_value", "sub_env")
    expect_error(api.call("GET", f"/v2/envs/{iid}/frame?sub_env=-1")[0], 422, "invalid_value", "sub_env")
    local = gym.make("CartPole-v1")
    local.reset(seed=4)
    total, length, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, _ = local.step(1)
        total, length, done = total + float(reward), length + 1, terminated or truncated
        api.call("POST", f"/v2/envs/{iid}/step", {"action": 1})
    _, info = api.call("GET", f"/v2/envs/{iid}")
    assert info["last_episode"] == {"return": total, "length": length}
    assert info["recent_episodes"] == {"returns": [total], "lengths": [length]}
    listed = {e["instance_id"]: e for e in api.call("GET", "/v2/envs")[1]["envs"]}
    assert listed[iid]["last_episode"] == info["last_episode"] and listed[iid]["render_mode"] == "rgb_array"

    ansi = api.create("FrozenLake-v1", kwargs={"render_mode": "ansi"})
    api.call("POST", f"/v2/envs/{ansi}/reset", {"seed": 0})
    resp, text = api.call("GET", f"/v2/envs/{ansi}/frame", accept="*/*")
    assert resp.headers["Content-Type"].startswith("text/plain") and "FFF" in text
    plain = api.create()
    expect_error(api.call("GET", f"/v2/envs/{plain}/frame")[0], 422, "not_supported", "render_mode")
    vec = api.create("CartPole-v1", num_envs=2, kwargs={"render_mode": "rgb_array"})
    api.call("POST", f"/v2/envs/{vec}/reset", {"seed": [1, 2]})
    first = api.call("GET", f"/v2/envs/{vec}/frame?sub_env=0", accept="*/*")[1]
    assert first != api.call("GET", f"/v2/envs/{vec}/frame?sub_env=1", accept="*/*")[1]


def test_resending_the_last_seq_returns_the_same_answer_without_stepping_again(api: Api) -> None:
    iid = api.create()
    api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 1, "seq": 1}, send_as=MSGPACK)
    first, _ = api.call("POST", f"/v2/envs/{iid}/step", {"action": 1, "seq": 2}, send_as=MSGPACK, accept=MSGPACK)
    again, _ = api.call("POST", f"/v2/envs/{iid}/step", {"action": 1, "seq": 2}, send_as=MSGPACK, accept=MSGPACK)
    assert again.content == first.content and api.steps_of(iid) == 1
    # The resend may ask for another encoding: the same answer, re-encoded.
    as_json, answer = api.call("POST", f"/v2/envs/{iid}/step", {"action": 1, "seq": 2}, send_as=MSGPACK)
    assert as_json.headers["Content-Type"] == JSON and same(answer, native.loads(first.content, MSGPACK))
    assert api.steps_of(iid) == 1
    # A reset resent is not run again either: the env stays where the step left it.
    _, step3 = api.call("POST", f"/v2/envs/{iid}/step", {"action": 0, "seq": 3})
    assert api.steps_of(iid) == 2 and step3["seq"] == 3


@pytest.mark.parametrize(
    ("seq", "body", "why"),
    [(1, {"action": 0}, "in the past"), (9, {"action": 0}, "in the future"), (3, {"action": 0}, "cannot be resent")],
)
def test_a_seq_that_is_neither_next_nor_the_last_resent_is_409_saying_which_is_next(
    api: Api, seq: int, body: dict[str, Any], why: str
) -> None:
    iid = api.create()
    api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 1, "seq": 1})
    api.call("POST", f"/v2/envs/{iid}/step", {"action": 1, "seq": 2})
    api.call("POST", f"/v2/envs/{iid}/step", {"action": 1, "seq": 3})  # the last call: seq 3, action 1
    error = expect_error(api.call("POST", f"/v2/envs/{iid}/step", {**body, "seq": seq})[0], 409, "sequence_conflict")
    assert error["details"] == {"field": "seq", "expected": 4, "got": seq} and why in error["message"]
    assert "seq 4" in error["message"] and api.steps_of(iid) == 2


def test_resets_and_steps_share_the_sequence_and_errors_use_no_number(api: Api) -> None:
    iid = api.create()
    expect_error(api.call("POST", f"/v2/envs/{iid}/step", {"action": 0, "seq": 1})[0], 409, "reset_needed")
    assert api.call("POST", f"/v2/envs/{iid}/reset", {"seq": 1})[1]["seq"] == 1
    expect_error(api.call("POST", f"/v2/envs/{iid}/step", {"action": 5, "seq": 2})[0], 422, "invalid_value", "action")
    assert api.call("POST", f"/v2/envs/{iid}/step", {"action": 0, "seq": 2})[1]["seq"] == 2
    assert api.call("POST", f"/v2/envs/{iid}/step", {"action": 0})[1]["seq"] == 3  # no seq: runs, and counts
    expect_error(api.call("POST", f"/v2/envs/{iid}/step", {"action": 0, "seq": 3})[0], 409, "sequence_conflict")
    assert api.call("POST", f"/v2/envs/{iid}/reset", {"seed": 2, "seq": 4})[1]["seq"] == 4
    assert api.call("GET", f"/v2/envs/{iid}")[1]["seq"] == 4


def test_requests_for_the_other_workers_envs_are_forwarded_and_answered_alike(api: Api) -> None:
    ids: dict[int, str] = {}
    for _ in range(60):  # fresh connections land on either worker; create until both hold an env
        iid = api.create()
        ids.setdefault(int(iid.split(".")[1].split("-")[0]), iid)
        if len(ids) == 2:
            break
    assert len(ids) == 2
    forwarded = 0
    locals_ = {iid: gym.make("CartPole-v1") for iid in ids.values()}
    for n in range(12):  # interleaved: whichever worker takes the connections, it holds only one of the two envs
        for iid, local in locals_.items():
            body = {"seed": 6, "seq": 1} if n == 0 else {"action": n % 2, "seq": n + 1}
            resp, answer = api.call("POST", f"/v2/envs/{iid}/{'reset' if n == 0 else 'step'}", body, accept=MSGPACK)
            assert same(answer["observation"], local.reset(seed=6)[0] if n == 0 else local.step(n % 2)[0])
            forwarded += resp.headers.get("X-Gymserve-Forwarded") == "1"
    assert forwarded > 0, "some of 24 fresh connections reached the worker that does not own the env"
    listed = {e["instance_id"] for e in api.call("GET", "/v2/envs", accept=MSGPACK)[1]["envs"]}
    assert set(ids.values()) <= listed, "the list holds every worker's envs"


ERROR_CASES = {
    # name: (method, path template, body or raw bytes, headers, status, code, field)
    "body not JSON": ("POST", "/v2/envs", b"{nope", {"Content-Type": JSON}, 400, "bad_request", "body"),
    "body not a map": ("POST", "/v2/envs", b"[1]", {"Content-Type": JSON}, 400, "bad_request", "body"),
    "msgpack unreadable": ("POST", "/v2/envs", b"\xc1", {"Content-Type": MSGPACK}, 400, "bad_request", "body"),
    "no body for step": ("POST", "/v2/envs/{id}/step", b"", {}, 400, "bad_request", "body"),
    "no action": ("POST", "/v2/envs/{id}/step", {"seq": 1}, {}, 400, "missing_parameter", "action"),
    "no env_id": ("POST", "/v2/envs", {"ttl": 5}, {}, 400, "missing_parameter", "env_id"),
    "unknown id": ("POST", "/v2/envs/{unknown}/step", {"action": 0}, {}, 404, "unknown_instance", None),
    "malformed id": ("GET", "/v2/envs/..%2e%2e%5cetc", None, {}, 404, "unknown_instance", None),
    "unknown route": ("GET", "/v2/nothing", None, {}, 404, "not_found", None),
    "wrong method": ("PUT", "/v2/envs", None, {}, 405, "method_not_allowed", None),
    "step before reset": ("POST", "/v2/envs/{id}/step", {"action": 0}, {}, 409, "reset_needed", None),
    "seq from the future": ("POST", "/v2/envs/{id}/reset", {"seq": 5}, {}, 409, "sequence_conflict", "seq"),
    "lost with its worker": ("POST", "/v2/envs/" + LOST_ID + "/step", {"action": 0}, {}, 410, "instance_lost", None),
    "text body": ("POST", "/v2/envs/{id}/reset", b"seed=1", {"Content-Type": "text/plain"}, 415, None, "Content-Type"),
    "form body": ("POST", "/v2/envs", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None, None),
    "gzipped body": ("POST", "/v2/envs/{id}/reset", b"{}", {"Content-Encoding": "gzip"}, 415, None, "Content-Encoding"),
    "invalid action": ("POST", "/v2/envs/{id}/step", {"action": [0, 1]}, {}, 422, "invalid_value", "action"),
    "unknown field": ("POST", "/v2/envs/{id}/reset", {"sead": 1}, {}, 422, "invalid_value", "sead"),
    "bad seed": ("POST", "/v2/envs/{id}/reset", {"seed": -1}, {}, 422, "invalid_value", "seed"),
    "bad seq": ("POST", "/v2/envs/{id}/reset", {"seq": 0}, {}, 422, "invalid_value", "seq"),
    "bad options": ("POST", "/v2/envs/{id}/reset", {"options": [1]}, {}, 422, "invalid_value", "options"),
    "unknown env": ("POST", "/v2/envs", {"env_id": "NoSuchEnv-v0"}, {}, 422, "unknown_env_id", "env_id"),
    "bad kwarg": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "kwargs": {"x": 1}}, {}, 422, None, "kwargs.x"),
    "bad ttl": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "ttl": "long"}, {}, 422, "invalid_value", "ttl"),
    "ttl not finite": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "ttl": math.nan}, {}, 422, "invalid_value", "ttl"),
    "bad wrapper": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "wrappers": ["Evil"]}, {}, 422, None, "wrappers[0]"),
    "wrapper without frames": (
        "POST",
        "/v2/envs",
        {"env_id": "CartPole-v1", "wrappers": ["AddRenderObservation"]},
        {},
        422,
        None,
        "kwargs.render_mode",
    ),
    "num_envs zero": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "num_envs": 0}, {}, 422, None, "num_envs"),
    "num_envs too many": (
        "POST",
        "/v2/envs",
        {"env_id": "CartPole-v1", "num_envs": 10**6},
        {},
        422,
        "invalid_value",
        "num_envs",
    ),
    "num_envs not an int": ("POST", "/v2/envs", {"env_id": "CartPole-v1", "num_envs": "4"}, {}, 422, None, "num_envs"),
    "bad autoreset mode": (
        "POST",
        "/v2/envs",
        {"env_id": "CartPole-v1", "num_envs": 2, "autoreset_mode": "NextStep"},
        {},
        422,
        "invalid_value",
        "autoreset_mode",
    ),
    "autoreset mode of a single env": (
        "POST",
        "/v2/envs",
        {"env_id": "CartPole-v1", "autoreset_mode": "same_step"},
        {},
        422,
        "invalid_value",
        "autoreset_mode",
    ),
    "auto_reset of a vector env": (
        "POST",
        "/v2/envs",
        {"env_id": "CartPole-v1", "num_envs": 2, "auto_reset": True},
        {},
        422,
        "invalid_value",
        "auto_reset",
    ),
    "vector action of the wrong shape": (
        "POST",
        "/v2/envs/{vec}/step",
        {"action": [0, 1]},
        {},
        422,
        "invalid_value",
        "action",
    ),
    "vector seeds of the wrong length": (
        "POST",
        "/v2/envs/{vec}/reset",
        {"seed": [1, 2]},
        {},
        422,
        "invalid_value",
        "seed",
    ),
    "seed list for a single env": ("POST", "/v2/envs/{id}/reset", {"seed": [1]}, {}, 422, "invalid_value", "seed"),
    "batch too large": (
        "POST",
        "/v2/batch/step",
        {"items": [{"id": str(n), "action": 0} for n in range(2000)]},
        {},
        422,
        "invalid_value",
        "items",
    ),
    "bad ndarray": (
        "POST",
        "/v2/envs/{id}/step",
        b'{"action": {"$nd": {"dtype": "float32", "shape": [2], "data": [1.0]}}}',
        {"Content-Type": JSON},
        422,
        "invalid_value",
        "action.$nd.data",
    ),
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_every_error_has_its_status_code_and_field_and_matches_the_contract(api: Api, name: str) -> None:
    method, path, body, headers, status, code, field = ERROR_CASES[name]
    if "{id}" in path:
        path = path.replace("{id}", api.create())
    if "{vec}" in path:
        path = path.replace("{vec}", api.create(num_envs=3))
    if "{unknown}" in path:  # an id of a live worker (its current generation) that names no env
        path = path.replace("{unknown}", api.create()[:-32] + "0" * 32)
    if isinstance(body, bytes):
        resp, _ = api.call(method, path, data=body, headers=headers)
    else:
        resp, _ = api.call(method, path, body, headers=headers)
    error = expect_error(resp, status, code or resp.json()["error"]["code"], field)
    assert error["message"]


def test_a_vector_env_and_a_batch_answer_as_the_contract_says(api: Api) -> None:
    resp, info = api.call("POST", "/v2/envs", {"env_id": "CartPole-v1", "num_envs": 4, "autoreset_mode": "same_step"})
    assert resp.status_code == 201 and (info["num_envs"], info["autoreset_mode"]) == (4, "same_step")
    local = gym.make_vec("CartPole-v1", 4, vectorization_mode="sync")
    assert space_codec.rebuild_space(info["action_space"]) == local.action_space
    assert space_codec.rebuild_space(info["single_observation_space"]) == local.single_observation_space
    vec = info["instance_id"]
    _, answer = api.call("POST", f"/v2/envs/{vec}/reset", {"seed": 3}, accept=MSGPACK)
    assert same(answer["observation"], local.reset(seed=3)[0])
    _, answer = api.call("POST", f"/v2/envs/{vec}/step", {"action": [0, 1, 0, 1], "seq": 2}, accept=MSGPACK)
    assert answer["reward"].dtype == np.float64 and answer["terminated"].dtype == np.bool_
    single = api.create()
    assert api.call("GET", f"/v2/envs/{single}")[1]["single_action_space"] is None
    items = [{"id": single, "action": 0}, {"id": vec, "action": [1] * 4}]
    _, batch = api.call("POST", "/v2/batch/step", {"items": items})
    assert batch["results"][0]["error"]["code"] == "reset_needed" and batch["results"][1]["seq"] == 3


def test_limits_answer_403_413_and_503_with_retry_after(limited: Api) -> None:
    expect_error(limited.call("POST", "/v2/envs", {"env_id": "FrozenLake-v1"})[0], 403, "env_not_allowed", "env_id")
    iid = limited.create()
    huge = {"action": 0, "seq": 1, "pad": "x" * 5000}
    expect_error(limited.call("POST", f"/v2/envs/{iid}/step", huge)[0], 413, "payload_too_large")
    full, _ = limited.call("POST", "/v2/envs", {"env_id": "CartPole-v1"})
    expect_error(full, 503, "capacity_exceeded")
    assert full.headers["Retry-After"] == "7"
    assert limited.call("POST", f"/v2/envs/{iid}/reset")[0].status_code == 200  # existing envs stay reachable
    limited.call("DELETE", f"/v2/envs/{iid}")


GARBAGE = [b"", b"null", b"0", b'"x"', b"[]", b"{}", b'{"action": null}', b'{"seq": "1"}', b'{"$nd": 1}', b"\xff" * 10]


@pytest.mark.parametrize("route", ["", "/reset", "/step", "/keepalive"])
def test_garbage_never_gets_a_5xx(api: Api, route: str) -> None:
    path = "/v2/envs" + (f"/{api.create()}{route}" if route else "")
    for garbage in GARBAGE:
        for media_type in (JSON, MSGPACK):
            resp, _ = api.call("POST", path, data=garbage, headers={"Content-Type": media_type})
            assert resp.status_code < 500, (garbage, resp.text)


def test_the_lifecycle_routes_answer_as_the_contract_says(api: Api) -> None:
    """Labels, bulk delete, fork and snapshot (all tested in test_lifecycle.py), held to this contract too."""
    instance_id = api.create(labels={"run": "contract"})
    resp, listed = api.call("GET", "/v2/envs?label=run=contract")
    assert [e["instance_id"] for e in listed["envs"]] == [instance_id]
    resp, answer = api.call("DELETE", "/v2/envs?label=run=contract", accept=MSGPACK)
    assert resp.status_code == 200 and answer == {"deleted": 1}
    expect_error(api.call("DELETE", "/v2/envs")[0], 422, "invalid_value", "label")
    original = api.create()
    resp, fork = api.call("POST", f"/v2/envs/{original}/fork", accept=MSGPACK)
    assert resp.status_code == 201 and resp.headers["Location"] == f"/v2/envs/{fork['instance_id']}"
    resp, _ = api.call("GET", f"/v2/envs/{original}/snapshot", accept="application/octet-stream")
    if "GYMSERVE_SNAPSHOT_KEY" not in os.environ:  # this server has no key: snapshots are off, and say so
        assert "GYMSERVE_SNAPSHOT_KEY" in expect_error(resp, 422, "not_supported", "snapshot")["message"]


def test_a_stream_route_without_an_upgrade_says_what_it_is(api: Api) -> None:
    """The step stream itself is tested in pipeline/test_stream.py; here, its routes' plain answers and the contract."""
    iid = api.create()
    resp, body = api.call("GET", f"/v2/envs/{iid}/stream")
    assert resp.status_code == 200 and body == {"instance_id": iid, "upgrade": "websocket"}
    resp, body = api.call("GET", "/v2/stream")
    assert resp.status_code == 200 and body == {"upgrade": "websocket"}
    assert api.call("GET", f"/v2/envs/{LOST_ID}/stream")[0].status_code == 410


def test_every_operation_and_status_in_this_module_was_checked_against_the_contract(api: Api) -> None:
    """Runs last in this module: the answers above covered every operation (when the whole module ran)."""
    operations = {(t, m) for t, item in DOCUMENT["paths"].items() for m in item if m != "parameters"}
    seen = {(t, m) for t, m, _ in api.contract.checked}
    statuses = {s for _, _, s in api.contract.checked}
    if len(seen) < 3:
        pytest.skip("run with the rest of the module")
    assert operations - {("/v2/openapi.json", "get")} <= seen
    assert {200, 201, 204, 400, 403, 404, 405, 409, 410, 413, 415, 422, 503} <= statuses
