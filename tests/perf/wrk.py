"""Running wrk with one of this folder's Lua scripts and reading back the JSON line the script prints."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run_wrk(
    port: int, script: str, clients: int, seconds: float, env: dict[str, str], prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`clients` wrk threads with one connection each for `seconds`; `prefix` e.g. pins it to a core."""
    argv = [
        *prefix,
        "wrk",
        f"-t{clients}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(HERE / script),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=seconds + 120, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
