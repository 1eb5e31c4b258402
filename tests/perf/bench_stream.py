"""The step stream against HTTP steps and the HTTP floor, driven alike: one Python load generator, lockstep clients.

Not a pass/fail test. The server is pinned to core 0 with one worker, the load to core 1 (one process per client).
Each client holds one connection and one CartPole env: it sends a step, waits for its answer, sends the next.
Rows: the null WSGI app under gunicorn (the Python HTTP floor, one gthread worker, keep-alive HTTP), gymserve's
/v2 msgpack step over keep-alive HTTP, gymserve's stream (binary msgpack frames), and with `--openenv-python`
the baseline of issue 23: openenv-core's create_app() serving CartPole-v1 under uvicorn (one worker), one env per
WebSocket on /ws, JSON text frames (openenv_cartpole.py). Server CPU per step is the utime + stime of all the
server's processes over the window (/proc), divided by the steps answered. Then a RemoteVectorEnv of --num-envs
(64) steps over HTTP and over the stream, against make_vec(..., "sync") in process on the server core, with the
load core idle (the issue's baseline) and with it busy (as in the remote rows).

Run (from the repository, after `bash scripts/test.sh` made .venv; OpenEnv in a venv of its own, as its
dependencies are not gymserve's):
    python3 -m venv /tmp/openenv && /tmp/openenv/bin/pip install 'openenv-core>=0.3,<0.4' gymnasium uvicorn
    .venv/bin/python tests/perf/bench_stream.py [--seconds 5] [--clients 1,16] \
        [--openenv-python /tmp/openenv/bin/python]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_perf import GUNICORN_FLAGS, LOAD_CORE, gymserve_env, limit_rows, request, serving  # noqa: E402

from servers import free_port, tree_cpu_seconds  # noqa: E402

STEP = msgpack.packb({"action": 0})
STREAM_STEP = msgpack.packb({"op": "step", "action": 0})
OPENENV_RESET = '{"type": "reset", "data": {"seed": 0}}'
OPENENV_STEP = '{"type": "step", "data": {"action": 0}}'


def client(kind: str, port: int, iid: str, seconds: float, out: Any) -> None:
    """One lockstep client: steps until `seconds` pass; puts (steps, latencies in µs) on `out`."""
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    latencies: list[float] = []
    if kind in ("stream", "openenv"):
        from websockets.sync.client import connect

        url = f"ws://127.0.0.1:{port}" + (f"/v2/envs/{iid}/stream" if kind == "stream" else "/ws")
        step = STREAM_STEP if kind == "stream" else OPENENV_STEP
        with connect(url, compression=None) as ws:
            if kind == "openenv":  # its env is the session's: made at the upgrade, reset here
                ws.send(OPENENV_RESET)
                ws.recv()
            end = time.perf_counter() + seconds
            while (now := time.perf_counter()) < end:
                ws.send(step)
                ws.recv()
                latencies.append((time.perf_counter() - now) * 1e6)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        path = "/v1/envs/x/step/" if kind == "null" else f"/v2/envs/{iid}/step"
        headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        end = time.perf_counter() + seconds
        while (now := time.perf_counter()) < end:
            conn.request("POST", path, STEP, headers)
            conn.getresponse().read()
            latencies.append((time.perf_counter() - now) * 1e6)
    out.put((len(latencies), latencies))


def vector_steps(port: int, num_envs: int, stream: bool, seconds: float, out: Any) -> None:
    """A RemoteVectorEnv of `num_envs` stepping in a loop on the load core: puts its env-steps per second."""
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    import numpy as np

    from gymserve.client import RemoteVectorEnv

    with RemoteVectorEnv(f"http://127.0.0.1:{port}", "CartPole-v1", num_envs, stream=stream, keepalive=False) as envs:
        envs.reset(seed=0)
        actions, steps, end = np.zeros(num_envs, np.int64), 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            envs.step(actions)
            steps += num_envs
    out.put(steps / seconds)


def drive(kind: str, port: int, server_pid: int, clients: int, seconds: float) -> tuple[float, float, float]:
    """Steps/s, median latency (µs) and server CPU µs per step of `clients` lockstep clients."""
    ids = ["x"] * clients
    if kind not in ("null", "openenv"):
        ids = []
        for _ in range(clients):
            made: Any = request(port, "POST", "/v2/envs", {"env_id": "CartPole-v1", "auto_reset": True})[1]
            request(port, "POST", f"/v2/envs/{made['instance_id']}/reset", {"seed": 0})
            ids.append(made["instance_id"])
    out: Any = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client, args=(kind, port, iid, seconds, out)) for iid in ids]
    cpu_before = tree_cpu_seconds(server_pid)
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    for proc in procs:
        proc.join()
    steps = sum(n for n, _ in results)
    latencies = [x for _, lat in results for x in lat]
    return steps / seconds, statistics.median(latencies), cpu / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--openenv-python", help="the python of a venv with openenv-core, gymnasium and uvicorn")
    parser.add_argument("--num-envs", type=int, default=64, help="the RemoteVectorEnv rows' sub-envs")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every row; the medians are printed")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    vector_samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # every server once a round: drift on the machine hits each row alike
        one_round(args, counts, samples, vector_samples)
    rows = {key: tuple(statistics.median(x[i] for x in got) for i in range(3)) for key, got in samples.items()}
    print(f"medians of {args.rounds} round(s) of {args.seconds:g} s")
    head = f"{'row':<30}{'clients':>8}{'steps/s':>10}{'p50 µs':>9}{'CPU µs/step':>13}{'x floor s/s':>13}{'x CPU':>8}"
    print(head + ("  x OpenEnv s/s" if args.openenv_python else ""))
    for (name, n), (rate, p50, cpu) in rows.items():
        base = rows["null WSGI app, HTTP", n]
        line = f"{name:<30}{n:>8}{rate:>10,.0f}{p50:>9,.0f}{cpu:>13,.0f}{rate / base[0]:>13.2f}{cpu / base[2]:>8.2f}"
        peer = rows.get(("OpenEnv /ws, JSON", n))
        print(line + (f"{rate / peer[0]:>16.2f}" if peer else ""))
    in_process = vector_in_process(args, load_core_busy=False)
    busy = vector_in_process(args, load_core_busy=True)
    print(f"\nmake_vec sync x{args.num_envs} in process (server core): {in_process:,.0f} env-steps/s")
    print(f"the same, while a spinning process holds the load core: {busy:,.0f} env-steps/s")
    for how, rates in vector_samples.items():
        rate = statistics.median(rates)
        print(
            f"RemoteVectorEnv x{args.num_envs} over {how}: {rate:,.0f} env-steps/s, {rate / in_process:.2f}x in process"
            f" ({rate / busy:.2f}x in process with the load core busy)"
        )


def vector_in_process(args: argparse.Namespace, load_core_busy: bool) -> float:
    """make_vec in process on the server core: with the load core idle (the issue's baseline), or busy as the load
    generator keeps it in the remote rows (on some VMs the two cores share one physical core: this shows it)."""
    spinner = None
    if load_core_busy:
        spinner = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, "-c", "while True: pass"])
    try:
        return next(r.steps_per_s for r in limit_rows(args.seconds, args.num_envs) if "make_vec" in r.name)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def one_round(
    args: argparse.Namespace,
    counts: list[int],
    samples: dict[tuple[str, int], list[tuple[float, float, float]]],
    vector_samples: dict[str, list[float]],
) -> None:
    port = free_port()
    floor = [sys.executable, "-m", "gunicorn", *GUNICORN_FLAGS, "-b", f"127.0.0.1:{port}", "null_app:wsgi"]
    with serving(floor, port, "/healthz") as pid:
        for n in counts:
            samples.setdefault(("null WSGI app, HTTP", n), []).append(drive("null", port, pid, n, args.seconds))
    if args.openenv_python:
        port = free_port()
        baseline = [args.openenv_python, "-m", "uvicorn", "openenv_cartpole:app", "--port", str(port), "--workers", "1"]
        with serving([*baseline, "--log-level", "warning"], port, "/health") as pid:
            for n in counts:
                samples.setdefault(("OpenEnv /ws, JSON", n), []).append(drive("openenv", port, pid, n, args.seconds))
    port = free_port()
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    with serving(argv, port, "/readyz", gymserve_env()) as pid:
        for kind, name in (("http", "gymserve /v2 msgpack, HTTP"), ("stream", "gymserve stream, msgpack")):
            for n in counts:
                samples.setdefault((name, n), []).append(drive(kind, port, pid, n, args.seconds))
        for stream in (False, True):
            out: Any = multiprocessing.Queue()
            proc = multiprocessing.Process(target=vector_steps, args=(port, args.num_envs, stream, args.seconds, out))
            proc.start()
            vector_samples.setdefault("stream" if stream else "HTTP", []).append(out.get(timeout=args.seconds + 60))
            proc.join()


if __name__ == "__main__":
    main()
