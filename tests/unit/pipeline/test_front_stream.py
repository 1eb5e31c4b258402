"""Front.stream_message: the step stream's way to the one handler for the worker's own envs, and its refusals (None:
the stream then sends the message through the whole app, as the HTTP request it stands for)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from werkzeug.test import EnvironBuilder

from gymserve.pipeline.front import FRONT

MSGPACK = "application/msgpack"


def upgrade_environ(iid: str, **headers: str) -> dict[str, Any]:
    return EnvironBuilder(path=f"/v2/envs/{iid}/stream", headers={"Host": "127.0.0.1", **headers}).get_environ()


def test_a_step_of_an_env_the_worker_holds_is_the_http_routes_answer(app: Any, client: Any) -> None:
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).get_json()["instance_id"]
    front = app.extensions[FRONT]
    reset = front.stream_message(upgrade_environ(iid), iid, "reset", msgpack.packb({"seed": 4, "seq": 1}), MSGPACK)
    assert reset is not None and reset[0] == 200 and msgpack.unpackb(reset[2])["seq"] == 1
    step = front.stream_message(upgrade_environ(iid), iid, "step", msgpack.packb({"action": 0, "seq": 2}), MSGPACK)
    assert step is not None and step[0] == 200
    http = client.post(f"/v2/envs/{iid}/step", data=msgpack.packb({"action": 0, "seq": 2}), content_type=MSGPACK,
                       headers={"Accept": MSGPACK})  # fmt: skip
    assert http.data == step[2]  # a resend over HTTP: the same kept answer, byte for byte
    bad = front.stream_message(upgrade_environ(iid), iid, "step", msgpack.packb({"action": 9}), MSGPACK)
    assert bad is not None and bad[0] == 422 and json.loads(bad[2])["error"]["details"]["field"] == "action"


def test_anything_but_the_workers_own_env_goes_through_the_whole_app(app: Any) -> None:
    front = app.extensions[FRONT]
    for iid in ("nope", "test.1-0." + "0" * 32, "test.0-0." + "0" * 32):  # no id; another worker's; closed here
        assert front.stream_message(upgrade_environ(iid), iid, "step", msgpack.packb({"action": 0}), MSGPACK) is None
