"""An env's state copied: in memory for a fork (deepcopy), or sealed into an authenticated blob for a snapshot."""

from __future__ import annotations

import copy
from typing import Any

from .errors import NotSupported


def copy_env(env: Any) -> Any:
    """A deep copy of `env` (random generators included), or a 422 not_supported that says what could not be copied."""
    try:
        return copy.deepcopy(env)
    except Exception as exc:  # whatever an env holds that cannot be copied (a pygame clock, a socket, a lock)
        raise _not_copyable(exc) from None


def _not_copyable(exc: Exception) -> NotSupported:
    return NotSupported(
        f"this env cannot be copied: {type(exc).__name__}: {str(exc)[:200]} (an env holding a renderer's window or "
        "clock, a socket or a lock cannot be forked or snapshotted; one created without render_mode often can)",
        details={"field": "instance_id"},
    )
