"""What seed clients do on /v1 (raw HTTP, JSON bodies, base64+zlib observations), and the seed server itself."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

# gym-http-api's python client sends `data=json.dumps(body)` with this header, never `json=`.
JSON_HEADERS = {"Content-Type": "application/json"}
NO_BODY: Any = object()

REPO = Path(__file__).resolve().parents[2]
# The seed calls gym.make positionally, which only Gymnasium 0.29.1 accepts; it also needs numpy<2 and Flask 3.0.
SEED_REQUIREMENTS = ("gymnasium[toy-text]==0.29.1", "numpy<2", "flask==3.0.*")
_SEED_VERSIONS_CHECK = (
    "import importlib.metadata as m, gymnasium, numpy, flask; "
    "assert gymnasium.__version__ == '0.29.1', gymnasium.__version__; "
    "assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__; "
    "assert m.version('flask').startswith('3.0.'), m.version('flask')"
)


@dataclass(frozen=True)
class V1Client:
    """One /v1 server as a seed client sees it."""

    url: str

    def call(
        self, method: str, path: str = "", body: Any = NO_BODY, *, raw: str | bytes | None = None, timeout: float = 60
    ) -> requests.Response:
        data = raw if raw is not None else (None if body is NO_BODY else json.dumps(body))
        return requests.request(method, f"{self.url}/v1/envs/{path}", data=data, headers=JSON_HEADERS, timeout=timeout)

    def ok(self, method: str, path: str = "", body: Any = NO_BODY) -> Any:
        """The JSON answer of a request that must succeed."""
        r = self.call(method, path, body)
        assert r.status_code == 200, f"{method} {path} {body!r} -> {r.status_code}: {r.text[:500]}"
        return r.json()

    def create(self, env_id: str, **fields: Any) -> str:
        return self.ok("POST", "", {"env_id": env_id, **fields})["instance_id"]

    def reset(self, instance_id: str, **fields: Any) -> Any:
        return self.ok("POST", f"{instance_id}/reset/", fields)

    def step(self, instance_id: str, action: Any) -> Any:
        return self.ok("POST", f"{instance_id}/step/", {"action": action})


def decode_observation(payload: dict[str, str]) -> np.ndarray:
    """base64 -> zlib -> numpy.frombuffer with the announced dtype: how seed clients read an observation."""
    return np.frombuffer(zlib.decompress(base64.b64decode(payload["data"])), dtype=np.dtype(payload["type"]))


def decode_frame(payload: dict[str, Any]) -> np.ndarray:
    """A rendered rgb frame: rows x cols x RGBA bytes (the seed adds an alpha channel)."""
    raw = zlib.decompress(base64.b64decode(payload["data"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(payload["rows"], payload["cols"], 4)


def on_the_wire(obs: Any) -> np.ndarray:
    """A local env's observation as /v1 must carry it: flattened, floats as float64, integers as int64."""
    flat = np.asarray(obs).ravel()
    return flat.astype(np.float64 if flat.dtype.kind == "f" else np.int64)


def assert_observation(payload: dict[str, str], expected_obs: Any) -> None:
    expected = on_the_wire(expected_obs)
    assert payload["type"] == str(expected.dtype)
    np.testing.assert_array_equal(decode_observation(payload), expected)


def assert_error(r: requests.Response, status: int, *words: str) -> dict[str, Any]:
    """A clean JSON error: the status, a `message` with the words clients match on, a `code`, no traceback."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in r.text
    body = r.json()
    assert isinstance(body.get("message"), str) and isinstance(body.get("code"), str), body
    for word in words:
        assert word in body["message"], body
    return body


def seed_script() -> Path:
    shared = os.environ.get("GYMSERVE_SHARED_DIR") or str(REPO.parent / "shared")
    return Path(shared) / "seed" / "gym_http_server.py"


def skip_without_seed() -> None:
    """Skip the calling test module, with one line that says how to run it, when the seed server is not beside the
    repository (a user's clone has no ../shared). Where it must be there (GYMSERVE_REQUIRE_SEED=1, as .ci/run sets),
    fail instead, so that CI never passes with the side-by-side tests skipped."""
    script = seed_script()
    if script.exists():
        return
    reason = (
        f"the seed server is not at {script}: to compare against it, put shared/ beside the repository "
        "or set GYMSERVE_SHARED_DIR to the directory that holds seed/"
    )
    if os.environ.get("GYMSERVE_REQUIRE_SEED") == "1":
        pytest.fail(f"GYMSERVE_REQUIRE_SEED=1, but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def seed_venv() -> Path:
    return Path(os.environ.get("GYMSERVE_SEED_VENV") or Path.home() / ".cache" / "gymserve" / "seed-venv")


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _has_seed_versions(python: Path) -> bool:
    return python.exists() and _run([str(python), "-c", _SEED_VERSIONS_CHECK], timeout=120).returncode == 0


def ensure_seed_venv(venv: Path) -> Path:
    """The python of a venv with the seed's versions, built once (under a lock) unless it already has them."""
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not build the same venv at once
        if not _has_seed_versions(python):
            for cmd, timeout in (
                ([sys.executable, "-m", "venv", "--clear", str(venv)], 300),
                ([str(python), "-m", "pip", "install", "--quiet", *SEED_REQUIREMENTS], 900),
            ):
                done = _run(cmd, timeout)
                assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            check = _run([str(python), "-c", _SEED_VERSIONS_CHECK], timeout=120)
            assert check.returncode == 0, f"the seed venv {venv} lacks the seed's versions:\n{check.stderr[-3000:]}"
    return python


def start_seed(server_class: Any, python: Path, port: int, log_path: Path, ready_timeout: float = 60) -> Any:
    """The seed server on 127.0.0.1:<port> as a conftest `Server` (stopped by PID), once it answers."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(python), str(seed_script()), "-l", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            start_new_session=True,
        )
    seed = server_class(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the seed server exited with {proc.returncode}:\n{seed.log()}")
        try:
            if requests.get(f"{seed.url}/v1/envs/", timeout=1).status_code == 200:
                return seed
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    seed.stop(timeout=5)
    raise RuntimeError(f"the seed server did not answer within {ready_timeout}s:\n{seed.log()}")
