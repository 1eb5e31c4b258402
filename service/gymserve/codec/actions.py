"""Actions: a decoded wire value (JSON list, number, native ndarray) checked and converted into a member of a space."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from ..errors import InvalidValue


def to_member(space: spaces.Space[Any], value: Any, field: str) -> Any:
    """A decoded wire value (plain JSON, or /v2's native values) as a member of `space`, in the space's dtype.

    Anything else is an InvalidValue naming `field`.
    """
    converted = _convert(space, value, field)
    if type(space) is spaces.Discrete:  # Discrete.contains of the int64 made above, at a tenth of its cost
        if not space.start <= converted < space.start + space.n:
            raise InvalidValue(field, f"{_short(value)} is not in {space}")
        return converted
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
        if not isinstance(value, (list, tuple)) or len(value) != len(space.spaces):
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
    if isinstance(value, np.generic) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()  # a /v2 action arrives as a numpy scalar of the client's dtype
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
