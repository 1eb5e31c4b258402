"""Metrics: labels bounded to the allowlist and known methods, and the multiprocess directory that sums workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gymserve import __version__, metrics
from gymserve.errors import GymServeError
from gymserve.lifecycle.caller import ANYONE
from gymserve.lifecycle.envs import Envs
from gymserve.pipeline.models import CreateRequest
from gymserve.settings import MULTIPROC_ENV, Settings


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def samples_with_label_value(label_value: str) -> list[Any]:
    return [s for family in REGISTRY.collect() for s in family.samples if label_value in s.labels.values()]


@pytest.mark.parametrize(
    ("env_id", "label"),
    [
        ("CartPole-v1", "CartPole-v1"),
        ("FrozenLake-v1", "other"),  # registered, but not on this allowlist
        ("cartpole-v1", "other"),
        (None, "other"),
        (["CartPole-v1"], "other"),
    ],
)
def test_env_labels_are_bounded_to_the_allowlist(env_id: object, label: str) -> None:
    assert metrics.label_for(env_id, frozenset({"CartPole-v1", "Acrobot-v1"})) == label


def test_a_refused_create_is_counted_under_other_never_under_the_clients_text() -> None:
    worker = Envs(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "CartPole-*"}, node_id="test"))
    made_up = f"Made-Up-{uuid.uuid4().hex}-v0"
    codes = {}
    # Other tests of this process may count FrozenLake-v1 on a server that allows it: compare, do not expect none.
    before = samples_with_label_value("FrozenLake-v1")
    for env_id in ("FrozenLake-v1", made_up):
        with pytest.raises(GymServeError) as err:
            worker.create(CreateRequest(env_id, ttl=60), ANYONE)
        codes[env_id] = err.value.code
        assert (value("gymserve_envs_failed_total", env_id="other", reason=err.value.code) or 0) >= 1
    assert codes["FrozenLake-v1"] != codes[made_up]  # not allowed vs not an env: two reasons, one bounded label
    assert samples_with_label_value(made_up) == [] and samples_with_label_value("FrozenLake-v1") == before


def test_a_refused_create_adds_exactly_one() -> None:
    worker = Envs(Settings.from_env({"GYMSERVE_ALLOWED_ENVS": "CartPole-v1"}, node_id="test"))
    labels = {"env_id": "other", "reason": "env_not_allowed"}
    before = value("gymserve_envs_failed_total", **labels) or 0.0
    with pytest.raises(GymServeError) as err:
        worker.create(CreateRequest("Acrobot-v1", ttl=60), ANYONE)
    assert err.value.code == labels["reason"]
    assert value("gymserve_envs_failed_total", **labels) == before + 1


@pytest.mark.parametrize(
    ("method", "label"), [("GET", "GET"), ("DELETE", "DELETE"), ("BREW", "OTHER"), ("get", "OTHER")]
)
def test_request_durations_label_odd_methods_as_other(method: str, label: str) -> None:
    labels = {"route": "/test/<thing>", "method": label, "status": "418"}
    name = "gymserve_http_request_duration_seconds"
    before = [value(f"{name}_count", **labels) or 0.0, value(f"{name}_bucket", **labels, le="0.0025") or 0.0]
    metrics.request_timer("/test/<thing>", method, 418).observe(0.003)
    assert value(f"{name}_count", **labels) == before[0] + 1
    assert value(f"{name}_bucket", **labels, le="0.0025") == before[1]  # 3 ms lands above the 2.5 ms bucket
    assert value(f"{name}_bucket", **labels, le="0.005") == before[0] + 1
    assert metrics.request_timer("/test/<thing>", method, 418) is metrics.request_timer("/test/<thing>", label, 418)


def test_requests_are_labelled_by_route_template_never_by_instance_id(client: Any) -> None:
    missing = "test-0-0-" + uuid.uuid4().hex
    odd = {"route": "unmatched", "method": "OTHER", "status": "405"}
    before = value("gymserve_http_request_duration_seconds_count", **odd) or 0.0
    assert client.get(f"/v2/envs/{missing}").status_code in (404, 410)
    assert client.open("/healthz", method="PROPFIND").status_code == 405
    assert value("gymserve_http_request_duration_seconds_count", **odd) == before + 1
    assert samples_with_label_value(missing) == [] and not any(
        missing in s.labels.get("route", "") for family in REGISTRY.collect() for s in family.samples
    )


def test_a_new_env_id_exports_its_reaped_and_lost_counters_at_zero() -> None:
    env_id = f"Unit{uuid.uuid4().hex}-v0"  # seen by no other test
    assert value("gymserve_envs_lost_total", env_id=env_id) is None
    metrics.EnvMeters(env_id)
    assert value("gymserve_envs_lost_total", env_id=env_id) == 0.0
    assert value("gymserve_envs_reaped_total", env_id=env_id) == 0.0
    assert value("gymserve_steps_total", env_id=env_id) == 0.0 and value("gymserve_envs", env_id=env_id) == 0.0


def test_static_values_and_single_process_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics.publish_static(max_envs_per_worker=7, max_envs=11, node="replica-a")
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    capacity = {s.labels["scope"]: s.value for s in families["gymserve_capacity_envs"].samples}
    assert capacity == {"worker": 7.0, "replica": 11.0}
    # One series per node this process published (apps made by other tests publish theirs too).
    (build,) = [s for s in families["gymserve_build_info"].samples if s.labels["node"] == "replica-a"]
    assert build.value == 1.0 and build.labels["version"] == __version__


def run_python(code: str, directory: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    if directory is not None:
        env[MULTIPROC_ENV] = str(directory)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )


def test_gunicorn_config_refuses_to_start_without_the_multiprocess_directory() -> None:
    done = run_python("import gymserve.gunicorn_conf", None)
    assert done.returncode == 1
    assert f"{MULTIPROC_ENV} is not set" in done.stderr and "gymserve serve" in done.stderr


WORKER = """
    import os
    from gymserve import metrics
    meters = metrics.EnvMeters("CartPole-v1")
    meters.live.inc({live})
    meters.steps.inc({steps})
    print(os.getpid())
"""


def test_the_exposition_sums_every_process_and_a_dead_workers_envs_count_as_lost(tmp_path: Path) -> None:
    first = run_python(WORKER.format(live=3, steps=5), tmp_path)
    second = run_python(WORKER.format(live=2, steps=7), tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert any(tmp_path.glob("*.db"))
    master = run_python(
        f"""
        import sys
        from gymserve import metrics
        sys.stdout.write(metrics.exposition().decode() + "\\n#SPLIT\\n")
        metrics.worker_died({int(first.stdout)})
        sys.stdout.write(metrics.exposition().decode())
        """,
        tmp_path,
    )
    assert master.returncode == 0, master.stderr
    before, after = (
        {(s.name, s.labels.get("env_id")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
        for text in master.stdout.split("#SPLIT")
    )
    cartpole = "CartPole-v1"
    assert before[("gymserve_steps_total", cartpole)] == 12.0  # both workers' steps, summed
    assert before[("gymserve_envs", cartpole)] == 5.0
    assert before[("gymserve_envs_lost_total", cartpole)] == 0.0
    assert after[("gymserve_envs", cartpole)] == 2.0  # the dead worker's live envs are gone...
    assert after[("gymserve_envs_lost_total", cartpole)] == 3.0  # ...and counted as lost
    assert after[("gymserve_steps_total", cartpole)] == 12.0  # its counters stay: rate() must not drop
