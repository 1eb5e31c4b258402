"""Label selectors of list and bulk-delete requests: `?label=run=ppo-7`, repeatable, all must match."""

from __future__ import annotations

import re

from ..errors import InvalidValue
from ..pipeline.models import LABEL_KEY, LABEL_VALUE, MAX_LABELS


def selector(given: list[str]) -> dict[str, str]:
    """The selector of `label=key=value` query parameters; a 422 naming `label` for any that is not one."""
    if len(given) > MAX_LABELS:
        raise InvalidValue("label", f"at most {MAX_LABELS} label selectors, got {len(given)}")
    chosen: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(LABEL_KEY, key) or not re.fullmatch(LABEL_VALUE, value):
            raise InvalidValue("label", f"expected key=value with a label's key and value, got {item[:100]!r}")
        if chosen.get(key, value) != value:
            raise InvalidValue("label", f"{key} is given two values; an env has one")
        chosen[key] = value
    return chosen
