"""pipeline.stream.Session on its own: a real wsproto client's frames in, the bytes it would send out, with an echo
app in place of gymserve's (each message's body comes back as its answer)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from gymserve.errors import BadRequest, StepTimeout
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


def test_a_fragmented_message_is_joined_and_answered_once_and_its_pieces_are_bounded_together() -> None:
    session, client = connected()
    body = msgpack.packb({"op": "step", "action": 7})
    pieces = client.send(BytesMessage(body[:3], message_finished=False)) + client.send(BytesMessage(body[3:]))
    assert answers(client, b"".join(session.receive(pieces))) == [{"action": 7}]
    small = stream.Session(echo, {}, "e1", stream.Limits(1000, 10))
    client = WSConnection(ConnectionType.CLIENT)
    client.receive_data(small.accept(client.send(Request(host="gymserve", target="/v2/envs/e1/stream"))))
    list(client.events())
    # Two pieces of 600 bytes: each under the bound, together over it (no payload past it is read).
    pieces = client.send(BytesMessage(b"x" * 600, message_finished=False)) + client.send(BytesMessage(b"x" * 600))
    assert answers(client, b"".join(small.receive(pieces))) == [("close", 1009)] and small.closed


def test_frames_the_protocol_forbids_close_the_stream_with_the_rfcs_code_after_the_answers_before_them() -> None:
    session, client = connected()
    good = messages(client, {"action": 1})
    unmasked = b"\x82\x01\x00"  # a client's frame must be masked: a protocol error (1002)
    assert answers(client, b"".join(session.receive(good + unmasked))) == [{"action": 1}, ("close", 1002)]
    session, client = connected()
    stray = b"\x80\x80" + b"\0" * 4  # a continuation frame with no message begun
    assert answers(client, b"".join(session.receive(stray))) == [("close", 1002)]
    session, client = connected()
    text = b"\x81\x82" + b"\0" * 4 + b"\xff\xfe"  # a text message that is not UTF-8 (1007)
    assert answers(client, b"".join(session.receive(text))) == [("close", 1007)]


def test_a_clients_close_is_echoed_after_the_answers_to_the_messages_before_it() -> None:
    session, client = connected()
    sent = messages(client, {"action": 1}, {"action": 2}) + client.send(CloseConnection(code=1000))
    assert answers(client, b"".join(session.receive(sent))) == [{"action": 1}, {"action": 2}, ("close", 1000)]
    assert session.closed


def test_an_upgrade_without_a_valid_key_is_a_bad_request_naming_the_headers() -> None:
    session = stream.Session(echo, {}, "e1", stream.Limits(1 << 20, 10))
    head = (
        b"GET /v2/envs/e1/stream HTTP/1.1\r\nHost: gymserve\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    )
    with pytest.raises(BadRequest) as refused:
        session.accept(head)
    assert refused.value.details == {"field": "headers"} and "Sec-WebSocket-Key" in str(refused.value)
