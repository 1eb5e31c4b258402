"""The /v2 encoding: native values survive JSON and msgpack bit for bit, bad input names its field, PNG frames."""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from gymnasium import spaces

from gymserve.codec import png
from gymserve.codec import spaces as space_codec
from gymserve.codec import values as native
from gymserve.codec.actions import to_member
from gymserve.errors import BadRequest, InvalidValue

MEDIA_TYPES = [native.JSON, native.MSGPACK]


def same(a: Any, b: Any) -> bool:
    """Equal in type, dtype, shape and bits, all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def round_trip(value: Any, media_type: str) -> Any:
    return native.loads(native.dumps(value, media_type), media_type)


VALUES = {
    "cartpole": np.array([0.01, -0.2, 0.03, 1e-8], dtype=np.float32),
    "frame": np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8),
    "numpy scalars": [np.int64(3), np.float32(0.1), np.bool_(True), np.uint8(255), np.float16(1.5)],
    "python scalars": [None, True, False, 0, -(2**63), 2**64 - 1, 0.1, -0.0, "text", ""],
    "blackjack": (20, 7, 0),
    "nested": {"a": (1, [2.5, {"b": np.arange(3, dtype=np.int8)}]), "c": []},
    "non-finite": [math.nan, math.inf, -math.inf, np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)],
    "extremes": [np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0], dtype=np.float32)],
    "integer dtypes": [np.array([np.iinfo(t).min, np.iinfo(t).max], dtype=t) for t in (np.int8, np.int32, np.uint64)],
    "bool array": np.array([[True, False], [False, True]]),
    "empty and odd shapes": [np.zeros((0, 3), np.float64), np.zeros((2, 0, 1), np.uint8), np.int16(7)],
    "tag-like keys": {"$nd": 1},
    "non-contiguous": np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2],
    "big-endian": np.array([1, 2, 3], dtype=">i4"),
}


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_round_trip_with_their_type_dtype_shape_and_bits(name: str, media_type: str) -> None:
    value = VALUES[name]
    got = round_trip(value, media_type)
    if name == "big-endian":  # decoded arrays are in native byte order, with the same values
        assert got.dtype == np.dtype(np.int32) and got.tolist() == [1, 2, 3]
    elif name == "non-contiguous":
        assert same(got, np.ascontiguousarray(value))
    else:
        assert same(got, value), (got, value)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_json_and_msgpack_carry_the_same_information(name: str) -> None:
    assert same(round_trip(VALUES[name], native.JSON), round_trip(VALUES[name], native.MSGPACK))


def test_every_float32_survives_json_bit_for_bit() -> None:
    bits = np.random.default_rng(1).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    got = round_trip(values, native.JSON)
    assert got.dtype == np.float32 and got.tobytes() == values.tobytes()


def test_nothing_is_widened_and_msgpack_carries_raw_bytes() -> None:
    frame = np.zeros((400, 600, 3), np.uint8)
    body = native.dumps({"observation": frame}, native.MSGPACK)
    assert frame.nbytes < len(body) < frame.nbytes + 100  # no base64, no widening to int64
    tree = msgpack.unpackb(body)
    assert tree["observation"]["$nd"]["dtype"] == "uint8" and tree["observation"]["$nd"]["shape"] == [400, 600, 3]
    assert orjson.loads(native.dumps(np.float32(0.1), native.JSON)) == {
        "$nd": {"dtype": "float32", "shape": [], "data": [0.1]}
    }


def test_json_form_is_readable_and_tuples_are_tagged() -> None:
    value = {"obs": (20, 7, 0), "x": np.array([0.5], np.float32), "inf": math.inf, "plain": [1, 2]}
    assert orjson.loads(native.dumps(value, native.JSON)) == {
        "obs": {"$tuple": [20, 7, 0]},
        "x": {"$nd": {"dtype": "float32", "shape": [1], "data": [0.5]}},
        "inf": {"$float": "Infinity"},
        "plain": [1, 2],
    }


def test_a_zero_dimensional_array_comes_back_as_a_numpy_scalar() -> None:
    for media_type in MEDIA_TYPES:
        assert same(round_trip(np.array(7, np.int16), media_type), np.int16(7))


def test_decoded_arrays_are_writable_and_in_native_byte_order() -> None:
    for media_type in MEDIA_TYPES:
        arr = round_trip(np.arange(4, dtype=np.float32), media_type)
        arr[0] = 9
        assert arr.dtype.isnative


def test_other_objects_become_their_repr_instead_of_failing() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    odd = {"t": Thing(), 1: "int key", "big": 2**70, "c": np.complex64(1j), "ld": np.array([1, 2], np.longdouble)}
    for media_type in MEDIA_TYPES:
        assert round_trip(odd, media_type) == {
            "t": "<thing>",
            "1": "int key",
            "big": str(2**70),
            "c": "1j",
            "ld": [repr(np.longdouble(1)), repr(np.longdouble(2))],
        }


def nd(dtype: Any = "float32", shape: Any = (2,), data: Any = (1.0, 2.0)) -> dict[str, Any]:
    return {"$nd": {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape, "data": data}}


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        (nd(dtype="complex64"), "action.$nd.dtype"),
        (nd(dtype="object"), "action.$nd.dtype"),
        (nd(shape=(-1,)), "action.$nd.shape"),
        (nd(shape="2"), "action.$nd.shape"),
        (nd(shape=[True]), "action.$nd.shape"),
        (nd(data=[1.0]), "action.$nd.data"),
        (nd(data=b"\x00" * 7), "action.$nd.data"),
        (nd(data="AAAA"), "action.$nd.data"),
        (nd(dtype="int8", data=[1.5, 2]), "action.$nd.data"),
        (nd(dtype="uint8", data=[256, 0]), "action.$nd.data"),
        (nd(dtype="bool", data=[1, 0]), "action.$nd.data"),
        (nd(data=["one", 2.0]), "action.$nd.data"),
        (nd(data=[[1.0], [2.0]]), "action.$nd.data"),
        ({"$nd": {"dtype": "float32"}}, "action.$nd"),
        ({"$tuple": 3}, "action.$tuple"),
        ({"$float": "nan"}, "action.$float"),
        ({"$dict": []}, "action.$dict"),
        ([1, {"k": nd(dtype="x")}], "action[1].k.$nd.dtype"),
    ],
)
def test_malformed_tags_are_422_naming_the_field(tree: Any, field: str) -> None:
    with pytest.raises(InvalidValue) as err:
        native.from_wire(tree, "action")
    assert err.value.status == 422 and err.value.details["field"] == field


def test_depth_and_foreign_types_are_refused_before_they_can_hurt() -> None:
    deep: Any = 0
    for _ in range(native.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(InvalidValue, match="nested more than"):
        native.from_wire(deep)
    with pytest.raises(InvalidValue, match="ExtType"):
        native.loads(msgpack.packb(msgpack.ExtType(5, b"x")), native.MSGPACK)
    with pytest.raises(InvalidValue, match="keys must be strings"):
        native.from_wire({1: 2})


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"{", native.JSON),
        (b"\xc1", native.MSGPACK),
        (msgpack.packb({1: 2}), native.MSGPACK),
        (b"\x91", native.MSGPACK),
    ],
)
def test_unreadable_bodies_are_400(data: bytes, media_type: str) -> None:
    with pytest.raises(BadRequest) as err:
        native.loads(data, media_type)
    assert err.value.status == 400 and err.value.details["field"] == "body"


SPACES = [
    spaces.Discrete(5, start=-2),
    spaces.Box(-np.inf, np.inf, (3,), np.float32),
    spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, np.inf]), dtype=np.float64),
    spaces.Box(0, 255, (4, 6, 3), np.uint8),
    spaces.MultiDiscrete([3, 4], start=[1, -1]),
    spaces.MultiBinary(4),
    spaces.MultiBinary([2, 3]),
    spaces.Tuple((spaces.Discrete(32), spaces.Discrete(11), spaces.Discrete(2))),
    spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "flag": spaces.Discrete(2)}),
    spaces.Text(8, min_length=1, charset="abc"),
]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize("space", SPACES, ids=str)
def test_spaces_are_described_natively_and_rebuilt_equal(space: spaces.Space[Any], media_type: str) -> None:
    rebuilt = space_codec.rebuild_space(round_trip(space_codec.describe_space(space), media_type))
    assert rebuilt == space and type(rebuilt) is type(space)
    if isinstance(space, spaces.Box):
        assert same(rebuilt.low, space.low) and same(rebuilt.high, space.high)
    sample = space.sample()
    assert rebuilt.contains(round_trip(sample, media_type))


def test_decoded_native_actions_become_members_of_their_space_directly() -> None:
    space = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)))
    action = round_trip((np.int64(2), np.array([0.5, -0.25], np.float32)), native.MSGPACK)
    member = to_member(space, action, "action")
    assert member[0] == 2 and member[1].dtype == np.float32 and space.contains(member)
    with pytest.raises(InvalidValue, match="not in Tuple"):
        to_member(space, (np.int64(3), np.zeros(2, np.float32)), "action")


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, colour type, filtered scanlines), checking the signature and every chunk's CRC."""
    assert data[:8] == png.SIGNATURE
    at, chunks = 8, {}
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        at += 12 + length
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and b"IEND" in chunks
    return width, height, colour, zlib.decompress(chunks[b"IDAT"])


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 7, 4), (5, 7), (1, 1, 1)])
def test_png_frames_decode_to_the_same_pixels(shape: tuple[int, ...]) -> None:
    frame = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    width, height, colour, raw = decode_png(png.encode(frame))
    channels = 1 if len(shape) == 2 else shape[2]
    assert (width, height, colour) == (shape[1], shape[0], {1: 0, 3: 2, 4: 6}[channels])
    rows = np.frombuffer(raw, np.uint8).reshape(height, width * channels + 1)
    assert (rows[:, 0] == 2).all()  # filter Up
    pixels = np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8)  # undo Up: add the row above, modulo 256
    assert pixels.tobytes() == frame.tobytes()


