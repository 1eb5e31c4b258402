"""What one answer of an env weighs, known at create: observation bytes from its spaces, and its rendered frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from ..errors import AnswerTooLarge

SETTING = "GYMSERVE_MAX_ANSWER_BYTES"


def space_bytes(space: spaces.Space[Any]) -> int:
    """The bytes of one value of `space` as an array (the JSON or msgpack of it is larger, never smaller)."""
    if isinstance(space, spaces.Dict):
        return sum(space_bytes(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return sum(space_bytes(s) for s in space.spaces)
    if isinstance(space, spaces.Text):
        return space.max_length * 4
    shape, dtype = getattr(space, "shape", None), getattr(space, "dtype", None)
    if shape is None or dtype is None:
        return 8  # a space of no fixed size (Graph, Sequence): counted as one number, bounded by the env itself
    return math.prod(shape) * np.dtype(dtype).itemsize


def check(env: Any, copies: int, limit: int, renders: bool) -> None:
    """Refuse an env (`copies` sub-envs like `env`) whose observations or renders would exceed `limit` bytes.

    `renders`: the env renders rgb frames that are not already part of its observation, so a render of
    the vector env answers `copies` of them: one frame is taken from `env` to weigh them.
    """
    size = space_bytes(env.observation_space) * copies
    if size > limit:
        raise AnswerTooLarge("observation_space", size, limit, SETTING)
    if renders:
        env.reset()
        frame = env.render()
        size = int(getattr(frame, "nbytes", 0)) * copies
        if size > limit:
            raise AnswerTooLarge("render_mode", size, limit, SETTING)
