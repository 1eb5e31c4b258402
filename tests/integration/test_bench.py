"""`gymserve bench` against a real server: it steps, counts, and reports as text and JSON."""

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from servers import Server, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers that keep every create where it was accepted (no placement): a keep-alive client's steps then
    never take a hop, which is what the forwarded share is checked against. The shared session server may hold
    envs of other tests unevenly, so its placement would move creates."""
    srv = start_server(tmp_path_factory.mktemp("bench"), placement_tolerance=1_000_000)
    yield srv
    srv.stop()


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


@pytest.mark.parametrize(
    ("args", "steps_per_request", "body_range"),
    [
        (["--api", "v2", "--encoding", "msgpack"], 1, (250, 1500)),
        (["--api", "v2", "--encoding", "json", "--env-id", "Taxi-v4"], 1, (250, 1500)),
        (["--api", "v2", "--encoding", "msgpack", "--mode", "batch", "--batch-size", "4"], 4, (60, 600)),
        (["--api", "v2", "--encoding", "json", "--mode", "vector", "--num-envs", "8"], 8, (20, 400)),
    ],
    ids=["v2-msgpack-single", "v2-json-taxi", "v2-msgpack-batch", "v2-json-vector"],
)
def test_bench_steps_through_v2_counting_env_steps_and_requests(server, args, steps_per_request, body_range):
    out = bench("--url", server.url, "--clients", "2", "--seconds", "1", "--json", *args)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errors"] == {} and report["requests"] > 5
    assert report["steps"] == report["requests"] * steps_per_request  # env-steps: N per batch or vector request
    assert report["requests_per_s"] == pytest.approx(report["requests"] / 1.0)
    assert body_range[0] < report["bytes_per_step"] < body_range[1]
    assert report["bytes_per_request"] == pytest.approx(report["bytes_per_step"] * steps_per_request)
    assert report["config"]["api"] == "v2" and report["forwarded_share"] == 0


@pytest.mark.parametrize(
    ("args", "steps_per_message"),
    [([], 1), (["--mode", "vector", "--num-envs", "4"], 4), (["--mode", "batch", "--batch-size", "3"], 3)],
    ids=["single", "vector", "batch"],
)
def test_bench_steps_over_the_step_stream(server, args, steps_per_message):
    out = bench("--url", server.url, "--clients", "2", "--seconds", "1", "--stream", "--json", *args)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errors"] == {} and report["requests"] > 5
    assert report["steps"] == report["requests"] * steps_per_message
    assert report["config"]["stream"] is True and report["config"]["api"] == "v2"
    assert report["config"]["encoding"] == "msgpack"
    if not args:  # a CartPole step: its message and answer, no HTTP head (a /v2 msgpack request is over 250 bytes)
        assert 60 < report["bytes_per_step"] < 250


def test_bench_stream_text_report_and_a_failed_create(server):
    out = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--stream")
    assert out.returncode == 0, out.stderr
    assert "/v2 step stream (msgpack messages), one env per message" in out.stdout
    unknown = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--stream", "--env-id", "NoSuch-v0")
    assert unknown.returncode == 1 and "create 422" in unknown.stdout


def test_bench_batches_over_fresh_connections_reach_both_workers(server):
    out = bench(
        "--url", server.url, "--clients", "2", "--seconds", "1", "--json", "--fresh-connections",
        "--api", "v2", "--mode", "batch", "--batch-size", "6", "--progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["errors"] == {} and report["steps"] == 6 * report["requests"] > 0
    assert "1.0s / 1s" in out.stderr  # the progress line


def test_bench_text_report_names_the_mode_and_requests(server):
    out = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--api", "v2", "--mode", "vector")
    assert out.returncode == 0, out.stderr
    assert "/v2 json, a vector env of 16 per request" in out.stdout and "requests/s" in out.stdout


def test_bench_prints_a_readable_report_and_counts_errors(server):
    out = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--env-id", "NoSuchEnv-v0")
    assert out.returncode == 1 and "create 400" in out.stdout and "steps/s" in out.stdout


def test_bench_counts_v2_create_errors_by_status(server):
    out = bench("--url", server.url, "--clients", "1", "--seconds", "0.5", "--api", "v2", "--env-id", "NoSuchEnv-v0")
    assert out.returncode == 1 and "create 422" in out.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--clients", "0"], "--clients"),
        (["--api", "v2", "--batch-size", "0"], "--batch-size"),
        (["--mode", "batch"], "--api v2"),
        (["--encoding", "msgpack"], "--api v2"),
        (["--stream", "--api", "v1"], "--stream"),
        (["--stream", "--fresh-connections"], "--stream"),
    ],
)
def test_bench_refuses_nonsense_arguments(args, named):
    out = bench(*args)
    assert out.returncode == 2 and named in out.stderr
