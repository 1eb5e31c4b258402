"""`gymserve serve` as a process: start-up with defaults, bad settings, version, SIGTERM after rendering."""

import os
import signal
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.integration


def test_version():
    out = subprocess.run([sys.executable, "-m", "gymserve.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gymserve ")


def test_bad_setting_fails_at_start_naming_the_variable():
    out = subprocess.run(
        [sys.executable, "-m", "gymserve.cli", "serve"],
        capture_output=True,
        text=True,
        env={"GYMSERVE_WORKERS": "none", "PATH": ""},
        timeout=30,
    )
    assert out.returncode == 2 and "GYMSERVE_WORKERS" in out.stderr


def test_sigterm_stops_the_server_even_after_an_rgb_array_render(make_server):
    """SDL (pygame) would swallow SIGTERM after an rgb_array render; the worker must still stop."""
    srv = make_server()
    iid = requests.post(
        srv.url + "/v1/envs/", json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}}
    ).json()["instance_id"]
    requests.post(f"{srv.url}/v1/envs/{iid}/reset/", json={"seed": 0})
    assert requests.get(f"{srv.url}/v1/envs/{iid}/render/").status_code == 200
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=40) == 0
    assert "was sent SIGKILL" not in srv.log() and "Worker exiting" in srv.log()


_RENDER_THEN_WAIT = """
import time
from gymserve.app import create_app
client = create_app().test_client()
iid = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "kwargs": {"render_mode": "rgb_array"}}).json
iid = iid["instance_id"]
client.post(f"/v1/envs/{iid}/reset/", json={})
assert client.get(f"/v1/envs/{iid}/render/").status_code == 200
print("rendered", flush=True)
time.sleep(60)
"""


def test_a_plain_process_that_rendered_still_dies_on_sigterm():
    """Without gunicorn's handlers SIGTERM is SIG_DFL, which SDL would replace (the seed's defect)."""
    with subprocess.Popen(
        [sys.executable, "-c", _RENDER_THEN_WAIT],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GYMSERVE_NODE_ID": "t"},
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "rendered"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == -signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_creates_or_empties_the_metrics_directory_it_is_given(make_server, tmp_path, monkeypatch):
    """A container's fresh tmpfs has no such directory yet; a reused one holds a dead run's files."""
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "counter_999.db").write_bytes(b"a dead process's counters")
    for directory in (tmp_path / "missing" / "metrics", stale):
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        srv = make_server(workers=1)
        assert "gymserve_build_info" in requests.get(srv.url + "/metrics", timeout=10).text
        assert not (directory / "counter_999.db").exists()
        srv.stop()


def test_the_metrics_port_serves_metrics_and_nothing_else(make_server):
    """GYMSERVE_METRICS_PORT: a second listener of every worker, where a scraper reaches /metrics and no API."""
    from servers import call, free_port

    port = free_port()
    server = make_server(workers=2, metrics_port=port)
    api = int(server.url.rsplit(":", 1)[1])
    assert port != api
    for _ in range(4):  # whichever worker accepts
        scraped = call(port, "GET", "/metrics")
        assert scraped.status == 200 and "gymserve_build_info" in scraped.body
        assert call(port, "GET", "/v2/envs").status == 404
        assert call(port, "POST", "/v2/envs", {"env_id": "CartPole-v1"}).status == 404
        assert call(port, "GET", "/healthz").status == 404
    assert call(api, "GET", "/metrics").status == 200  # the API's port still serves it too
    assert call(api, "GET", "/v2/envs").status == 200
