"""How an env's state is pickled (for a fork, a snapshot and a park): by its attributes, its renderer left out.

Two of Gymnasium's own choices would make a copy silently wrong or impossible:
- `EzPickle` envs (MuJoCo, Box2D, Atari) pickle as their constructor's arguments, so a copy is a *fresh* env, not
  the one stepped. Here they pickle by their attributes, like any object: MuJoCo's model and data pickle, so a
  MuJoCo env moves exactly; Box2D's world does not, so a Box2D env says it cannot be copied.
- A renderer (a pygame surface or clock, MuJoCo's GL contexts) cannot be pickled and is not state. A pygame
  surface or clock loads as None (the classic-control envs make a new one at their next render); MuJoCo's
  renderer loads as a new one over the copied model and data, with no viewer until the next render.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

from gymnasium.utils import EzPickle


def _nothing() -> None:
    return None


def _by_attributes(cls: Any, attributes: dict[str, Any]) -> Any:
    env = cls.__new__(cls)
    env.__dict__.update(attributes)
    return env


def _renderers() -> tuple[type, ...]:
    """The renderer classes of the libraries loaded in this process (an env that uses one has loaded it)."""
    found: list[type] = []
    pygame = sys.modules.get("pygame")
    if pygame is not None:
        found += [pygame.Surface, pygame.time.Clock]
    return tuple(found)


def _mujoco_renderer() -> Any:
    module = sys.modules.get("gymnasium.envs.mujoco.mujoco_rendering")
    return None if module is None else module.MujocoRenderer


_PLAIN, _RENDERER, _MUJOCO_RENDERER, _BY_ATTRIBUTES = range(4)
# pickle asks for every object: what to do is decided once per type (a renderer's class exists only once its library
# is loaded, so no type is ever decided before it could be seen as one).
_KINDS: dict[type, int] = {}


class _EnvPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._renderers = _renderers()
        self._mujoco_renderer: Any = _mujoco_renderer()

    def _kind(self, cls: type) -> int:
        if self._renderers and issubclass(cls, self._renderers):
            return _RENDERER
        if self._mujoco_renderer is not None and issubclass(cls, self._mujoco_renderer):
            return _MUJOCO_RENDERER
        if issubclass(cls, EzPickle) and not issubclass(cls, type):
            return _BY_ATTRIBUTES
        return _PLAIN

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        kind = _KINDS.get(cls)
        if kind is None:
            kind = _KINDS[cls] = self._kind(cls)
        if kind == _PLAIN:
            return NotImplemented
        if kind == _RENDERER:
            return (_nothing, ())
        if kind == _MUJOCO_RENDERER:
            return (
                cls,
                (obj.model, obj.data, obj.default_cam_config, obj.width, obj.height, obj.max_geom, obj.camera_id),
            )
        return (_by_attributes, (cls, obj.__dict__))


class TooLarge(Exception):
    """The pickle would pass its limit: it was stopped there."""


class _Bounded(io.BytesIO):
    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:  # pickle writes frames of at most 64 KiB (protocol 4+)
        if self.limit is not None and self.tell() + len(data) > self.limit:
            raise TooLarge
        return super().write(data)


def dumps(obj: Any, limit: int | None = None) -> bytes:
    """`obj` pickled by the rules above (raises what pickle raises for what cannot be pickled, and TooLarge as soon
    as the pickle passes `limit` bytes)."""
    out = _Bounded(limit)
    _EnvPickler(out).dump(obj)
    return out.getvalue()


def copied(obj: Any) -> Any:
    """A copy of `obj` by the same rules (a fork): the very state a snapshot or a park would carry."""
    return pickle.loads(dumps(obj))
