"""pipeline.stream.Session on its own: a real wsproto client's frames in, the bytes it would send out, with an echo
app in place of gymserve's (each message's body comes back as its answer)."""

from __future__ import annotations

from typing import Any

import msgpack
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from gymserve.errors import StepTimeout
from gymserve.pipeline import stream
from gymserve.routing.forward import LATE_ANSWER


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    if msgpack.unpackb(body).get("stuck"):  # the deadline watchdog answers it from its own thread meanwhile
        environ[LATE_ANSWER](StepTimeout("e1", 2.0), native=True)
    start_response("200 OK", [("Content-Type", "application/msgpack")])
    return [body]


def connected(**limits: int) -> tuple[stream.Session, WSConnection]:
    session = stream.Session(echo, {}, "e1", stream.Limits(1 << 20, 10, **limits))
    client = WSConnection(ConnectionType.CLIENT)
    accepted = session.accept(client.send(Request(host="gymserve", target="/v2/envs/e1/stream")))
    client.receive_data(accepted)
    assert isinstance(next(client.events()), AcceptConnection)
    return session, client


def messages(client: WSConnection, *bodies: dict[str, Any]) -> bytes:
    return b"".join(client.send(BytesMessage(msgpack.packb({"op": "step", **b}))) for b in bodies)


def answers(client: WSConnection, sent: bytes) -> list[Any]:
    client.receive_data(sent)
    return [
        msgpack.unpackb(e.data) if isinstance(e, BytesMessage) else ("close", e.code)
        for e in client.events()
        if isinstance(e, (BytesMessage, CloseConnection))
    ]


def test_pipelined_answers_go_out_together_at_most_max_in_flight_at_a_time_in_order() -> None:
    session, client = connected(max_in_flight=4)
    chunks = list(session.receive(messages(client, *({"action": n} for n in range(10)))))
    assert [len(answers(client, chunk)) for chunk in chunks] == [4, 4, 2]
    again, client = connected(max_in_flight=4)
    assert [
        a["action"]
        for a in answers(client, b"".join(again.receive(messages(client, *({"action": n} for n in range(10))))))
    ] == list(range(10))


def test_answers_held_before_sending_stay_under_max_unsent_bytes() -> None:
    session, client = connected(max_unsent_bytes=1024)
    big = {"action": 0, "pad": "x" * 600}  # each answer about 620 bytes: two reach the bound
    chunks = list(session.receive(messages(client, *([big] * 5))))
    assert [len(answers(client, chunk)) for chunk in chunks] == [2, 2, 1]


def test_a_late_answer_goes_out_after_the_answers_made_before_it_then_the_stream_ends() -> None:
    session, client = connected()
    late: list[bytes] = []
    session.send_late = late.append
    list(session.receive(messages(client, {"action": 0}, {"action": 1}, {"stuck": True})))
    got = answers(client, late[0])
    assert [a["action"] for a in got[:2]] == [0, 1]
    assert got[2]["error"]["code"] == "step_timeout" and got[3] == ("close", 1011)
