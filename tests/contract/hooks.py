"""Schemathesis hooks for scripts/test-contract.sh: request bodies and answers in msgpack, the API's other encoding.

Loaded by name (SCHEMATHESIS_HOOKS=hooks, with this directory on PYTHONPATH); not a test module.
"""

from __future__ import annotations

from typing import Any

import msgpack
import schemathesis

MSGPACK = ("application/msgpack", "application/vnd.msgpack", "application/x-msgpack")
_LOW, _HIGH = -(2**63), 2**64 - 1  # what msgpack's integers hold


def _packable(value: Any) -> Any:
    """The generated value, with integers msgpack cannot hold sent as floats (JSON's numbers have no such bound)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _LOW <= value <= _HIGH:
        return float(value)
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_packable(v) for v in value]
    return value


@schemathesis.serializer(*MSGPACK)
def to_msgpack(ctx: Any, value: Any) -> bytes:
    return msgpack.packb(_packable(value), use_bin_type=True)


@schemathesis.deserializer(*MSGPACK)
def from_msgpack(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False)
