"""Gymnasium spaces described for both APIs (the seed's lists for /v1, native bounds for /v2) and rebuilt from that."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

_F64 = np.finfo(np.float64)
# The spaces described with their fields, by their wire name (the class name, as `describe` sends it), and rebuilt
# from that: the one list of space kinds (any other space is described by its name alone, and cannot be rebuilt).
KINDS: dict[str, type[spaces.Space[Any]]] = {
    kind.__name__: kind
    for kind in (
        spaces.Discrete,
        spaces.Box,
        spaces.MultiDiscrete,
        spaces.MultiBinary,
        spaces.Tuple,
        spaces.Dict,
        spaces.Text,
    )
}


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
    kind = KINDS.get(name)
    if kind is spaces.Discrete:
        return spaces.Discrete(info["n"], start=info.get("start", 0))
    if kind is spaces.Box:
        shape = tuple(info["shape"])
        dtype = np.dtype(info.get("dtype", "float32"))
        low = _restore_infinity(info["low"], dtype).reshape(shape)
        high = _restore_infinity(info["high"], dtype).reshape(shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind is spaces.MultiDiscrete:
        return spaces.MultiDiscrete(info["nvec"], dtype=info.get("dtype", "int64"), start=info.get("start"))
    if kind is spaces.MultiBinary:
        return spaces.MultiBinary(info["n"])
    if kind is spaces.Tuple:
        return spaces.Tuple([rebuild(s) for s in info["spaces"]])
    if kind is spaces.Dict:
        return spaces.Dict({k: rebuild(s) for k, s in info["spaces"].items()})
    if kind is spaces.Text:
        return spaces.Text(info["max_length"], min_length=info["min_length"], charset=info["charset"])
    raise ValueError(f"space {name!r} cannot be rebuilt from its description")


def _restore_infinity(values: list[float], dtype: np.dtype[Any]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if dtype.kind == "f":
        arr = np.where(arr >= _F64.max, np.inf, np.where(arr <= _F64.min, -np.inf, arr))
    return arr.astype(dtype)


def describe_space(space: spaces.Space[Any]) -> dict[str, Any]:
    """A space with its native bounds: Box low/high and MultiDiscrete nvec/start as ndarrays of its dtype."""
    info: dict[str, Any] = {"name": type(space).__name__}
    if isinstance(space, spaces.Discrete):
        info.update(n=int(space.n), start=int(space.start))
    elif isinstance(space, spaces.Box):
        info.update(dtype=space.dtype.name, shape=list(space.shape), low=space.low, high=space.high)
    elif isinstance(space, spaces.MultiDiscrete):
        info.update(dtype=space.dtype.name, nvec=space.nvec, start=space.start)
    elif isinstance(space, spaces.MultiBinary):
        info.update(n=space.n if isinstance(space.n, int) else [int(n) for n in space.n])
    elif isinstance(space, spaces.Tuple):
        info.update(spaces=[describe_space(s) for s in space.spaces])
    elif isinstance(space, spaces.Dict):
        info.update(spaces={k: describe_space(s) for k, s in space.spaces.items()})
    elif isinstance(space, spaces.Text):
        info.update(min_length=space.min_length, max_length=space.max_length, charset="".join(space.character_list))
    return info


def rebuild_space(info: dict[str, Any]) -> spaces.Space[Any]:
    """The inverse of `describe_space` (after a round trip through `dumps` and `loads`)."""
    kind = KINDS.get(info["name"])
    if kind is spaces.Box:  # exact bounds in their own dtype (the /v1 rebuild goes through float64 lists)
        return spaces.Box(info["low"], info["high"], shape=tuple(info["shape"]), dtype=info["dtype"])
    if kind is spaces.Tuple:
        return spaces.Tuple([rebuild_space(s) for s in info["spaces"]])
    if kind is spaces.Dict:
        return spaces.Dict({k: rebuild_space(s) for k, s in info["spaces"].items()})
    return rebuild(info)  # Discrete, MultiDiscrete, MultiBinary, Text: the same fields as /v1
