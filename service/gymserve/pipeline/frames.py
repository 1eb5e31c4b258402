"""A viewer's frames: rendered under the env's lock without touching its idle clock, kept until the env moves on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codec import png
from ..errors import InvalidValue, NotSupported, ResetNeeded, Unavailable
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..lifecycle.registry import EnvRecord
from . import operations

# Only modes whose render() is a pure read: rgb_array_list and ansi_list hand over (and clear) the frames the
# env collected, so a viewer would take them from the client; human opens a window on the server.
WATCHABLE = ("rgb_array", "ansi")
# ASCII digits, few enough for int() (a 5,000-digit string is refused by it); a larger index is out of range anyway.
_INDEX = re.compile(r"[0-9]{1,18}")
PNG = "image/png"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Frame:
    """An encoded frame and the env state it shows: (steps, episodes, seq, sub-env)."""

    state: tuple[int, int, int, int]
    body: bytes
    media_type: str


def latest(envs: Envs, instance_id: str, caller: Caller, raw_sub_env: str, wait: float | None = None) -> Frame:
    """The env's frame now; the last one if the env has not moved since, or if it stays busy for `wait` seconds.

    Why not always wait: a long request (a slow env's step, a batch) would stall the viewer, and a viewer
    must never queue up behind training. Why wait at all: steps of a busy env release the lock between
    calls, so a short wait almost always gets a fresh frame.
    """
    record = envs.get(instance_id, caller)
    if not _INDEX.fullmatch(raw_sub_env):  # str.isdigit says yes to "²", which int() refuses
        raise InvalidValue("sub_env", f"expected a sub-env index (a non-negative integer), got {raw_sub_env[:20]!r}")
    sub_env = int(raw_sub_env)
    mode = getattr(record.env, "render_mode", None)
    if mode not in WATCHABLE:
        raise NotSupported(
            f"this env's render_mode is {mode!r}: frames are served for envs created with kwargs.render_mode "
            f"{' or '.join(map(repr, WATCHABLE))}",
            details={"field": "render_mode"},
        )
    if not 0 <= sub_env < record.weight:
        raise InvalidValue("sub_env", f"expected a sub-env index from 0 to {record.weight - 1}, got {sub_env}")
    cached: Frame | None = record.frame_cache
    if cached is not None and cached.state == _state(record, sub_env):
        return cached
    wait = envs.settings.frame_wait_seconds if wait is None else wait
    with envs.watch(instance_id, caller, wait) as locked:
        if locked is not None:
            state = _state(record, sub_env)
            raw = _one(operations.render(record), record, sub_env)
            if isinstance(raw, np.ndarray):
                raw = raw.copy()  # encoded after the lock is released; the env may reuse its buffer
    if locked is None:
        if cached is not None:
            return cached
        raise Unavailable("the env stayed busy with other requests and has no earlier frame; retry", retry_after=1)
    frame = Frame(state, *_encoded(raw, record))
    record.frame_cache = frame
    return frame


def _state(record: EnvRecord, sub_env: int) -> tuple[int, int, int, int]:
    return record.steps, record.episodes, record.seq, sub_env


def _one(raw: Any, record: EnvRecord, sub_env: int) -> Any:
    """A vector env renders a tuple of frames, one per sub-env: the one asked for."""
    return raw[sub_env] if record.num_envs is not None and isinstance(raw, (tuple, list)) else raw


def _encoded(raw: Any, record: EnvRecord) -> tuple[bytes, str]:
    if raw is None:  # classic-control envs draw nothing before their first reset
        raise ResetNeeded(
            f"Instance_id {record.instance_id}: reset the env before asking for a frame",
            details={"instance_id": record.instance_id},
        )
    if isinstance(raw, str):
        return raw.encode("utf-8"), TEXT
    if png.is_image(raw):
        return png.encode(
            raw, level=1
        ), PNG  # level 1: a third of the CPU of 6 for frames polled several times a second
    raise NotSupported(
        f"the env rendered a {type(raw).__name__}, not an image or text", details={"field": "render_mode"}
    )
