"""GYMSERVE_ENV_MODULES: the operator's modules imported at start, and the env ids each of them registered."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

# What each module registered, recorded at its first import by gymserve (the ids it added to the registry).
_REGISTERED: dict[str, frozenset[str]] = {}


class EnvModuleError(Exception):
    """A module of GYMSERVE_ENV_MODULES could not be imported; the message names it."""


def _defined_in(spec: EnvSpec, module: str) -> bool:
    """Whether the env's entry point lives in `module` or below it (`ale_py.env:AtariEnv` is in `ale_py`)."""
    entry = spec.entry_point
    where = entry.split(":", 1)[0] if isinstance(entry, str) else getattr(entry, "__module__", "") or ""
    return where == module or where.startswith(module + ".")


def import_env_modules(modules: Iterable[str]) -> frozenset[str]:
    """Import each module once (Gymnasium 1.x has no plugin loading) and return the env ids they provide.

    An env counts as the module's when its import registered it, or when its entry point lives in the
    module: the second also holds when the module was imported before gymserve asked for it.
    """
    provided: set[str] = set()
    for module in modules:
        if module not in _REGISTERED:
            before = set(gym.envs.registry)
            try:
                importlib.import_module(module)
            except Exception as exc:  # any failure of the operator's module stops the start, named
                raise EnvModuleError(
                    f"GYMSERVE_ENV_MODULES: cannot import the module '{module}': {type(exc).__name__}: {exc}"
                ) from exc
            _REGISTERED[module] = frozenset(set(gym.envs.registry) - before)
        provided |= _REGISTERED[module]
        provided |= {env_id for env_id, spec in gym.envs.registry.items() if _defined_in(spec, module)}
    return frozenset(provided)
