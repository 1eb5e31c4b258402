"""Instance ids: who owns an env (replica, worker slot, worker generation) plus 128 random bits."""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import NamedTuple

from ..settings import NODE_ID_PATTERN

# <node>.<slot>-<generation>.<32 hex digits>, e.g. "gymserve-0.1-3.9f0c4b...". The router and the
# workers accept nothing else, so an id can never smuggle a path, a host or a port anywhere.
INSTANCE_ID_PATTERN = (
    rf"(?P<node>{NODE_ID_PATTERN})\.(?P<slot>[0-9]{{1,3}})-(?P<gen>[0-9]{{1,9}})\.(?P<token>[0-9a-f]{{32}})"
)
_ID_RE = re.compile(INSTANCE_ID_PATTERN)
MAX_ID_LENGTH = 63 + 1 + 3 + 1 + 9 + 1 + 32


class Owner(NamedTuple):
    node: str
    slot: int
    generation: int


@lru_cache(maxsize=16384)  # every request parses its id: the envs in use are parsed once (a regex costs 2-3 us)
def parse(instance_id: str) -> Owner | None:
    """The owner named by a well-formed id, or None for anything else."""
    if len(instance_id) > MAX_ID_LENGTH:
        return None
    m = _ID_RE.fullmatch(instance_id)
    if m is None:
        return None
    return Owner(m["node"], int(m["slot"]), int(m["gen"]))


class IdMinter:
    """Mints ids owned by one worker: this node, this slot, this generation."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self._prefix = f"{owner.node}.{owner.slot}-{owner.generation}."

    def mint(self) -> str:
        return self._prefix + secrets.token_hex(16)
