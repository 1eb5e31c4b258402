"""Issue 24's goal, measured: 24 stuck env calls on a two-worker server, and what everyone else sees meanwhile.

Not a pass/fail test (tests/integration/lifecycle/test_stuck_envs.py holds each rule). Half the stuck calls
busy-loop in Python (the watchdog stops them), half sleep for an hour (nothing can: they are written off, and
each worker, over GYMSERVE_MAX_STUCK_THREADS, parks its other envs and is replaced). Meanwhile 8 other envs step
and /healthz is polled. Prints the slowest step and probe while the calls were stuck, what each stuck client got
and when, whether any other env was lost, and the workers' CPU over the seconds after.

Run (from the repository, after `bash scripts/test.sh` made .venv):
    .venv/bin/python tests/perf/bench_stuck.py [--deadline 30] [--after 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "integration" / "lifecycle")]
from test_stuck_envs import BUSY_LOOP, MODULE, SLEEP, STUCK  # noqa: E402

from servers import start_server, tree_cpu_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deadline", type=float, default=30.0, help="GYMSERVE_STEP_TIMEOUT_SECONDS")
    parser.add_argument("--after", type=float, default=100.0, help="seconds after the calls began to look at CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "stuck_envs.py").write_text(MODULE)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p)
        srv = start_server(Path(tmp), env_modules="stuck_envs", step_timeout_seconds=args.deadline)
        try:
            run(srv.url, srv, args.deadline, args.after)
        finally:
            srv.stop()


def post(url: str, body: Any, timeout: float = 120) -> requests.Response:
    return requests.post(url, json=body, timeout=timeout)


def run(url: str, srv: Any, deadline: float, after: float) -> None:
    def made() -> str:
        iid = str(post(url + "/v2/envs", {"env_id": STUCK}).json()["instance_id"])
        post(f"{url}/v2/envs/{iid}/reset", {"seq": 1})
        return iid

    stuck, others = [made() for _ in range(24)], [made() for _ in range(8)]
    answers: dict[str, tuple[float, int, str]] = {}

    def stick(iid: str, action: int) -> None:
        started = time.monotonic()
        resp = post(f"{url}/v2/envs/{iid}/step", {"action": action})
        answers[iid] = (time.monotonic() - started, resp.status_code, resp.json()["error"]["code"])

    began = time.monotonic()
    for n, iid in enumerate(stuck):
        threading.Thread(target=stick, args=(iid, BUSY_LOOP if n % 2 else SLEEP), daemon=True).start()
    slowest_stuck = slowest_step = slowest_probe = 0.0  # slowest_stuck: before the first deadline passed
    while_stuck: list[tuple[float, float]] = []  # (when, seconds) of each other env's step then
    seq = {iid: 1 for iid in others}
    statuses: dict[int, int] = {}
    while time.monotonic() - began < deadline + 5:
        for iid in others:
            seq[iid] += 1
            started = time.monotonic()
            resp = post(f"{url}/v2/envs/{iid}/step", {"action": 0, "seq": seq[iid]})
            while resp.status_code == 503:  # moving: its worker is being replaced; the client retries
                time.sleep(0.2)
                resp = post(f"{url}/v2/envs/{iid}/step", {"action": 0, "seq": seq[iid]})
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            slowest_step = max(slowest_step, time.monotonic() - started)
            if time.monotonic() - began < deadline:
                slowest_stuck = max(slowest_stuck, time.monotonic() - started)
                while_stuck.append((started - began, time.monotonic() - started))
        started = time.monotonic()
        requests.get(url + "/healthz", timeout=30)
        slowest_probe = max(slowest_probe, time.monotonic() - started)
        time.sleep(0.05)
    lost = [iid for iid in others if requests.get(f"{url}/v2/envs/{iid}", timeout=30).status_code != 200]
    time.sleep(max(0.0, after - 10 - (time.monotonic() - began)))
    before = tree_cpu_seconds(srv.proc.pid)
    time.sleep(10)
    burnt = (tree_cpu_seconds(srv.proc.pid) - before) / 10
    kinds = sorted({(status, code) for _, status, code in answers.values()})
    print(f"stuck calls: 24 (12 busy loops, 12 sleeps), deadline {deadline:g} s")
    print(
        f"  answered: {len(answers)} of 24, {kinds}, in {min(a[0] for a in answers.values()):.2f}-"
        f"{max(a[0] for a in answers.values()):.2f} s"
    )
    print(f"other envs' steps: {sum(statuses.values())}, statuses {statuses}")
    print(f"  slowest while the calls were stuck (before their deadline): {slowest_stuck:.3f} s")
    times = sorted(seconds for _, seconds in while_stuck)
    late = [(round(when, 1), round(seconds, 3)) for when, seconds in while_stuck if seconds >= 0.5]
    print(f"  then: p50 {times[len(times) // 2]:.3f} s, p99 {times[int(len(times) * 0.99)]:.3f} s; over 0.5 s: {late}")
    print(f"  slowest overall, with the 503 retries while a replaced worker's envs moved: {slowest_step:.3f} s")
    print(f"/healthz slowest {slowest_probe:.3f} s; other envs lost: {len(lost)} of {len(others)}")
    print(f"workers' CPU {after - 10:.0f}-{after:.0f} s after the calls began: {burnt:.1%} of a core")
    print(f"workers replaced: {srv.log().count('before the replacement')}")


if __name__ == "__main__":
    main()
