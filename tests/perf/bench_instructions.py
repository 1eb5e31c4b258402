"""Instructions per streamed step, counted by valgrind: this checkout's against another revision's.

Not a pass/fail test. Timings on a shared VM drift by a third between runs, which hides a change of a few percent
to the Python a step runs; an instruction count does not drift. Each tree runs the same CartPole steps in
process, through the stream's Session and the real app and front (pipeline/stream.py -> front.stream_message ->
the one handler), under callgrind, twice (--warm and --warm + --messages steps): the difference over
--messages is that tree's instructions per step, on the main thread only (the app's background threads wake by the
clock, which valgrind slows). No socket, no kernel: what the worker's Python costs.

Run (from the repository, after `bash scripts/test.sh` made .venv, with Debian's valgrind installed):
    .venv/bin/python tests/perf/bench_instructions.py [--rev HEAD~1] [--messages 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_perf import REPO, revision  # noqa: E402


def steps(count: int) -> None:
    """The child: `count` streamed steps after a warm-up, each checked to be a step's answer."""
    import msgpack
    from websockets.frames import Frame, Opcode
    from werkzeug.test import EnvironBuilder

    from gymserve.app import create_app
    from gymserve.lifecycle import envs
    from gymserve.pipeline import stream
    from gymserve.pipeline.front import FRONT

    envs.QUICK_STEP_SECONDS = float("inf")  # a step is ~50x slower under valgrind: still the stream loop's to run
    app = create_app()
    client = app.test_client()
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1", "auto_reset": True}).get_json()["instance_id"]
    client.post(f"/v2/envs/{iid}/reset", json={"seed": 0})
    environ = EnvironBuilder(path=f"/v2/envs/{iid}/stream", headers={"Host": "localhost"}).get_environ()
    session = stream.Session(app, environ, iid, stream.Limits(1 << 20, 10), direct=app.extensions[FRONT].stream_message)
    frames = [Frame(Opcode.BINARY, msgpack.packb({"op": "step", "action": a})).serialize(mask=True) for a in (0, 1)]
    sys.setswitchinterval(1000)  # the background threads wait: their clock-driven wake-ups are not a step's
    for n in range(count):
        answer = b"".join(session.receive(frames[n & 1]))
        if b"observation" not in answer:
            raise SystemExit(f"not a step's answer: {answer[:200]!r}")


def instructions(service: Path, count: int) -> int:
    """The main thread's instructions for `count` steps (and the start-up) of the gymserve in `service`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(service), "PYTHONHASHSEED": "0"}
        argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}"]
        subprocess.run([*argv, sys.executable, __file__, "--child", str(count)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        main_thread = Path(f"{out}-01").read_text()
        return int(next(line.split()[1] for line in main_thread.splitlines() if line.startswith("totals:")))


def per_step(service: Path, warm: int, messages: int) -> float:
    return (instructions(service, warm + messages) - instructions(service, warm)) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD~1", help="the revision to compare with (default: the parent)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        steps(args.child)
        return
    with revision(args.rev) as theirs:
        before = per_step(theirs, args.warm, args.messages)
    after = per_step(REPO / "service", args.warm, args.messages)
    print(f"instructions per streamed CartPole step: {args.rev} {before:,.0f}, this checkout {after:,.0f}, "
          f"ratio {after / before:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
