"""The /v2 step fast path: it answers the common case without Flask, and leaves everything else to Flask."""

import msgpack
import numpy as np
import pytest

from gymserve.codec import native


@pytest.fixture
def stepped(app, client):
    """A reset CartPole env and a record of every request the Flask step view saw."""
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    client.post(f"/v2/envs/{iid}/reset", json={"seed": 3})
    seen = []
    view = app.view_functions["v2.step_env"]

    def spy(instance_id):
        seen.append(instance_id)
        return view(instance_id=instance_id)

    app.view_functions["v2.step_env"] = spy
    return iid, seen


def test_a_plain_step_is_answered_without_flask_and_equals_the_local_env(client, stepped):
    import gymnasium as gym

    iid, seen = stepped
    local = gym.make("CartPole-v1")
    local.reset(seed=3)
    for seq, media in enumerate((native.MSGPACK, native.JSON, native.MSGPACK), start=2):
        body = msgpack.packb({"action": 1, "seq": seq}) if media == native.MSGPACK else {"action": 1, "seq": seq}
        kwargs = {"data": body} if media == native.MSGPACK else {"json": body}
        resp = client.post(f"/v2/envs/{iid}/step", headers={"Content-Type": media, "Accept": media}, **kwargs)
        answer = native.loads(resp.get_data(), media)
        want, *_ = local.step(1)
        assert resp.status_code == 200 and answer["seq"] == seq and np.array_equal(answer["observation"], want)
    again = client.post(
        f"/v2/envs/{iid}/step",
        data=msgpack.packb({"action": 1, "seq": 4}),
        headers={"Content-Type": native.MSGPACK, "Accept": native.MSGPACK},
    )
    assert native.loads(again.get_data(), native.MSGPACK)["seq"] == 4  # a resend, answered again
    assert seen == [], "the Flask view was never needed"


def test_errors_on_the_fast_path_have_the_v2_shape(client, stepped):
    iid, seen = stepped
    resp = client.post(f"/v2/envs/{iid}/step", json={"action": 7})
    assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "action"
    resp = client.post(f"/v2/envs/{iid}/step", json={"action": 0, "seq": 99})
    assert resp.status_code == 409 and resp.json["error"]["code"] == "sequence_conflict"
    assert seen == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json", "Accept": "*/*"}, b'{"action": 0}'),
        ({"Content-Type": "text/plain"}, b'{"action": 0}'),
        ({"Content-Type": "application/json"}, b'{"action": 0, "extra": 1}'),
        ({"Content-Type": "application/json"}, b'{"action": 0, "seq": "two"}'),
        ({"Content-Type": "application/json"}, b"not json"),
    ],
    ids=["accept-any", "odd-content-type", "unknown-field", "bad-seq", "bad-body"],
)
def test_anything_unusual_falls_through_to_flask(client, stepped, headers, body):
    iid, seen = stepped
    client.post(f"/v2/envs/{iid}/step", data=body, headers=headers)
    assert seen == [iid]
