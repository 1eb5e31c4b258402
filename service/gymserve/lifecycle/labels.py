"""Labels, in one place: what a label may be, the selectors of list and bulk delete, and what matches them."""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

from ..errors import InvalidValue

# Labels are Kubernetes-like: a key is a name with an optional DNS-style prefix ("team.example/run"), a value a
# name or empty; bounded in count and length so that they stay cheap to keep, list and match.
# The patterns are searched (msgspec, JSON Schema), so they are anchored at both ends. A plain `$` in Python also
# matches before a trailing newline, which let "x\n" in as a value that no selector could name: `$(?!\n)` is the
# very end in Python and in JSON Schema's (ECMA) regexes alike, where `\Z` is not. The character classes leave
# out every control character.
_END = r"$(?!\n)"
LABEL_NAME = r"[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_KEY_BODY = rf"([a-z0-9]([-a-z0-9.]{{0,61}}[a-z0-9])?/)?{LABEL_NAME}"
LABEL_KEY = rf"^{_KEY_BODY}{_END}"
LABEL_VALUE = rf"^({LABEL_NAME})?{_END}"
SELECTOR = rf"^{_KEY_BODY}=({LABEL_NAME})?{_END}"  # label=key=value of a list or bulk delete (the OpenAPI's too)
SELECTOR_MAX_LENGTH = 127 + 1 + 63
_SELECTOR = re.compile(SELECTOR)
MAX_LABELS = 16
LabelKey = Annotated[str, Meta(pattern=LABEL_KEY, max_length=127)]
LabelValue = Annotated[str, Meta(pattern=LABEL_VALUE, max_length=63)]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Meta(
        max_length=MAX_LABELS,
        description=f'At most {MAX_LABELS} labels, e.g. {{"run": "ppo-7"}}: keys and values like Kubernetes '
        "label names (letters, digits, '-', '_', '.', at most 63 characters; a key may have a 'prefix/'). "
        "GET /v2/envs?label=run=ppo-7 lists, DELETE /v2/envs?label=run=ppo-7 closes the matching envs.",
        examples=[{"run": "ppo-7"}],
    ),
]


_NO_VALUE = "\n"  # no label's value (the pattern refuses control characters): a key given two values matches nothing


def selector(given: list[str]) -> dict[str, str]:
    """The selector of `label=key=value` query parameters; a 422 naming `label` for any that is not one."""
    if len(given) > MAX_LABELS:
        raise InvalidValue("label", f"at most {MAX_LABELS} label selectors, got {len(given)}")
    chosen: dict[str, str] = {}
    for item in given:
        if len(item) > SELECTOR_MAX_LENGTH or not _SELECTOR.search(item):  # searched, as msgspec does at create
            raise InvalidValue("label", f"expected key=value with a label's key and value, got {item[:100]!r}")
        key, _, value = item.partition("=")
        chosen[key] = value if chosen.get(key, value) == value else _NO_VALUE  # two values: nothing matches
    return chosen


def check_bulk(chosen: dict[str, str]) -> None:
    """A bulk delete needs a selector: never "close everything" by a forgotten parameter."""
    if not chosen:
        raise InvalidValue("label", "a bulk delete needs at least one label=key=value; it never closes every env")


def matches(labels: dict[str, str], chosen: dict[str, str]) -> bool:
    """Whether every label of `chosen` is one of `labels` (an empty selector matches every env)."""
    return all(labels.get(k) == v for k, v in chosen.items())
