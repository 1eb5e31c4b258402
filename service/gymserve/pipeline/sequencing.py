"""Numbered resets and steps: a resend of the last number is answered again and never runs twice.

Resets and steps share one sequence per env: the first is 1, each answered one adds 1, and a
failed call (an error answer) uses no number. A call without `seq` always runs (and counts). The
last numbered answer is kept, encoded, on its EnvRecord, so that a resend of it is answered again.
The handler calls these for single envs, vector envs and batch items alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..codec import values as native
from ..errors import SequenceConflict
from ..lifecycle.registry import EnvRecord

Payload = dict[str, Any]


@dataclass(frozen=True)
class SequencedAnswer:
    """The last answer of a sequenced reset or step, kept on its EnvRecord so that a resend gets it again."""

    seq: int
    request_digest: bytes  # a resend must ask exactly what was asked
    media_type: str
    body: bytes


def request_digest(kind: str, asked: Any) -> bytes:
    """What a resend must repeat: the call's kind and decoded values, so that it matches by whatever route,
    in whatever body encoding, it comes again."""
    canonical = msgpack.packb(_keys_sorted(native.to_wire(asked, binary=True)), use_bin_type=True)
    return hashlib.blake2b(kind.encode() + b"\n" + canonical, digest_size=16).digest()


def _keys_sorted(tree: Any) -> Any:
    """Maps have no order, and a client (a Go map, a proxy) may send the same one in another order."""
    if isinstance(tree, dict):
        return {key: _keys_sorted(tree[key]) for key in sorted(tree)}
    if isinstance(tree, list):
        return [_keys_sorted(item) for item in tree]
    return tree


def answer_bytes(
    record: EnvRecord, seq: int | None, digest: bytes, media_type: str, run: Callable[[], Payload]
) -> bytes:
    """The encoded answer of a reset or step: run now, or (a resend of the last seq) the kept answer."""
    if seq is not None and seq != record.seq + 1:
        return _resent(record, seq, digest, media_type)
    body = native.dumps(_advance(record, run), media_type)
    # Only callers that number their calls can resend one; the others do not pay for the kept answer.
    record.last_answer = SequencedAnswer(record.seq, digest, media_type, body) if seq is not None else None
    return body


def answer_payload(record: EnvRecord, seq: int | None, digest: bytes, run: Callable[[], Payload]) -> Payload:
    """As `answer_bytes`, for one item of a batch: the answer as a value (kept as msgpack when numbered)."""
    if seq is not None and seq != record.seq + 1:
        return native.loads(_resent(record, seq, digest, native.MSGPACK), native.MSGPACK)
    payload = _advance(record, run)
    record.last_answer = (
        None
        if seq is None
        else SequencedAnswer(record.seq, digest, native.MSGPACK, native.dumps(payload, native.MSGPACK))
    )
    return payload


def _advance(record: EnvRecord, run: Callable[[], Payload]) -> Payload:
    payload = run()  # an error raises here and uses no number; a new map of its own, numbered here
    record.seq += 1
    payload["seq"] = record.seq
    return payload


def _resent(record: EnvRecord, seq: int, digest: bytes, media_type: str) -> bytes:
    last, expected = record.last_answer, record.seq + 1
    if isinstance(last, SequencedAnswer) and last.seq == seq == record.seq and last.request_digest == digest:
        if media_type == last.media_type:
            return last.body
        return native.dumps(native.loads(last.body, last.media_type), media_type)
    if seq == record.seq:
        why = f"seq {seq} was the last call on this env but cannot be resent: it was sent without seq or differently"
    else:
        when = "in the past" if seq < record.seq else "in the future"
        why = f"seq {seq} is {when}: the last call on this env was seq {record.seq}"
    raise SequenceConflict(f"{why}; the next call must carry seq {expected}", expected=expected, got=seq)
