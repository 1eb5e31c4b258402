"""`gymserve bench` against a real server: it steps, counts, and reports as text and JSON."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gymserve.cli", "bench", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("connection", [[], ["--fresh-connections"]], ids=["keep-alive", "fresh"])
def test_bench_reports_steps_latency_bytes_and_server_cpu_as_json(server, connection):
    out = bench(
        "--url",
        server.url,
        "--clients",
        "3",
        "--seconds",
        "1.5",
        "--server-pid",
        str(server.pid),
        "--json",
        *connection,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["steps"] > 10 and report["errors"] == {}
    assert report["steps_per_s"] == pytest.approx(report["steps"] / 1.5)
    assert 0 < report["latency_us"]["p50"] <= report["latency_us"]["p90"] <= report["latency_us"]["p99"]
    assert 300 < report["bytes_per_step"] < 2000  # a CartPole /v1 step with its headers
    assert report["server_cpu_seconds"] > 0
    if connection:  # two workers, a new connection per request: about half land on the other worker
        assert 0 < report["forwarded_share"] < 1
    else:
        assert report["forwarded_share"] == 0  # created and stepped on one connection: never a hop


def test_bench_prints_a_readable_report_and_counts_errors(server):
    out = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--env-id", "NoSuchEnv-v0")
    assert out.returncode == 1 and "create 400" in out.stdout and "steps/s" in out.stdout


def test_bench_refuses_nonsense_arguments():
    out = bench("--clients", "0")
    assert out.returncode == 2 and "--clients" in out.stderr
