"""Metrics proven against a real Prometheus that scrapes a real two-worker gymserve driven by real traffic.

Every PromQL expression of every dashboard panel (variables filled in) and every alert expression
is run through Prometheus's HTTP API; each must return data where the traffic says it must.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from servers import free_port, ports_free

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "rules" / "gymserve.yml"
MAX_ENVS = 12  # small, so that the capacity alert has something to say
# Episode buckets per env id: CartPole's returns are step counts, FrozenLake's are 0 or 1.
RETURN_BUCKETS = "CartPole-*=5,8,10,12,20,50;default=0,0.5,1"


def needs(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: .ci/run installs Debian's prometheus package (apt-get install prometheus)"
    return path


def test_promtool_accepts_the_config_and_rules_and_the_rule_unit_tests_pass():
    promtool = needs("promtool")
    for args in (
        ["check", "config", str(REPO / "deploy" / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(RULES)],
        ["test", "rules", str(REPO / "deploy" / "prometheus" / "tests" / "gymserve_test.yml")],
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_summary_and_description():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.proc = url, proc

    def query(self, expr: str) -> list[dict]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert resp.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, config: dict[str, Any], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A real Prometheus with `config` on 127.0.0.1:`port`, its log in tmp_path, stopped by its PID afterwards."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                needs("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path, make_server):
    srv = make_server(workers=2, max_envs=MAX_ENVS, reaper_interval_seconds=0.2, episode_return_buckets=RETURN_BUCKETS)
    port = free_port()
    rules = tmp_path / "rules.yml"
    shutil.copy(RULES, rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "gymserve", "static_configs": [{"targets": [srv.url.split("//")[1]]}]}],
    }
    with running_prometheus(tmp_path, config, port) as proc:
        prom = Prometheus(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if prom.query('up{job="gymserve"} == 1'):
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("Prometheus never scraped gymserve:\n" + (tmp_path / "prometheus.log").read_text()[-3000:])
        yield srv, prom


def post(url: str, body: dict | None = None) -> requests.Response:
    return requests.post(url, json=body or {}, timeout=30)  # a new connection each time: requests get forwarded


def slot_1_pid(srv) -> int:
    return int(re.findall(r"worker pid (\d+) has slot 1 ", srv.log())[-1])


def drive_traffic(srv, finished: dict[str, list[tuple[float, int]]]) -> dict[str, int]:
    """Steps, resets, episodes, closes, reaps, failures, forwards and a killed worker; returns live env counts.

    `finished` gets the (return, length) of every episode that ended, summed here from the step answers.
    """
    live: dict[str, list[str]] = {"CartPole-v1": [], "FrozenLake-v1": []}
    for _round in range(6):
        for env_id in live:
            live[env_id].append(post(srv.url + "/v1/envs/", {"env_id": env_id}).json()["instance_id"])
        short = post(srv.url + "/v1/envs/", {"env_id": "CartPole-v1", "ttl": 0.3}).json()["instance_id"]
        post(f"{srv.url}/v1/envs/{short}/reset/")
        assert post(srv.url + "/v1/envs/", {"env_id": "NoSuchEnv-v0"}).status_code == 400
        for env_id, ids in live.items():
            for iid in ids:
                post(f"{srv.url}/v1/envs/{iid}/reset/", {"seed": 1})
                total, length, over = 0.0, 0, False
                for _ in range(12):
                    answer = post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 0})
                    if answer.status_code != 200:
                        break  # the episode ended: the next reset starts another
                    if not over:  # /v1 lets a client step on after the end (CartPole: reward 0): no new episode
                        total, length = total + answer.json()["reward"], length + 1
                        over = answer.json()["done"]
                        if over:
                            finished[env_id].append((total, length))
        closed = live["FrozenLake-v1"].pop(0)
        assert requests.delete(f"{srv.url}/v1/envs/{closed}/").status_code == 200
        time.sleep(1.2)  # let Prometheus scrape between rounds, and the reaper take the short-lived env
    # Kill the worker of slot 1: its envs are lost, gunicorn restarts it in the same slot.
    victim = slot_1_pid(srv)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while slot_1_pid(srv) == victim and time.monotonic() < deadline:
        time.sleep(0.2)
    for env_id, ids in live.items():
        live[env_id] = [i for i in ids if i.split(".")[1].split("-")[0] != "1"]
    # Fill the replica to its limit: one more create is refused with 503.
    while sum(map(len, live.values())) < MAX_ENVS:
        live["CartPole-v1"].append(post(srv.url + "/v1/envs/", {"env_id": "CartPole-v1"}).json()["instance_id"])
    assert post(srv.url + "/v1/envs/", {"env_id": "CartPole-v1"}).status_code == 503
    for iid in live["CartPole-v1"]:
        post(f"{srv.url}/v1/envs/{iid}/reset/")
        post(f"{srv.url}/v1/envs/{iid}/step/", {"action": 1})
    return {env_id: len(ids) for env_id, ids in live.items()}


def fill(expr: str, replica: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("${replica}", replica)
        .replace("$replica", replica)
        .replace("${env_id}", ".*")
        .replace("$env_id", ".*")
    )


def test_dashboards_and_alerts_answer_from_a_real_prometheus(prometheus):
    srv, prom = prometheus
    finished: dict[str, list[tuple[float, int]]] = {"CartPole-v1": [], "FrozenLake-v1": []}
    live = drive_traffic(srv, finished)
    time.sleep(3)  # a few more scrapes after the last request
    instance = srv.url.split("//")[1]

    # What the traffic says, exactly.
    assert prom.value('sum(rate(gymserve_steps_total{env_id="CartPole-v1"}[1m]))') > 0
    for env_id, count in live.items():
        # `or vector(0)`: when every env of an id lived on the killed worker, its series went with it.
        assert prom.value(f'sum(gymserve_envs{{env_id="{env_id}"}}) or vector(0)') == count, env_id
    assert prom.value("sum(gymserve_envs_reaped_total)") >= 5
    assert prom.value("sum(gymserve_envs_lost_total)") >= 1
    assert prom.value("sum(gymserve_worker_restarts_total)") == 1
    assert prom.value('sum(gymserve_envs_failed_total{reason="unknown_env_id", env_id="other"})') == 6
    assert prom.value('sum(gymserve_envs_failed_total{reason="capacity_exceeded"})') == 1
    assert prom.value('sum(gymserve_forwarded_requests_total{outcome="ok"})') > 0
    assert prom.value('gymserve_capacity_envs{scope="replica"}') == MAX_ENVS
    assert prom.query('gymserve_build_info{version!=""}')
    assert not prom.query('{__name__=~"gymserve_.*", instance_id!=""}'), "an instance id must never be a label"

    # The episode histograms hold exactly the episodes the traffic finished, in each env id's own buckets.
    assert len(finished["CartPole-v1"]) >= 6
    for env_id, episodes in finished.items():
        returns, lengths = [r for r, _ in episodes], [n for _, n in episodes]
        assert prom.value(f'sum(gymserve_episodes_total{{env_id="{env_id}"}})') == len(episodes), env_id
        for name, values in (("return", returns), ("length", lengths)):
            assert prom.value(f'sum(gymserve_episode_{name}_count{{env_id="{env_id}"}})') == len(values), env_id
            assert prom.value(f'sum(gymserve_episode_{name}_sum{{env_id="{env_id}"}})') == pytest.approx(sum(values))
        bounds = (5, 8, 10, 12, 20, 50) if env_id == "CartPole-v1" else (0, 0.5, 1)
        found = {float(r["metric"]["le"]) for r in prom.query(f'gymserve_episode_return_bucket{{env_id="{env_id}"}}')}
        assert found == {*map(float, bounds), float("inf")}, env_id
        for bound in bounds:
            expr = f'sum(gymserve_episode_return_bucket{{env_id="{env_id}", le="{float(bound)}"}})'
            assert prom.value(expr) == sum(r <= bound for r in returns), expr

    # Every panel query of every dashboard, variables filled in, returns data.
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = fill(target["expr"], instance)
                assert prom.query(expr), f"{path.name} / {panel['title']}: no data for {expr}"
        for variable in dashboard["templating"]["list"]:
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable.get("definition", ""))
            if match:
                assert prom.query(match[1]), f"variable {variable['name']}: no series {match[1]}"

    # Every alert expression runs; those the traffic provoked return data, the others none.
    provoked = {"GymserveCapacityNearlyFull", "GymserveEnvsLost", "GymserveWorkerRestarts"}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            result = prom.query(rule["expr"])
            assert bool(result) == (rule["alert"] in provoked), (rule["alert"], result)


def test_compose_prometheus_scrapes_the_replicas_metrics_port(tmp_path: Path, make_server):
    """deploy/prometheus/prometheus.yml's gymserve job scrapes the port that docker-compose.yml gives
    GYMSERVE_METRICS_PORT, which serves /metrics, whatever port a target comes with (here the API's, from a file
    in place of Docker's DNS, which only compose has)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    metrics_port = int(compose["services"]["gymserve"]["environment"]["GYMSERVE_METRICS_PORT"])
    if not ports_free(metrics_port, 1):
        pytest.skip(f"port {metrics_port} is taken on 127.0.0.1")
    srv = make_server(workers=1, metrics_port=metrics_port)
    api = srv.url.split("//")[1]
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gymserve"]
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "gymserve.json").write_text(json.dumps([{"targets": [api]}]))
    assert job.pop("dns_sd_configs")[0]["names"] == ["gymserve"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets" / "*.json")], "refresh_interval": "1s"}]
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
    port = free_port()
    with running_prometheus(tmp_path, config, port):
        deadline, targets = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()["data"]
                targets = targets["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        assert [(t["scrapeUrl"], t["health"]) for t in targets] == [(f"http://127.0.0.1:{metrics_port}/metrics", "up")]
        assert targets[0]["labels"]["instance"] == "127.0.0.1"
