"""The seed's /v1 wire format: observations as {type, data=base64(zlib(bytes))}, frames with alpha.

Widening rules are the seed's: observations are flattened, float32 becomes float64, int32 and uint8
become int64, Python ints become int64. Where the seed lost data, this codec does not:
a Tuple or Dict observation is the concatenation of its flattened leaves (Dict in key order) in
their common widened dtype, where the seed kept only the first element; a Python float is float64;
a Text observation is {"type": "str", "data": base64(zlib(utf-8))}.
"""

from __future__ import annotations

import base64
import sys
import zlib
from typing import Any

import numpy as np
import orjson

_WIDEN = {
    np.dtype(np.float32): np.dtype(np.float64),
    np.dtype(np.int32): np.dtype(np.int64),
    np.dtype(np.uint8): np.dtype(np.int64),
}
_LITTLE = sys.byteorder == "little"


def _pack(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def _unpack(data: str) -> bytes:
    return zlib.decompress(base64.b64decode(data))


def _leaves(obs: Any) -> list[np.ndarray]:
    if isinstance(obs, (tuple, list)):
        return [leaf for item in obs for leaf in _leaves(item)]
    if isinstance(obs, dict):
        return [leaf for key in sorted(obs) for leaf in _leaves(obs[key])]
    if isinstance(obs, bool):
        return [np.array([obs], dtype=np.int64)]
    if isinstance(obs, int):
        return [np.array([obs], dtype=np.int64)]
    if isinstance(obs, float):
        return [np.array([obs], dtype=np.float64)]
    arr = np.asarray(obs).reshape(-1)
    return [arr.astype(_WIDEN.get(arr.dtype, arr.dtype), copy=False)]


def encode_observation(obs: Any) -> dict[str, str]:
    if isinstance(obs, str):
        return {"type": "str", "data": _pack(obs.encode("utf-8"))}
    leaves = _leaves(obs)
    flat = (
        leaves[0]
        if len(leaves) == 1
        else np.concatenate([leaf.astype(np.result_type(*leaves), copy=False) for leaf in leaves])
    )
    if not _LITTLE:
        flat = flat.byteswap()
    return {"type": str(flat.dtype), "data": _pack(flat.tobytes())}


def decode_observation(payload: dict[str, str]) -> np.ndarray | str:
    """The flat array (or string) that `encode_observation` wrote."""
    raw = _unpack(payload["data"])
    if payload["type"] == "str":
        return raw.decode("utf-8")
    return np.frombuffer(raw, dtype=np.dtype(payload["type"]).newbyteorder("<"))


def encode_frame(frame: Any) -> Any:
    """A render result: an RGB frame gains the seed's opaque alpha channel; text stays text."""
    if isinstance(frame, list):
        return [encode_frame(f) for f in frame]
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3:
        alpha = np.full((*frame.shape[:2], 1), 255, dtype=np.uint8)
        rgba = np.concatenate([frame, alpha], axis=2)
        return {"rows": int(frame.shape[0]), "cols": int(frame.shape[1]), "data": _pack(rgba.tobytes())}
    if isinstance(frame, np.ndarray):
        return frame.tolist()
    return frame


def decode_frame(payload: Any) -> Any:
    """An RGB frame (alpha dropped) from `encode_frame`'s dict; text and None pass through."""
    if isinstance(payload, list):
        return [decode_frame(p) for p in payload]
    if isinstance(payload, dict) and {"rows", "cols", "data"} <= payload.keys():
        rgba = np.frombuffer(_unpack(payload["data"]), dtype=np.uint8)
        return rgba.reshape(payload["rows"], payload["cols"], 4)[:, :, :3].copy()
    return payload


def observation_for(space: Any, payload: dict[str, str]) -> Any:
    """Rebuild a member of `space` from a /v1 observation: the inverse of `encode_observation`."""
    flat = decode_observation(payload)
    if isinstance(flat, str):
        return flat
    value, used = _unflatten(space, flat, 0)
    if used != flat.size:
        raise ValueError(f"observation has {flat.size} values, {space} needs {used}")
    return value


def _unflatten(space: Any, flat: np.ndarray, at: int) -> tuple[Any, int]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return int(flat[at]), at + 1
    if isinstance(space, spaces.Tuple):
        items = []
        for sub in space.spaces:
            item, at = _unflatten(sub, flat, at)
            items.append(item)
        return tuple(items), at
    if isinstance(space, spaces.Dict):
        out = {}
        for key in sorted(space.spaces):
            out[key], at = _unflatten(space.spaces[key], flat, at)
        return {k: out[k] for k in space.spaces}, at
    size = int(np.prod(space.shape))
    return flat[at : at + size].astype(space.dtype).reshape(space.shape), at + size


def to_jsonable(value: Any) -> Any:
    """A space member (or any numpy-bearing value) as plain JSON types, keeping its structure."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def _jsonable_default(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic, tuple)):
        return to_jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(payload: Any) -> bytes:
    """A /v1 answer as JSON: numpy values (in info, say) as plain numbers and lists, NaN as null."""
    return orjson.dumps(payload, default=_jsonable_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
