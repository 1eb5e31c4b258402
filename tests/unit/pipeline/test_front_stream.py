"""Front.stream_message: the step stream's way to the one handler for the worker's own envs, and its refusals (None:
the stream then sends the message through the whole app, as the HTTP request it stands for)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import msgpack
from werkzeug.test import EnvironBuilder

from gymserve.app import create_app
from gymserve.pipeline.front import FRONT
from gymserve.settings import Settings
from tenant_files import auth, write

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


def test_a_streams_key_is_checked_at_every_message_against_the_tenants_file_read_last(tmp_path: Path) -> None:
    path = write(tmp_path / "tenants.toml", **{"team-a": {"max_envs": 4}})
    settings = Settings.from_env({}, node_id="test", tenants_file=str(path), tenants_reload_seconds=0.1)
    app = create_app(settings)
    iid = app.test_client().post("/v2/envs", json={"env_id": "CartPole-v1"}, headers=auth("team-a")).get_json()
    iid = iid["instance_id"]
    front = app.extensions[FRONT]
    environ = upgrade_environ(iid, **auth("team-a"))  # one stream: every message is made from its upgrade's environ
    step = msgpack.packb({"action": 0})

    def reloaded(text: str, later: float) -> None:
        path.write_text(text)
        os.utime(path, (time.time() + later, time.time() + later))
        time.sleep(0.15)

    assert front.stream_message(environ, iid, "reset", b"", MSGPACK)[0] == 200  # type: ignore[index]
    assert front.stream_message(environ, iid, "step", step, MSGPACK)[0] == 200  # type: ignore[index]
    reloaded(path.read_text(), 5)  # the same keys, read again: new tenant objects, the same answers
    assert front.stream_message(environ, iid, "step", step, MSGPACK)[0] == 200  # type: ignore[index]
    swapped = path.read_text().replace("team-a", "team-x").replace("team-b", "team-a").replace("team-x", "team-b")
    reloaded(swapped, 10)  # the stream's key is team-b's now: team-a's env is not its to step
    moved = front.stream_message(environ, iid, "step", step, MSGPACK)
    assert moved is not None and moved[0] == 404
    reloaded(
        "[tenants.team-a]" + swapped.split("[tenants.team-a]")[1], 15
    )  # no tenant has it now: the whole app answers (401)
    assert front.stream_message(environ, iid, "step", step, MSGPACK) is None
