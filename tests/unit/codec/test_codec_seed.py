"""The seed's /v1 observation and frame format, and the losses of the seed that it no longer has."""

import base64
import zlib

import numpy as np
from gymnasium import spaces

from gymserve.codec import seed as v1


def raw(payload):
    return np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), dtype=payload["type"])


def test_float32_box_is_flattened_and_widened_to_float64_like_the_seed():
    obs = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = v1.encode_observation(obs)
    assert payload["type"] == "float64"
    assert raw(payload).tolist() == [0, 1, 2, 3, 4, 5]


def test_uint8_and_int32_widen_to_int64_and_python_ints_become_int64():
    assert v1.encode_observation(np.zeros((2, 2), np.uint8))["type"] == "int64"
    assert v1.encode_observation(np.zeros(3, np.int32))["type"] == "int64"
    payload = v1.encode_observation(7)
    assert payload["type"] == "int64" and raw(payload).tolist() == [7]


def test_tuple_observation_keeps_every_element_where_the_seed_kept_only_the_first():
    payload = v1.encode_observation((20, 7, 0))  # Blackjack
    assert payload["type"] == "int64" and raw(payload).tolist() == [20, 7, 0]


def test_dict_and_tuple_round_trip_through_observation_for():
    space = spaces.Dict(
        {
            "pos": spaces.Box(-1, 1, (2,), np.float32),
            "flag": spaces.Discrete(3),
            "pair": spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(2))),
        }
    )
    space.seed(0)
    value = space.sample()
    back = v1.observation_for(space, v1.encode_observation(value))
    assert space.contains(back)
    assert np.array_equal(back["pos"], value["pos"]) and back["flag"] == value["flag"]
    assert back["pair"][0] == value["pair"][0] and np.array_equal(back["pair"][1], value["pair"][1])


def test_text_observation_is_utf8():
    assert v1.observation_for(spaces.Text(8), v1.encode_observation("héllo")) == "héllo"


def test_rgb_frame_gets_the_seeds_alpha_channel_and_decodes_back():
    frame = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    payload = v1.encode_frame(frame)
    assert (payload["rows"], payload["cols"]) == (4, 5)
    rgba = np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), np.uint8).reshape(4, 5, 4)
    assert (rgba[:, :, 3] == 255).all()
    assert np.array_equal(v1.decode_frame(payload), frame)


def test_text_frames_and_frame_lists_pass_through():
    assert v1.encode_frame("\nSFFF\n") == "\nSFFF\n"
    frames = [np.zeros((1, 1, 3), np.uint8)] * 2
    assert [f["rows"] for f in v1.encode_frame(frames)] == [1, 1]
