"""What an env costs, known at create: the memory making it took, and what one answer of it weighs (observation
bytes from its spaces, its rendered frames, and the descriptions of its spaces that the create, GET /v2/envs/<id>
and /v1's space routes answer). A client's own env is never probed: a reset or render would move its state."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import orjson
from gymnasium import spaces

from ..codec import spaces as space_codec
from ..codec import values
from ..errors import AnswerTooLarge, EnvTooLarge

SETTING = "GYMSERVE_MAX_ANSWER_BYTES"
MEMORY_SETTING = "GYMSERVE_MAX_ENV_BYTES"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident memory now (Linux's /proc/self/statm; 0 where there is none: nothing is weighed)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def check_memory(made: int, copies: int, limit: int) -> None:
    """Refuse an env whose making grew the worker by `made` bytes (per sub-env: `copies` of them) over `limit`.

    The worker's resident growth while it was made: what the env holds (its tables, its model, its buffers),
    plus anything another thread allocated meanwhile (an overestimate, never an underestimate of a big env).
    """
    size = max(0, made) * copies
    if size > limit:
        raise EnvTooLarge(size, limit, MEMORY_SETTING)


def check_answer(size: int, limit: int) -> None:
    """Refuse to send an answer of `size` bytes over `limit`: a step's info or a batch is the env's to fill, and no
    answer may be huge (an /v1 episodes recording has its own bound)."""
    if size > limit:
        raise AnswerTooLarge("answer", size, limit, SETTING)


def check_spaces(env: Any, limit: int) -> None:
    """Refuse an env whose space descriptions (in the create answer, GET /v2/envs/<id> and /v1's space routes, as
    JSON, their largest form) exceed `limit` bytes: a Box's per-element bounds can outweigh its observation."""
    for field, space in (("observation_space", env.observation_space), ("action_space", env.action_space)):
        v1 = len(orjson.dumps(space_codec.describe(space), option=orjson.OPT_SERIALIZE_NUMPY))
        size = max(v1, len(values.dumps(space_codec.describe_space(space), values.JSON)))
        if size > limit:
            raise AnswerTooLarge(field, size, limit, SETTING)


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