def test_png_is_read_by_a_real_decoder() -> None:
    pygame = pytest.importorskip("pygame")
    frame = np.random.default_rng(3).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    surface = pygame.image.load(io.BytesIO(png.encode(frame)), "frame.png")
    assert np.array_equal(pygame.surfarray.array3d(surface).transpose(1, 0, 2), frame)


def test_png_refuses_what_is_not_an_image() -> None:
    for frame in (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2), np.float32), np.zeros((0, 3, 3), np.uint8)):
        assert not png.is_image(frame)
        with pytest.raises(ValueError, match="expected a non-empty uint8"):
            png.encode(frame)


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [2**40], [-1]])
def test_an_ndarray_shape_too_large_to_make_is_refused_naming_the_field(shape):
    with pytest.raises(InvalidValue) as err:
        native.from_wire({"action": {"$nd": {"dtype": "float32", "shape": shape, "data": []}}})
    assert err.value.details["field"].endswith(".shape")


@pytest.mark.parametrize("relayed_as", MEDIA_TYPES)
@pytest.mark.parametrize("written_as", MEDIA_TYPES)
def test_a_relayed_wire_tree_is_written_as_if_its_value_were(relayed_as: str, written_as: str) -> None:
    """Another worker's answer, parsed but not made native, is written the same as the native answer would be."""
    value = {"observation": np.array([1.5, math.nan], dtype=np.float32), "reward": -math.inf, "info": {"k": (1, 2)}}
    parsed = msgpack.unpackb(native.dumps(value, relayed_as)) if relayed_as == native.MSGPACK else None
    tree = parsed if parsed is not None else orjson.loads(native.dumps(value, relayed_as))
    relayed = native.Wire(tree, binary=relayed_as == native.MSGPACK)
    assert native.dumps({"results": [relayed]}, written_as) == native.dumps({"results": [value]}, written_as)


def test_packb_keeps_no_bytes_of_a_failed_or_large_pack_for_the_next() -> None:
    small = {"observation": b"\x00" * 16, "reward": 1.0, "seq": 3}
    with pytest.raises(TypeError):
        native.packb({"a": 1, "b": object()})  # half written when it fails
    assert native.packb(small) == msgpack.packb(small, use_bin_type=True)
    large = {"frame": b"\x01" * 200_000}
    assert native.packb(large) == msgpack.packb(large, use_bin_type=True)
    assert native.packb(small) == msgpack.packb(small, use_bin_type=True)
