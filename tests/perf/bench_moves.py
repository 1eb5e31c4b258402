"""Park and adopt, measured on a real server: envs parked per second per worker at a stop, and the p50 of an
adopted env's first step against the p50 of a normal step (the steps after it), in the same session.

Not a pass/fail test. One `gymserve serve` (2 workers) gets N CartPole envs, each reset and stepped; SIGTERM
parks them (each worker logs how many, and how long it took); the same server started again on the same port
and state directory adopts each at its first step. Steps are single requests on one keep-alive connection.
The goals (issue 22): at least 1,000 envs parked per second per worker, an adopted env's first step at most
10 ms slower than a normal one (p50), and normal steps no slower after a move.

Run: .venv/bin/python tests/perf/bench_moves.py [--envs 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import free_port, start_server


def _step_ms(conn: http.client.HTTPConnection, instance_id: str) -> float:
    started = time.perf_counter()
    conn.request(
        "POST", f"/v2/envs/{instance_id}/step", body=b'{"action": 0}', headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        if json.loads(body)["error"]["code"] != "reset_needed":
            raise RuntimeError(f"step {instance_id}: {resp.status} {body[:200]!r}")
        conn.request("POST", f"/v2/envs/{instance_id}/reset", body=b"{}", headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gymserve-bench-moves-"))
    port = free_port()
    settings = {"state_dir": str(tmp / "state"), "log_level": "info", "max_envs_per_worker": 50_000}
    first = start_server(tmp, port=port, drain_seconds=60, **settings)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ids = []
    for _ in range(args.envs):
        conn.request(
            "POST", "/v2/envs", body=b'{"env_id": "CartPole-v1"}', headers={"Content-Type": "application/json"}
        )
        ids.append(json.loads(conn.getresponse().read())["instance_id"])
        conn.request(
            "POST", f"/v2/envs/{ids[-1]}/reset", body=b'{"seed": 1}', headers={"Content-Type": "application/json"}
        )
        conn.getresponse().read()
    before = [_step_ms(conn, i) for i in ids]
    conn.close()
    first.signal(signal.SIGTERM)
    first.proc.wait(120)
    parks = re.findall(r"parked (\d+) envs \((\d+) lost\) in ([0-9.]+)s", first.log())
    second = start_server(tmp, port=port, **settings)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    adopted = [_step_ms(conn, i) for i in ids]
    after = [_step_ms(conn, i) for i in ids]
    conn.close()
    second.stop()
    print(f"{args.envs} CartPole envs on 2 workers")
    for parked, lost, seconds in parks:
        rate = int(parked) / max(float(seconds), 1e-6)
        print(f"  worker parked {parked} envs ({lost} lost) in {float(seconds):.3f} s: {rate:,.0f} envs/s")
    p50 = statistics.median
    print(f"  step p50 before the move: {p50(before):.3f} ms")
    print(f"  first step of an adopted env p50: {p50(adopted):.3f} ms (+{p50(adopted) - p50(after):.3f} ms)")
    print(f"  steps after the move p50: {p50(after):.3f} ms (x{p50(after) / p50(before):.2f} of before)")


if __name__ == "__main__":
    main()
