"""The /v2 value encoding: native dtypes, shapes and structure as JSON or msgpack, and spaces described natively.

One mapping, two syntaxes. A value becomes a tree of null, booleans, numbers, strings, lists and
string-keyed maps; what those cannot say is a map with a single tag key:

- ndarray or numpy scalar: {"$nd": {"dtype": "float32", "shape": [4], "data": ...}}. `data` holds
  the elements in row-major order: in msgpack a bin of their little-endian bytes, in JSON a flat
  list of numbers (non-finite floats as the strings "NaN", "Infinity", "-Infinity"). A numpy
  scalar is shape []. dtypes: bool, int8-64, uint8-64, float16/32/64; other arrays become lists.
- tuple: {"$tuple": [...]}; a list stays a list.
- non-finite Python float, JSON only: {"$float": "NaN" | "Infinity" | "-Infinity"}.
- a map whose only key starts with "$" is wrapped, {"$dict": {...}}, so it is never read as a tag.

A msgspec Struct (the answers of pipeline.answers) becomes the map of its fields, in declaration
order under their wire names. Map keys become strings; ints beyond 64 bits and objects of other
types become their repr() string. Decoding gives back ndarrays (writable, native byte order), numpy scalars, tuples and
floats exactly as they were encoded: float32 stays float32, uint8 pixels stay uint8.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import msgpack
import msgspec
import numpy as np
import orjson

from ..errors import BadRequest, InvalidValue

JSON = "application/json"
MSGPACK = "application/msgpack"
MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")
ND, TUPLE, FLOAT, DICT = "$nd", "$tuple", "$float", "$dict"
DTYPES = frozenset(
    ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64")
)
MAX_DEPTH = 32  # deeper input is refused before it can exhaust the stack
MAX_DIMS = 32  # numpy's own limit
# A dimension larger than any body could fill; also keeps a shape with a zero from overflowing reshape.
MAX_DIM_SIZE = 2**31 - 1
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can carry
_AS_IS = frozenset((bool, str, type(None)))  # exact types that are their own wire tree
_BINARY_LEAVES = _AS_IS | {float}  # msgpack carries every float, non-finite ones too
_LITTLE_ENDIAN = sys.byteorder == "little"
_PACKERS = threading.local()
_PACKER_BYTES = 64 * 1024
# The wire name of each native-order dtype: a dict lookup, where dtype.name is a Python property (~1.5 us, and
# the step path asked it three times per observation).
_NATIVE_NAMES = {np.dtype(name): name for name in DTYPES}


def is_msgpack(media_type: str) -> bool:
    return media_type in MSGPACK_TYPES


# --- native value -> wire tree ---


class Wire:
    """A value that is already a wire tree (another worker's answer, parsed but not made native): to_wire writes it
    as it is, so that relaying an answer costs a parse, not a round trip through numpy."""

    __slots__ = ("binary", "tree")

    def __init__(self, tree: Any, binary: bool) -> None:
        self.tree = tree
        self.binary = binary


def to_wire(value: Any, binary: bool) -> Any:
    """The wire tree of a native value: what orjson (binary=False) or msgpack (binary=True) writes."""
    kind = type(value)  # the exact types of every step's answer first: one lookup, not a chain of isinstance
    if kind in _AS_IS:
        return value
    if kind is dict:
        return _map_to_wire(value, binary)
    if kind is np.ndarray:
        return _nd_to_wire(value, binary)
    if kind is int:  # a step's seq
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return _nd_to_wire(value, binary)
    if isinstance(value, np.generic):
        if _wire_name(value.dtype) is not None:
            return _nd_to_wire(np.asarray(value), binary)
        item = value.item()  # complex, datetime64, bytes_ ... as Python values; longdouble stays numpy
        return repr(item) if isinstance(item, np.generic) else to_wire(item, binary)
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if isinstance(value, float):
        return value if binary or math.isfinite(value) else {FLOAT: _nonfinite_name(value)}
    if isinstance(value, tuple):
        return {TUPLE: [to_wire(v, binary) for v in value]}
    if isinstance(value, list):
        return [to_wire(v, binary) for v in value]
    if isinstance(value, dict):
        return _map_to_wire(value, binary)
    if isinstance(value, Wire):  # only relayed batch answers are, and no other value pays for the check
        return value.tree if value.binary == binary else to_wire(from_wire(value.tree), binary)
    if isinstance(value, msgspec.Struct):  # an answer (pipeline.answers): a map of its fields, UNSET ones left out
        return _struct_to_wire(value, binary)
    return repr(value)


def _map_to_wire(value: dict[Any, Any], binary: bool) -> dict[str, Any]:
    """A map with string keys; one whose only key starts with "$" wrapped in $dict, so it is never read as a tag."""
    leaves = _BINARY_LEAVES if binary else _AS_IS  # a step's reward and flags: no call of to_wire each
    tree = {str(k): v if type(v) in leaves else to_wire(v, binary) for k, v in value.items()}
    return {DICT: tree} if len(tree) == 1 and next(iter(tree)).startswith("$") else tree


def _struct_to_wire(value: msgspec.Struct, binary: bool) -> dict[str, Any]:
    """A struct's fields in declaration order under their wire names; never wrapped in $dict (its fields are named
    by its declaration, which no tag can be)."""
    tree = {}
    for name, wire_name in zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True):
        field = getattr(value, name)
        if field is not msgspec.UNSET:
            tree[wire_name] = to_wire(field, binary)
    return tree


def _nonfinite_name(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _wire_name(dtype: np.dtype[Any]) -> str | None:
    """The dtype's name if the wire carries it (in either byte order), else None."""
    name = _NATIVE_NAMES.get(dtype)
    if name is None and dtype.name in DTYPES:
        name = dtype.name
    return name


