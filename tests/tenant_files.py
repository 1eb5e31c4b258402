"""Tenants files for tests: two tenants with known keys, written where a test wants them.

Importable as `tenant_files` from any test module (pytest puts tests/ on sys.path for the root conftest).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

KEYS = {"team-a": "gs_key-of-team-a", "team-b": "gs_key-of-team-b"}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write(path: Path, **limits: dict[str, Any]) -> Path:
    """Both tenants, each with its key and the limits given for it, e.g. write(p, **{"team-a": {"max_envs": 2}})."""
    lines = []
    for name, key in KEYS.items():
        lines += [f"[tenants.{name}]", f'key_sha256 = ["{digest(key)}"]']
        lines += [f"{field} = {value}" for field, value in limits.get(name, {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}
