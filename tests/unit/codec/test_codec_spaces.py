"""Space descriptions for every Gymnasium space, rebuilt by the client, and JSON actions checked."""

import numpy as np
import pytest
from gymnasium import spaces

from gymserve.codec.actions import to_member as from_json
from gymserve.codec.seed import to_jsonable
from gymserve.codec.spaces import describe, rebuild
from gymserve.errors import InvalidValue

ALL_SPACES = [
    spaces.Discrete(5, start=-2),
    spaces.Box(-np.inf, np.inf, (3,), np.float32),
    spaces.Box(0, 255, (2, 2, 3), np.uint8),
    spaces.MultiDiscrete([2, 3, 4]),
    spaces.MultiBinary(4),
    spaces.Tuple((spaces.Discrete(2), spaces.Box(-1, 1, (2,), np.float64))),
    spaces.Dict({"a": spaces.Discrete(3), "b": spaces.MultiBinary([2, 2])}),
    spaces.Text(5, min_length=1, charset="abc"),
]


@pytest.mark.parametrize("space", ALL_SPACES, ids=lambda s: type(s).__name__)
def test_every_space_is_described_rebuilt_and_its_samples_accepted_from_json(space):
    rebuilt = rebuild(describe(space))
    assert rebuilt == space
    space.seed(1)
    for _ in range(20):
        value = to_jsonable(space.sample())
        assert space.contains(from_json(space, value, "action"))


def test_box_description_replaces_infinities_like_the_seed():
    info = describe(spaces.Box(-np.inf, np.inf, (2,), np.float32))
    assert info["low"] == [np.finfo(np.float64).min] * 2 and info["high"] == [np.finfo(np.float64).max] * 2
    assert info["shape"] == [2] and info["name"] == "Box"


@pytest.mark.parametrize(
    ("space", "value", "words"),
    [
        (spaces.Discrete(2), 2, "not in"),
        (spaces.Discrete(2), "1", "expected an integer"),
        (spaces.Discrete(2), True, "expected an integer"),
        (spaces.Discrete(2), 0.5, "expected an integer"),
        (spaces.Discrete(2), [0], "expected an integer"),
        (spaces.Box(-1, 1, (2,), np.float32), [0.5], "shape"),
        (spaces.Box(-1, 1, (2,), np.float32), [0.5, 3.0], "not in"),
        (spaces.Box(-1, 1, (2,), np.float32), ["a", "b"], "numbers"),
        (spaces.Box(-1, 1, (2,), np.float32), [float("nan"), 0.0], "NaN"),
        (spaces.Box(-1, 1, (2,), np.float32), [[1, 2], [3]], "list of numbers"),
        (spaces.MultiDiscrete([2, 2]), [0, 1.5], "integers"),
        (spaces.MultiDiscrete([2, 2]), [0, 10**19], "out of range"),
        (spaces.MultiDiscrete([2, 2]), [0, 10**30], "numbers"),
        (spaces.Tuple((spaces.Discrete(2),)), [0, 1], "list of 1"),
        (spaces.Dict({"a": spaces.Discrete(2)}), {"b": 0}, "keys"),
        (spaces.Text(3), 5, "string"),
    ],
)
def test_bad_actions_are_refused_naming_the_field(space, value, words):
    with pytest.raises(InvalidValue) as err:
        from_json(space, value, "action")
    assert words in err.value.message and err.value.details["field"].startswith("action")


def test_flattened_box_action_is_reshaped_as_seed_clients_send_it():
    space = spaces.Box(-1, 1, (2, 2), np.float32)
    assert from_json(space, [0.1, 0.2, 0.3, 0.4], "action").shape == (2, 2)


def test_the_kinds_are_the_spaces_described_with_their_fields_and_rebuilt():
    from gymserve.codec.spaces import KINDS, describe_space, rebuild_space

    assert {type(space).__name__ for space in ALL_SPACES} == set(KINDS), "every kind is exercised above"
    for space in ALL_SPACES:
        assert describe(space)["name"] in KINDS and len(describe(space)) > 1
        assert rebuild_space(describe_space(space)) == space
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        rebuild({"name": "Sequence"})
