"""A real redis-server for tests (Debian's package): a free port below 32768, no persistence, stopped by PID.

Importable as `stores` from any test module (pytest puts tests/ on sys.path for the root conftest).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from servers import free_port


@contextmanager
def redis_server(tmp_path: Path, password: str = "") -> Iterator[str]:
    """A fresh redis-server on 127.0.0.1 (asking for `password` when given); yields its redis:// URL."""
    with redis_process(tmp_path, password) as (url, _):
        yield url


@contextmanager
def redis_process(tmp_path: Path, password: str = "") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh redis-server on 127.0.0.1; yields its redis:// URL and its process (to pause it, say)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("these tests need a real Redis: apt-get install redis-server (scripts/test.sh does)")
    port = free_port()
    log = open(tmp_path / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            *(["--requirepass", password] if password else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, password=password or None).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / f"redis-{port}.log").read_text()) from None
                time.sleep(0.05)
        yield url, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a paused one, too
        proc.terminate()
        proc.wait(10)
        log.close()