def _nd_to_wire(arr: np.ndarray, binary: bool) -> Any:
    dtype = arr.dtype
    native_name = _NATIVE_NAMES.get(dtype)
    name = native_name or _wire_name(dtype)
    if name is None:
        return [to_wire(v, binary) for v in arr.tolist()] if arr.ndim else to_wire(arr.item(), binary)
    header: dict[str, Any] = {"dtype": name, "shape": list(arr.shape)}
    if binary:
        if native_name is not None and (_LITTLE_ENDIAN or dtype.itemsize == 1):
            header["data"] = arr.tobytes()  # in C order, whatever the array's strides
        else:
            header["data"] = np.ascontiguousarray(arr, dtype.newbyteorder("<")).tobytes()
    elif dtype.kind == "f" and not np.isfinite(arr).all():
        header["data"] = [v if np.isfinite(v) else _nonfinite_name(float(v)) for v in arr.reshape(-1)]
    else:
        # orjson writes numpy arrays itself (C-contiguous, native byte order); float32 and float16 in their
        # shortest round-trip form.
        flat = arr.reshape(-1)
        if not (dtype.isnative and flat.flags.c_contiguous):
            flat = np.ascontiguousarray(flat, dtype=dtype.newbyteorder("="))
        header["data"] = flat
    return {ND: header}


# --- wire tree -> native value ---


def from_wire(tree: Any, field: str = "body") -> Any:
    """The native value of a wire tree; malformed tags raise InvalidValue naming the field (`action[1].$nd.shape`)."""
    return _native(tree, field, 0)


def _child(field: str, key: str) -> str:
    return key if field == "body" else f"{field}.{key}"  # the body's own fields are named alone: `action`


def check_depth(tree: Any, field: str) -> None:
    """Refuse a tree of lists and maps nested more than MAX_DEPTH levels (a 422 naming `field`), level by level rather
    than by recursion: for the /v1 paths, which use a tree as it came instead of through `from_wire` (which bounds
    its own descent)."""
    level = [tree] if isinstance(tree, (dict, list)) else []
    for _ in range(MAX_DEPTH):
        if not level:
            return
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
    if level:
        raise InvalidValue(field, f"nested more than {MAX_DEPTH} levels deep")


