"""The kwargs policy of a create: only listed arguments (kwargs_table, or an operator module's declaration) within
their bounds, `render_mode` from the env's metadata, and the operator's exemptions."""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from ..errors import InvalidValue
from ..settings import Settings
from .kwargs_table import DECLARATION, FAMILY_KWARGS, Table

# The plain-value rule an exempt kwarg still passes (GYMSERVE_ENV_KWARGS_ALLOW lifts the list and its bounds,
# not this): no maps, no nesting, nothing unbounded.
MAX_STRING_CHARS = 256  # a FrozenLake row of a 256-wide map; ids, modes and map names are far shorter
MAX_LIST_ITEMS = 256  # the rows of that map; a frameskip range has 2
MAX_MAGNITUDE = 1_000_000
EXEMPT_HINT = "an operator can allow it for an env with GYMSERVE_ENV_KWARGS_ALLOW"


def _describe(value: Any) -> str | None:
    """Why a value is not plain and bounded, or None when it is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "a number must be finite"
        if abs(value) > MAX_MAGNITUDE:
            return f"a number must be within ±{MAX_MAGNITUDE:,}"
        return None
    if isinstance(value, str):
        return f"a string must be at most {MAX_STRING_CHARS} characters" if len(value) > MAX_STRING_CHARS else None
    return f"expected a number, boolean, string or null, or a list of those, got {type(value).__name__}"


def check_value(value: Any) -> str | None:
    """Why an exempt kwarg's value is not plain and bounded, or None when it is."""
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            return f"a list must have at most {MAX_LIST_ITEMS} items"
        for item in value:
            if isinstance(item, list | tuple):
                return "a list must hold numbers, booleans, strings or nulls, not lists"
            why = _describe(item)
            if why:
                return why
        return None
    return _describe(value)


def _same(registered: Any, value: Any) -> bool:
    """Whether a client's value is the registration's own (an operator's module may register an array)."""
    try:
        return type(registered) is type(value) and bool(registered == value)
    except (TypeError, ValueError):
        return False


def _load_creator(env_id: str) -> Any:
    entry_point = gym.spec(env_id).entry_point
    return load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point


class KwargsPolicy:
    """Checks a create's kwargs against its env's table; GYMSERVE_ENV_KWARGS_ALLOW exempts chosen (env, kwarg) pairs.

    `declared`: the tables of GYMSERVE_ENV_MODULES' envs by env id (modules.declared_kwargs); `creator`: the env's
    class or function by id (the factory's, imported once under its lock), for its render modes.
    """

    def __init__(
        self,
        settings: Settings,
        declared: Mapping[str, Table] | None = None,
        creator: Callable[[str], Any] = _load_creator,
    ) -> None:
        self.exemptions: tuple[tuple[str, str], ...] = settings.env_kwargs_exemptions
        self.declared: Mapping[str, Table] = declared or {}
        self.creator = creator

    def exempt(self, env_id: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(env_id, env) and name == kwarg for env, kwarg in self.exemptions)

    def table(self, env_id: str) -> Table:
        """The arguments a client may pass to `env_id`: its module's declaration, else its family's, else none."""
        if env_id in self.declared:
            return self.declared[env_id]
        entry_point = gym.spec(env_id).entry_point
        return FAMILY_KWARGS.get(entry_point, {}) if isinstance(entry_point, str) else {}

    def render_modes(self, env_id: str) -> list[str]:
        metadata = getattr(self.creator(env_id), "metadata", None) or {}
        return [m for m in metadata.get("render_modes", []) if m != "human"]

    def check(self, env_id: str, kwargs: dict[str, Any]) -> None:
        """Raise InvalidValue naming `kwargs.<name>` for the first kwarg the policy refuses."""
        registered = gym.spec(env_id).kwargs
        table = self.table(env_id)
        for name, value in kwargs.items():
            field = f"kwargs.{name}"
            if name == "render_mode":
                modes = self.render_modes(env_id)
                if value is not None and value not in modes:
                    raise InvalidValue(field, f"{value!r} is not available on a server; use one of {modes}")
            elif self.exempt(env_id, name):
                self._check_exempt(env_id, name, value)
            elif name in registered and _same(registered[name], value):
                continue  # the registration's own value (a restore passes them all): no choice of the client's
            elif name not in table:
                raise InvalidValue(field, self._not_listed(env_id, name, table))
            else:
                why = table[name].why(value)
                if why:
                    raise InvalidValue(field, f"{why} ({EXEMPT_HINT})")

    def _not_listed(self, env_id: str, name: str, table: Table) -> str:
        takes = ", ".join(sorted([*table, *(["render_mode"] if self.render_modes(env_id) else [])])) or "none"
        hint = EXEMPT_HINT
        if env_id not in self.declared and gym.spec(env_id).entry_point not in FAMILY_KWARGS:
            hint = f"its module declares no arguments in {DECLARATION}, see docs/custom-envs.md; {EXEMPT_HINT}"
        return f"'{env_id}' takes no argument '{name}' from a client (it takes: {takes}; {hint})"

    def _check_exempt(self, env_id: str, name: str, value: Any) -> None:
        """An exempt kwarg: the constructor must take it and its value be plain and bounded."""
        params = inspect.signature(self.creator(env_id)).parameters.values()
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)  # MuJoCo passes width, height, ... to MujocoEnv
        if not takes_any and not any(p.name == name and p.kind is not p.VAR_POSITIONAL for p in params):
            raise InvalidValue(f"kwargs.{name}", f"'{env_id}' takes no argument '{name}'")
        why = check_value(value)
        if why:
            raise InvalidValue(f"kwargs.{name}", f"{why} (an exempt kwarg must still be a plain value)")
