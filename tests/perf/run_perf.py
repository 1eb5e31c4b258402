"""The performance table: gymserve against the in-process limit, the HTTP floor and the seed server.

Not a pass/fail test. On a 2-core machine the server is pinned to core 0 and the load generator
(wrk, or `gymserve bench` for batch and vector stepping) to core 1; every server runs one gunicorn
worker with gymserve's gthread settings. Prints one table with ratios and the issue's targets.

Run (from the repository, after `bash scripts/test.sh` made .venv and Debian's wrk is installed):
    .venv/bin/python tests/perf/run_perf.py [--seconds 8] [--skip-seed] [--live-envs 10000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "integration"))
from seed import ensure_seed_venv, seed_script, seed_venv  # noqa: E402
from wrk import run_wrk  # noqa: E402

from servers import free_port  # noqa: E402

SERVER_CORE, LOAD_CORE = "0", "1"
GUNICORN_FLAGS = ["-k", "gthread", "-w", "1", "--threads", "8", "--keep-alive", "75", "--backlog", "2048"]
FRAME_RAW_BYTES = 400 * 600 * 3


@dataclass
class Row:
    name: str
    clients: int
    steps_per_s: float
    p50_us: float | None = None
    p99_us: float | None = None
    bytes_per_step: float | None = None


@contextmanager
def revision(rev: str) -> Iterator[Path]:
    """Another revision of this repository, checked out into a temporary git worktree: its `service/` directory
    (put it first on PYTHONPATH to run that revision's gymserve)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True)
        try:
            yield tree / "service"
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv]


