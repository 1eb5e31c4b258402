"""This checkout's /v2 single-step rows against another revision's (the parent commit by default), in one run.

Not a pass/fail test. A change that adds work to every step (the deadline on env calls, say) should cost no more
than a few percent: this prints both, and their ratio. The revision is checked out into a temporary git worktree
and served from there (its `service/` first on PYTHONPATH), pinned like run_perf.py's servers: server on core 0,
wrk on core 1. Rounds alternate between the two, so drift on the machine hits both alike; the median is printed.

Run (from the repository, after `bash scripts/test.sh` made .venv and Debian's wrk is installed):
    .venv/bin/python tests/perf/bench_parent.py [--rev HEAD~1] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_perf import gymserve_env, request, revision, serving, wrk  # noqa: E402

from servers import free_port  # noqa: E402

ROWS = [("JSON", "application/json", b'{"action": 0}'), ("msgpack", "application/msgpack", b"\x81\xa6action\x00")]


def steps_per_s(service: Path | None, media: str, body: bytes, clients: int, seconds: float) -> float:
    """Steps/s of `clients` wrk connections, each stepping its own CartPole, against the gymserve in `service`."""
    port = free_port()
    extra = {"PYTHONPATH": str(service)} if service is not None else {}
    argv = [sys.executable, "-m", "gymserve.cli", "serve", "--port", str(port)]
    with serving(argv, port, "/readyz", gymserve_env(extra)):
        ids = []
        for _ in range(clients):
            made: Any = request(port, "POST", "/v2/envs", {"env_id": "CartPole-v1", "auto_reset": True}, media)[1]
            request(port, "POST", f"/v2/envs/{made['instance_id']}/reset", {"seed": 0}, media)
            ids.append(str(made["instance_id"]))
        result = wrk(port, "/v2/envs/%s/step", ids, body, media, clients, seconds)
    return float(result["requests"]) / float(result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default: the parent)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with revision(args.rev) as service:
        print(f"{'row':<22}{'clients':>8}{args.rev + ' steps/s':>22}{'this steps/s':>16}{'ratio':>8}")
        for name, media, body in ROWS:
            for clients in (1, 16):
                theirs, ours = [], []
                for _ in range(args.rounds):
                    theirs.append(steps_per_s(service, media, body, clients, args.seconds))
                    ours.append(steps_per_s(None, media, body, clients, args.seconds))
                a, b = statistics.median(theirs), statistics.median(ours)
                print(f"{'/v2 ' + name:<22}{clients:>8}{a:>22,.0f}{b:>16,.0f}{b / a:>8.3f}")


if __name__ == "__main__":
    main()