def _native(value: Any, field: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidValue(field, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        if len(value) == 1:
            key, inner = next(iter(value.items()))
            if key in _TAGS:
                return _TAGS[key](inner, _child(field, key), depth)
        return _native_map(value, field, depth)
    if isinstance(value, list):
        return [_native(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    raise InvalidValue(field, f"values of type {type(value).__name__} are not supported")


def _native_map(value: dict[Any, Any], field: str, depth: int) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidValue(field, f"map keys must be strings, got {key!r}")
        out[key] = _native(item, _child(field, key), depth + 1)
    return out


def _tuple(inner: Any, field: str, depth: int) -> tuple[Any, ...]:
    if not isinstance(inner, list):
        raise InvalidValue(field, "expected a list")
    return tuple(_native(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(inner))


def _float(inner: Any, field: str, depth: int) -> float:
    if not isinstance(inner, str) or inner not in _NONFINITE:  # a list or a map is no key of _NONFINITE
        raise InvalidValue(field, f"expected one of {sorted(_NONFINITE)}")
    return _NONFINITE[inner]


def _dict(inner: Any, field: str, depth: int) -> dict[str, Any]:
    if not isinstance(inner, dict):
        raise InvalidValue(field, "expected a map")
    return _native_map(inner, field, depth)


def _ndarray(inner: Any, field: str, depth: int) -> Any:
    if not isinstance(inner, dict) or set(inner) != {"dtype", "shape", "data"}:
        raise InvalidValue(field, 'expected {"dtype", "shape", "data"}')
    name, shape, data = inner["dtype"], inner["shape"], inner["data"]
    if not isinstance(name, str) or name not in DTYPES:  # a list or a map is no key of DTYPES
        raise InvalidValue(f"{field}.dtype", f"expected one of {', '.join(sorted(DTYPES))}, got {str(name)[:40]!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_DIM_SIZE for n in shape)
    ):
        raise InvalidValue(f"{field}.shape", f"expected a list of at most {MAX_DIMS} integers from 0 to {MAX_DIM_SIZE}")
    if math.prod(n for n in shape if n) > MAX_DIM_SIZE:
        # numpy refuses a shape whose non-zero dimensions overflow, even with no element at all
        raise InvalidValue(f"{field}.shape", f"its non-zero dimensions multiply to more than {MAX_DIM_SIZE}")
    dtype = np.dtype(name)
    count = math.prod(shape)
    if isinstance(data, bytes):
        if len(data) != count * dtype.itemsize:
            raise InvalidValue(f"{field}.data", f"expected {count * dtype.itemsize} bytes for {name}{shape}")
        arr = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)
    elif isinstance(data, list):
        arr = _array_from_list(data, dtype, count, f"{field}.data")
    else:
        raise InvalidValue(f"{field}.data", "expected bytes (msgpack) or a flat list of numbers (JSON)")
    arr = arr.reshape(shape)
    return arr[()] if arr.ndim == 0 else arr


def _array_from_list(data: list[Any], dtype: np.dtype[Any], count: int, field: str) -> np.ndarray:
    if len(data) != count:
        raise InvalidValue(field, f"expected {count} elements, got {len(data)}")
    if dtype.kind == "f":
        data = [_NONFINITE.get(v, v) if isinstance(v, str) else v for v in data]
    allowed, expected = _ELEMENTS[dtype.kind]
    if not all(type(v) in allowed for v in data):
        raise InvalidValue(field, f"expected a flat list of {expected} for dtype {dtype.name}")
    try:
        with np.errstate(all="ignore"):
            return np.array(data, dtype=dtype)
    except OverflowError:
        raise InvalidValue(field, f"values out of range for dtype {dtype.name}") from None


_ELEMENTS = {  # dtype kind -> (element types the list may hold, what to call them)
    "b": ((bool,), "booleans"),
    "i": ((int,), "integers"),
    "u": ((int,), "integers"),
    "f": ((int, float), "numbers"),
}
_TAGS = {ND: _ndarray, TUPLE: _tuple, FLOAT: _float, DICT: _dict}


# --- bytes ---


def dumps(value: Any, media_type: str) -> bytes:
    """A native value as a body of `media_type` (JSON or one of the msgpack types)."""
    if is_msgpack(media_type):
        return packb(to_wire(value, binary=True))
    return orjson.dumps(to_wire(value, binary=False), option=orjson.OPT_SERIALIZE_NUMPY)


def packb(tree: Any) -> bytes:
    """A wire tree (or any tree msgpack takes as it is) as msgpack, by this thread's own packer: `msgpack.packb`
    makes a packer, and its 256 KiB buffer, for every call. A packer that grew for a large answer is dropped."""
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True, buf_size=_PACKER_BYTES)
    data = packer.pack(tree)
    if len(data) > _PACKER_BYTES:
        _PACKERS.packer = None
    return data


def loads(data: bytes, media_type: str, field: str = "body") -> Any:
    """The native value of a body; an unreadable body is a 400 that says why."""
    try:
        tree = msgpack.unpackb(data, raw=False, strict_map_key=True) if is_msgpack(media_type) else orjson.loads(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        kind = "msgpack" if is_msgpack(media_type) else "JSON"
        raise BadRequest(f"{field} is not valid {kind}: {str(exc)[:120]}", details={"field": field}) from None
    return from_wire(tree, field)
