"""Gymnasium spaces as JSON: descriptions, and JSON values checked and converted into space members."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from ..errors import InvalidValue

_F64 = np.finfo(np.float64)


def _finite_list(values: np.ndarray) -> list[Any]:
    """Flattened bounds with infinities replaced by float64's extremes: JSON has no Infinity (seed behaviour)."""
    flat = np.asarray(values).flatten()
    if flat.dtype.kind == "f":
        flat = np.where(np.isposinf(flat), _F64.max, np.where(np.isneginf(flat), _F64.min, flat))
    return flat.tolist()


def describe(space: spaces.Space[Any]) -> dict[str, Any]:
    """The seed's space description (`name` and its keys), extended to every Gymnasium space."""
    name = type(space).__name__
    info: dict[str, Any] = {"name": name}
    if isinstance(space, spaces.Discrete):
        info.update(n=int(space.n), start=int(space.start))
    elif isinstance(space, spaces.Box):
        info.update(
            shape=list(space.shape), low=_finite_list(space.low), high=_finite_list(space.high), dtype=str(space.dtype)
        )
    elif isinstance(space, spaces.MultiDiscrete):
        info.update(
            nvec=space.nvec.tolist(), start=space.start.tolist(), shape=list(space.shape), dtype=str(space.dtype)
        )
    elif isinstance(space, spaces.MultiBinary):
        info.update(n=space.n if isinstance(space.n, int) else list(space.n), shape=list(space.shape))
    elif isinstance(space, spaces.Tuple):
        info["spaces"] = [describe(s) for s in space.spaces]
    elif isinstance(space, spaces.Dict):
        info["spaces"] = {k: describe(s) for k, s in space.spaces.items()}
    elif isinstance(space, spaces.Text):
        info.update(
            min_length=int(space.min_length), max_length=int(space.max_length), charset="".join(space.character_list)
        )
    return info


def rebuild(info: dict[str, Any]) -> spaces.Space[Any]:
    """The inverse of `describe`: a real Gymnasium space (used by the client)."""
    name = info["name"]
    if name == "Discrete":
        return spaces.Discrete(info["n"], start=info.get("start", 0))
    if name == "Box":
        shape = tuple(info["shape"])
        dtype = np.dtype(info.get("dtype", "float32"))
        low = _restore_infinity(info["low"], dtype).reshape(shape)
        high = _restore_infinity(info["high"], dtype).reshape(shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if name == "MultiDiscrete":
        return spaces.MultiDiscrete(info["nvec"], dtype=info.get("dtype", "int64"), start=info.get("start"))
    if name == "MultiBinary":
        return spaces.MultiBinary(info["n"])
    if name == "Tuple":
        return spaces.Tuple([rebuild(s) for s in info["spaces"]])
    if name == "Dict":
        return spaces.Dict({k: rebuild(s) for k, s in info["spaces"].items()})
    if name == "Text":
        return spaces.Text(info["max_length"], min_length=info["min_length"], charset=info["charset"])
    raise ValueError(f"space {name!r} cannot be rebuilt from its description")


def _restore_infinity(values: list[float], dtype: np.dtype[Any]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if dtype.kind == "f":
        arr = np.where(arr >= _F64.max, np.inf, np.where(arr <= _F64.min, -np.inf, arr))
    return arr.astype(dtype)


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


def from_json(space: spaces.Space[Any], value: Any, field: str) -> Any:
    """Convert a JSON value into a member of `space`, or raise InvalidValue naming `field`."""
    converted = _convert(space, value, field)
    if not space.contains(converted):
        raise InvalidValue(field, f"{_short(value)} is not in {space}")
    return converted


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(space: spaces.Space[Any], value: Any, field: str) -> Any:
    if isinstance(space, spaces.Discrete):
        return np.int64(_integer(value, field))
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        return _array(space, value, field)
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, list) or len(value) != len(space.spaces):
            raise InvalidValue(field, f"expected a list of {len(space.spaces)} values")
        return tuple(_convert(s, v, f"{field}[{i}]") for i, (s, v) in enumerate(zip(space.spaces, value, strict=True)))
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict) or set(value) != set(space.spaces):
            raise InvalidValue(field, f"expected an object with exactly the keys {sorted(space.spaces)}")
        return {k: _convert(s, value[k], f"{field}.{k}") for k, s in space.spaces.items()}
    if isinstance(space, spaces.Text):
        if not isinstance(value, str):
            raise InvalidValue(field, "expected a string")
        return value
    raise InvalidValue(field, f"values of {type(space).__name__} spaces are not supported over JSON")


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue(field, f"expected an integer, got {_short(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidValue(field, f"expected an integer, got {_short(value)}")
    if not -(2**63) <= value < 2**63:
        raise InvalidValue(field, f"{_short(value)} is out of the 64-bit integer range")
    return int(value)


def _array(space: spaces.Space[Any], value: Any, field: str) -> np.ndarray:
    assert space.shape is not None and space.dtype is not None
    try:
        raw = np.asarray(value)
    except ValueError:
        raise InvalidValue(field, "expected a (nested) list of numbers of one shape") from None
    if raw.dtype.kind not in "biuf" or (raw.dtype.kind == "b" and not isinstance(space, spaces.MultiBinary)):
        raise InvalidValue(field, f"expected numbers, got {_short(value)}")
    if raw.shape != space.shape:
        if raw.size != math.prod(space.shape):
            raise InvalidValue(field, f"expected shape {list(space.shape)}, got {list(raw.shape)}")
        raw = raw.reshape(space.shape)  # a flattened action, as seed clients send them
    if space.dtype.kind in "iu":
        if raw.dtype.kind == "f" and (not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw))):
            raise InvalidValue(field, f"expected integers for dtype {space.dtype}")
        limits = np.iinfo(space.dtype)
        if raw.size and (raw.min() < limits.min or raw.max() > limits.max):
            raise InvalidValue(field, f"values out of range for dtype {space.dtype}")
    if space.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise InvalidValue(field, "NaN and infinity are not allowed")
    with np.errstate(all="ignore"):
        return raw.astype(space.dtype)