@contextmanager
def serving(argv: list[str], port: int, ready_path: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """A server pinned to the server core, ready when `ready_path` answers 200; stopped by its process group."""
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv),
        env={**os.environ, **(env or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=HERE,
    )
    try:
        for _ in range(600):
            try:
                if request(port, "GET", ready_path)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{argv} did not come up")
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def request(port: int, method: str, path: str, body: Any = None, media: str = "application/json") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = None if body is None else (json.dumps(body).encode() if media.endswith("json") else msgpack.packb(body))
    conn.request(method, path, body=data, headers={"Content-Type": media, "Accept": media})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if not raw:
        return resp.status, None
    return resp.status, json.loads(raw) if "json" in (resp.getheader("Content-Type") or "") else msgpack.unpackb(raw)


def wrk(port: int, path_fmt: str, ids: list[str], body: bytes, media: str, clients: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        env = {
            "GYMSERVE_IDS": ",".join(ids),
            "GYMSERVE_PATH": path_fmt,
            "GYMSERVE_BODY_FILE": f.name,
            "GYMSERVE_CONTENT_TYPE": media,
            "GYMSERVE_ACCEPT": media,
        }
        result = run_wrk(port, "step_ids.lua", clients, seconds, env, ("taskset", "-c", LOAD_CORE))
    if result["errors"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw errors: {result}")
    return result


def step_rows(
    name: str,
    port: int,
    create: Any,
    path_fmt: str,
    body: bytes,
    media: str,
    seconds: float,
    clients_list: tuple[int, ...] = (1, 16),
) -> list[Row]:
    rows = []
    for clients in clients_list:
        ids = [create() for _ in range(clients)]
        r = wrk(port, path_fmt, ids, body, media, clients, seconds)
        rows.append(
            Row(
                name,
                clients,
                r["requests"] / r["seconds"],
                r["p50_us"],
                r["p99_us"],
                r["bytes"] / max(r["requests"], 1),
            )
        )
    return rows


def in_process(code: str) -> float:
    out = subprocess.run(
        pinned(SERVER_CORE, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=300, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def limit_rows(seconds: float, num_envs: int) -> list[Row]:
    single = in_process(f"""
import time, gymnasium as gym
env = gym.make("CartPole-v1"); env.reset(seed=0); n = 0; end = time.perf_counter() + {seconds}
while time.perf_counter() < end:
    for _ in range(1000):
        if env.step(0)[2]: env.reset()
    n += 1000
print(n / {seconds})""")
    vector = in_process(f"""
import time, numpy as np, gymnasium as gym
env = gym.make_vec("CartPole-v1", {num_envs}, vectorization_mode="sync"); env.reset(seed=0)
a = np.zeros({num_envs}, dtype=np.int64); n = 0; end = time.perf_counter() + {seconds}
while time.perf_counter() < end:
    for _ in range(100):
        env.step(a)
    n += 100 * {num_envs}
print(n / {seconds})""")
    return [
        Row("limit: env.step in process", 1, single),
        Row(f"limit: make_vec sync x{num_envs} in process", 1, vector),
    ]


def gymserve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "GYMSERVE_WORKERS": "1",
        "GYMSERVE_LOG_LEVEL": "warning",
        "GYMSERVE_DRAIN_SECONDS": "0",
        "GYMSERVE_MAX_ENVS_PER_WORKER": "20000",
        "GYMSERVE_MAX_ENVS": "20000",
        **(extra or {}),
    }


def remote_vector_rows(seconds: float, num_envs: int) -> list[Row]:
    """RemoteVectorEnv (a real gymnasium VectorEnv) stepping a server-side vector env: one client on the load
    core, the server on the server core, one request per vector step, as a training loop would."""
    port = free_port()
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    with serving(argv, port, "/readyz", gymserve_env()):
        code = f"""
import time, numpy as np
from gymserve.client import RemoteVectorEnv
env = RemoteVectorEnv("http://127.0.0.1:{port}", "CartPole-v1", num_envs={num_envs})
env.reset(seed=0)
a = np.zeros({num_envs}, dtype=np.int64); n = 0
for _ in range(50):
    env.step(a)
end = time.perf_counter() + {seconds}
while time.perf_counter() < end:
    for _ in range(50):
        env.step(a)
    n += 50 * {num_envs}
env.close()
print(n / {seconds})"""
        out = subprocess.run(
            pinned(LOAD_CORE, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=300, check=True
        )
    return [Row(f"RemoteVectorEnv x{num_envs}, 1 request per step", 1, float(out.stdout.split()[-1]))]


def gymserve_rows(seconds: float) -> list[Row]:
    port = free_port()
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    rows = []
    with serving(argv, port, "/readyz", gymserve_env()):

        def v1_create() -> str:
            iid = request(port, "POST", "/v1/envs/", {"env_id": "CartPole-v1", "auto_reset": True})[1]["instance_id"]
            request(port, "POST", f"/v1/envs/{iid}/reset/", {"seed": 0})
            return iid

        def v2_create(media: str) -> Any:
            def create() -> str:
                iid = request(port, "POST", "/v2/envs", {"env_id": "CartPole-v1", "auto_reset": True}, media)[1]
                request(port, "POST", f"/v2/envs/{iid['instance_id']}/reset", {"seed": 0}, media)
                return str(iid["instance_id"])

            return create

        rows += step_rows(
            "gymserve /v1", port, v1_create, "/v1/envs/%s/step/", b'{"action": 0}', "application/json", seconds
        )
        rows += step_rows(
            "gymserve /v2 JSON",
            port,
            v2_create("application/json"),
            "/v2/envs/%s/step",
            b'{"action": 0}',
            "application/json",
            seconds,
        )
        rows += step_rows(
            "gymserve /v2 msgpack",
            port,
            v2_create("application/msgpack"),
            "/v2/envs/%s/step",
            msgpack.packb({"action": 0}),
            "application/msgpack",
            seconds,
        )
        frame = request(
            port,
            "POST",
            "/v2/envs",
            {
                "env_id": "CartPole-v1",
                "auto_reset": True,
                "kwargs": {"render_mode": "rgb_array"},
                "wrappers": ["AddRenderObservation"],
            },
            "application/msgpack",
        )[1]
        request(port, "POST", f"/v2/envs/{frame['instance_id']}/reset", {"seed": 0}, "application/msgpack")
        r = wrk(
            port,
            "/v2/envs/%s/step",
            [frame["instance_id"]],
            msgpack.packb({"action": 0}),
            "application/msgpack",
            1,
            min(seconds, 3),
        )
        rows.append(
            Row(
                "gymserve /v2 msgpack, 400x600x3 frame obs",
                1,
                r["requests"] / r["seconds"],
                r["p50_us"],
                r["p99_us"],
                r["bytes"] / max(r["requests"], 1),
            )
        )
    return rows


def bench(port: int, master: int, seconds: float, *mode: str) -> dict[str, Any]:
    """`gymserve bench` pinned to the load core: it speaks /v2 msgpack and numbers its calls like RemoteEnv."""
    argv = [
        sys.executable,
        "-m",
        "gymserve.cli",
        "bench",
        "--url",
        f"http://127.0.0.1:{port}",
        "--api",
        "v2",
        "--encoding",
        "msgpack",
        "--seconds",
        f"{seconds:g}",
        "--processes",
        "1",
        "--server-pid",
        str(master),
        "--json",
        *mode,
    ]
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=seconds + 300, check=True)
    report: dict[str, Any] = json.loads(out.stdout)
    if report["errors"]:
        raise RuntimeError(f"gymserve bench saw errors: {report['errors']}")
    return report


def extra_rows(args: argparse.Namespace) -> list[Row]:
    """Vector and batch stepping: many env-steps per request, through `gymserve bench`."""
    port = free_port()
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    rows = []
    with serving(argv, port, "/readyz", gymserve_env()) as master:
        for name, mode in (
            (f"gymserve /v2 vector env x{args.num_envs}, 1 request per step", ["--mode", "vector", "--num-envs"]),
            (f"gymserve /v2 batch step, {args.num_envs} envs per request", ["--mode", "batch", "--batch-size"]),
        ):
            # Two clients keep the server's core busy while each one encodes and decodes on the load core.
            r = bench(port, master, args.seconds, "--clients", "2", *mode, str(args.num_envs))
            lat = r["latency_us"]
            rows.append(Row(name, 2, r["steps_per_s"], lat["p50"], lat["p99"], r.get("bytes_per_request")))
    return rows


def null_rows(seconds: float) -> list[Row]:
    """The floor (a null WSGI app: Python and gunicorn, nothing else) and, for reference, a null Flask app."""
    rows = []
    for name, target in (("null WSGI app (HTTP floor)", "null_app:wsgi"), ("null Flask app", "null_app:app")):
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", *GUNICORN_FLAGS, "-b", f"127.0.0.1:{port}", target]
        with serving(argv, port, "/healthz"):
            step_body = b'{"action": 0}'
            rows += step_rows(name, port, lambda: "x", "/v1/envs/%s/step/", step_body, "application/json", seconds)
    return rows


def seed_rows(seconds: float) -> list[Row]:
    python = ensure_seed_venv(seed_venv())
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "gunicorn"], check=True, timeout=300)
    rows = []
    for how in ("as shipped (Flask dev server)", "under gunicorn, same settings"):
        port = free_port()
        if how.startswith("as shipped"):
            argv = [str(python), str(seed_script()), "-l", "127.0.0.1", "-p", str(port)]
        else:
            argv = [
                str(python),
                "-m",
                "gunicorn",
                *GUNICORN_FLAGS,
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(seed_script().parent),
                "gym_http_server:app",
            ]
        with serving(argv, port, "/v1/envs/"):

            def create(port: int = port) -> str:
                iid = request(port, "POST", "/v1/envs/", {"env_id": "CartPole-v1"})[1]
                request(port, "POST", f"/v1/envs/{iid['instance_id']}/reset/", {"seed": 0})
                return str(iid["instance_id"])

            rows += step_rows(
                f"seed {how}",
                port,
                create,
                "/v1/envs/%s/step/",
                b'{"action": 0}',
                "application/json",
                seconds,
                clients_list=(16,),
            )
    return rows


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def live_env_rows(count: int) -> tuple[list[Row], dict[str, float]]:
    """One worker holding `count` live CartPole envs: creates per second and memory per env."""
    port = free_port()
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    with serving(argv, port, "/readyz", gymserve_env({"GYMSERVE_ENV_TTL_SECONDS": "3600"})) as master:
        worker_pid = int(
            subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=True).stdout.split()[0]
        )
        before = rss_kib(worker_pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = json.dumps({"env_id": "CartPole-v1"}).encode()
        started = time.perf_counter()
        for _ in range(count):
            conn.request("POST", "/v1/envs/", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"create failed with {resp.status}")
        elapsed = time.perf_counter() - started
        conn.close()
        after = rss_kib(worker_pid)
    stats = {
        "envs": count,
        "creates_per_s": count / elapsed,
        "kib_per_env": (after - before) / count,
        "worker_rss_mib": after / 1024,
    }
    return [Row(f"create {count} CartPole envs (1 keep-alive client)", 1, count / elapsed)], stats


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--num-envs", type=int, default=64, help="sub-envs of the vector env")
    parser.add_argument("--live-envs", type=int, default=10_000)
    parser.add_argument("--skip-seed", action="store_true", help="leave out the seed server (it needs its own venv)")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"run_perf: needs {tool} (apt-get install wrk util-linux)", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("run_perf: needs 2 cores (server on one, load generator on the other)", file=sys.stderr)
        return 2
    rows = limit_rows(args.seconds / 2, args.num_envs)
    rows += null_rows(args.seconds)
    if not args.skip_seed:
        rows += seed_rows(args.seconds)
    rows += gymserve_rows(args.seconds)
    rows += remote_vector_rows(args.seconds, args.num_envs)
    rows += extra_rows(args)
    live_rows, live = live_env_rows(args.live_envs)
    rows += live_rows
    print_table(rows, live, args)
    return 0


def find(rows: list[Row], prefix: str, clients: int) -> Row | None:
    return next((r for r in rows if r.name.startswith(prefix) and r.clients == clients), None)


def print_table(rows: list[Row], live: dict[str, float], args: argparse.Namespace) -> None:
    print(
        f"gymserve performance, {time.strftime('%Y-%m-%d')}, server on core {SERVER_CORE}, load on core {LOAD_CORE}, "
        f"{args.seconds:g}s per run"
    )
    print(f"| {'what':<52} | clients | steps/s | p50 us | p99 us | answer bytes |")
    print(f"|{'-' * 54}|---------|---------|--------|--------|--------------|")
    for r in rows:
        p50 = f"{r.p50_us:.0f}" if r.p50_us is not None else ""
        p99 = f"{r.p99_us:.0f}" if r.p99_us is not None else ""
        size = f"{r.bytes_per_step:.0f}" if r.bytes_per_step is not None else ""
        print(f"| {r.name:<52} | {r.clients:>7} | {r.steps_per_s:>7.0f} | {p50:>6} | {p99:>6} | {size:>12} |")
    null1, null16 = find(rows, "null WSGI", 1), find(rows, "null WSGI", 16)
    v2bin1, v2bin16 = find(rows, "gymserve /v2 msgpack", 1), find(rows, "gymserve /v2 msgpack", 16)
    v1_1, v1_16 = find(rows, "gymserve /v1", 1), find(rows, "gymserve /v1", 16)
    seed = find(rows, "seed as shipped", 16)
    seed_g = find(rows, "seed under gunicorn", 16)
    frame = find(rows, "gymserve /v2 msgpack, 400x600x3", 1)
    vec = find(rows, "RemoteVectorEnv", 1)
    limit_vec = find(rows, "limit: make_vec", 1)
    print()
    print("targets:")
    show = [
        (
            "1 client /v2 msgpack p50 vs null WSGI app p50",
            v2bin1 and null1 and ratio(v2bin1.p50_us, null1.p50_us),
            "<= 1.3x",
        ),
        (
            "1 client /v1 p50 vs null WSGI app p50",
            v1_1 and null1 and ratio(v1_1.p50_us, null1.p50_us),
            "<= 1.6x",
        ),
        (
            "16 clients /v1 vs seed as shipped",
            v1_16 and seed and ratio(v1_16.steps_per_s, seed.steps_per_s),
            ">= 2x",
        ),
        (
            "16 clients /v1 vs null WSGI app",
            v1_16 and null16 and ratio(v1_16.steps_per_s, null16.steps_per_s),
            "",
        ),
        (
            "16 clients /v2 msgpack vs seed as shipped",
            v2bin16 and seed and ratio(v2bin16.steps_per_s, seed.steps_per_s),
            ">= 3x",
        ),
        (
            "16 clients /v2 msgpack vs seed under gunicorn",
            v2bin16 and seed_g and ratio(v2bin16.steps_per_s, seed_g.steps_per_s),
            "",
        ),
        (
            "16 clients /v2 msgpack vs null WSGI app",
            v2bin16 and null16 and ratio(v2bin16.steps_per_s, null16.steps_per_s),
            ">= 0.8x",
        ),
        (
            f"vector x{args.num_envs} env-steps/s vs make_vec in process",
            vec and limit_vec and ratio(vec.steps_per_s, limit_vec.steps_per_s),
            ">= 0.5x",
        ),
        (
            "400x600x3 frame answer (HTTP head included) vs raw bytes",
            frame and frame.bytes_per_step and f"{frame.bytes_per_step / FRAME_RAW_BYTES:.3f}x",
            "<= 1.05x",
        ),
    ]
    for label, value, goal in show:
        if value:
            print(f"  {label}: {value}" + (f" (target {goal})" if goal else ""))
    print(
        f"  one worker with {live['envs']:.0f} live CartPole envs: {live['kib_per_env']:.1f} KiB per env, "
        f"{live['creates_per_s']:.0f} creates/s, worker RSS {live['worker_rss_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
