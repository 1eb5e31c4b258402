"""The vetted policy for a create's kwargs: plain bounded values, never a file or a module, operator overrides."""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Any

from ..errors import InvalidValue
from ..settings import Settings

# A kwarg whose name says it points at something outside the request (a file, a directory, a module, a
# URL) is refused: MuJoCo's `xml_file` would otherwise let a client make the server read any path.
NAME_REFUSED = re.compile(r"(?:^|_)(?:files?|filename|paths?|dirs?|directory|modules?|urls?)(?:$|_)", re.IGNORECASE)
MAX_STRING_CHARS = 256  # a FrozenLake row of a 256-wide map; ids, modes and map names are far shorter
MAX_LIST_ITEMS = 256  # the rows of that map; a frameskip range has 2
MAX_MAGNITUDE = 1_000_000  # render sizes, frame skips and physics constants are far below this


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
    """Why a kwarg's value breaks the policy, or None when it is allowed."""
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


class KwargsPolicy:
    """Checks a create's kwargs; GYMSERVE_ENV_KWARGS_ALLOW exempts chosen (env pattern, kwarg) pairs."""

    def __init__(self, settings: Settings) -> None:
        self.exemptions: tuple[tuple[str, str], ...] = settings.env_kwargs_exemptions

    def exempt(self, env_id: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(env_id, env) and name == kwarg for env, kwarg in self.exemptions)

    def check(self, env_id: str, kwargs: dict[str, Any]) -> None:
        """Raise InvalidValue naming `kwargs.<name>` for the first kwarg the policy refuses."""
        for name, value in kwargs.items():
            if self.exempt(env_id, name):
                continue
            if NAME_REFUSED.search(name):
                raise InvalidValue(
                    f"kwargs.{name}",
                    "a kwarg that names a file, path, directory, module or URL is refused "
                    "(an operator can allow it for an env with GYMSERVE_ENV_KWARGS_ALLOW)",
                )
            why = check_value(value)
            if why:
                raise InvalidValue(
                    f"kwargs.{name}", f"{why} (an operator can allow it for an env with GYMSERVE_ENV_KWARGS_ALLOW)"
                )
