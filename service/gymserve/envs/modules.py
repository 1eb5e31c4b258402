"""GYMSERVE_ENV_MODULES: the operator's modules imported at start, the env ids each registered, and the constructor
arguments each declares for them (GYMSERVE_KWARGS)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from .kwargs_table import DECLARATION, Table, from_declaration

# What each module registered, recorded at its first import by gymserve (the ids it added to the registry).
_REGISTERED: dict[str, frozenset[str]] = {}


class EnvModuleError(Exception):
    """A module of GYMSERVE_ENV_MODULES could not be imported, or declares its kwargs wrongly; the message names it."""


def _defined_in(spec: EnvSpec, module: str) -> bool:
    """Whether the env's entry point lives in `module` or below it (`ale_py.env:AtariEnv` is in `ale_py`)."""
    entry = spec.entry_point
    where = entry.split(":", 1)[0] if isinstance(entry, str) else getattr(entry, "__module__", "") or ""
    return where == module or where.startswith(module + ".")


def _provided_by(module: str) -> frozenset[str]:
    ids = {env_id for env_id, spec in gym.envs.registry.items() if _defined_in(spec, module)}
    return _REGISTERED.get(module, frozenset()) | ids


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
        provided |= _provided_by(module)
    return frozenset(provided)


def declared_kwargs(modules: Iterable[str]) -> dict[str, Table]:
    """The kwargs tables the (imported) modules declare in a module-level GYMSERVE_KWARGS, by env id.

    A module that declares nothing serves its envs without kwargs. A declaration that is malformed, or names an
    env the module does not provide (a typo), stops the start with EnvModuleError.
    """
    tables: dict[str, Table] = {}
    for module in modules:
        declared = getattr(sys.modules.get(module), DECLARATION, None)
        if declared is None:
            continue
        try:
            mine = from_declaration(declared)
        except ValueError as exc:
            raise EnvModuleError(f"GYMSERVE_ENV_MODULES: the module '{module}': {exc}") from None
        foreign = sorted(set(mine) - _provided_by(module))
        if foreign:
            raise EnvModuleError(
                f"GYMSERVE_ENV_MODULES: the module '{module}' declares {DECLARATION} for {', '.join(foreign)}, "
                "which it does not register"
            )
        tables.update(mine)
    return tables
