"""The Helm chart on a real Kubernetes API server (the local v1.20 cluster of ../shared/infra/k8s-local.sh).

`helm install --wait` with the locally built image, `helm test`, every gymserve pod through its own port-forward,
the chart's router through a port-forward to its Service, envs created and stepped on every pod; then, under a
client that keeps stepping envs through the router, a pod deleted, an upgrade that replaces every pod and a
scale-down: the envs are parked in the release's store, adopted under the same ids, and their trajectories stay
bit for bit those of local Gymnasium. Helm 4's server-side apply, and `helm uninstall` leaving nothing behind.

The local cluster has no cluster DNS and no kube-proxy. The router is the chart's, unchanged, with
`router.resolver` and `router.dnsConfig` pointing at `k8s.ClusterDNS` (port 53 on the docker bridge, where the
router pod's own resolv.conf points too): a stand-in that answers what CoreDNS answers, from the
namespace's Endpoints (see tests/README.md for what that does and does not prove); the gymserve pods use it too
(dnsConfig) to reach the store and each other. `helm test` runs with
tests.connection=false: the connection test needs the cluster's own DNS and Service routing.

Runs only with GYMSERVE_E2E_HELM=1 (scripts/e2e-helm.sh sets it), a reachable cluster (KUBECONFIG, default
/tmp/k8s-local/kubeconfig) whose nodes have the images: GYMSERVE_E2E_HELM_IMAGE (gymserve:ci) and HAPROXY_IMAGE
(haproxy:2.8; the stand-in is local/haproxy:bookworm, deploy/router/Dockerfile) and STORE_IMAGE (valkey/valkey:8;
the stand-in is local/valkey:bookworm, deploy/store/Dockerfile).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import yaml
from k8s import (
    ClusterDNS,
    Kube,
    PortForward,
    interface_ipv4,
    is_ready,
    port_forwards,
    seconds_to_ready,
    wait_for,
)

from gymserve.codec import values
from gymserve.routing import ids
from servers import Answer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
RELEASE = "e2e"
FULLNAME = f"{RELEASE}-gymserve"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
SERVER = f"{SELECTOR},app.kubernetes.io/component=server"
ROUTER = f"{SELECTOR},app.kubernetes.io/component=router"
PORT = 8000
MOUNTED = "/usr/local/etc/haproxy/haproxy.cfg"  # the router config, where the chart mounts it
ENV_ID = "CartPole-v1"
HEX = "0123456789abcdef" * 2
# Short drains keep pod deletion, upgrade and uninstall quick; everything else is the chart's defaults.
DRAIN_SECONDS = 2
PRE_STOP_SECONDS = 1

MEASURED: dict[str, str] = {}


class _Summary:
    """Prints what the module measured at the end of the session."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if MEASURED:
            terminalreporter.section("gymserve helm chart on the local Kubernetes: measured")
            for name, value in MEASURED.items():
                terminalreporter.write_line(f"{name}: {value}")


def measure(name: str, seconds: float) -> None:
    MEASURED[name] = f"{seconds:.1f} s"


def split_image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return (repository, tag) if repository and "/" not in tag else (ref, "latest")


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    """A fresh namespace on the cluster; deleted at the end."""
    if os.environ.get("GYMSERVE_E2E_HELM") != "1":
        pytest.skip("Helm end-to-end tests run with GYMSERVE_E2E_HELM=1 (scripts/e2e-helm.sh sets it)")
    env = {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", "/tmp/k8s-local/kubeconfig")}
    if "HELM_CACHE_HOME" not in env:
        scratch = tempfile.mkdtemp(prefix="gymserve-e2e-helm-")
        env.update(
            HELM_CACHE_HOME=f"{scratch}/cache", HELM_CONFIG_HOME=f"{scratch}/config", HELM_DATA_HOME=f"{scratch}/data"
        )
    k = Kube(env, f"gymserve-e2e-{secrets.token_hex(3)}")
    k.run("kubectl", "get", "--raw", "/readyz", timeout=30)
    request.config.pluginmanager.register(_Summary(), "gymserve-helm-summary")
    k.run("kubectl", "create", "namespace", k.namespace)
    try:
        yield k
    finally:
        if request.session.testsfailed:
            _dump(k)
        k.run("kubectl", "delete", "namespace", k.namespace, "--wait=false", check=False)


def _dump(k: Kube) -> None:
    out = [k.kubectl("get", "pods,services,endpoints", "--output", "wide", check=False)]
    for name in k.kubectl("get", "pods", "--output", "name", check=False).split():
        out.append(f"--- {name}\n" + k.kubectl("logs", name, "--all-containers", "--tail", "60", check=False))
    out.append(k.kubectl("get", "events", "--sort-by", ".lastTimestamp", check=False)[-6000:])
    sys.stderr.write("\n".join(out))


@pytest.fixture(scope="module")
def dns(kube: Kube) -> Iterator[ClusterDNS]:
    """The stand-in cluster DNS, on the docker bridge where the pods can reach it, on port 53: the router pods use it
    as their own resolver too (router.dnsConfig), so that HAProxy's resolvers find the pods by name."""
    server = ClusterDNS(kube, interface_ipv4(os.environ.get("GYMSERVE_E2E_POD_BRIDGE", "docker0")), port=53).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Release:
    kube: Kube
    values_file: str
    envs: list[Twin] = field(default_factory=list)
    farm: list[FarmTwin] = field(default_factory=list)

    def pods(self) -> dict[str, dict[str, Any]]:
        return self.kube.pods(SERVER)

    def router(self) -> PortForward:
        return PortForward(self.kube, f"service/{FULLNAME}", 80)


@pytest.fixture(scope="module")
def release(kube: Kube, dns: ClusterDNS) -> Iterator[Release]:
    gymserve_repo, gymserve_tag = split_image(os.environ.get("GYMSERVE_E2E_HELM_IMAGE", "gymserve:ci"))
    router_repo, router_tag = split_image(os.environ.get("HAPROXY_IMAGE", "haproxy:2.8"))
    store_repo, store_tag = split_image(os.environ.get("STORE_IMAGE", "valkey/valkey:8"))
    values = {
        # Images from the local engine: the cluster cannot pull.
        "image": {"repository": gymserve_repo, "tag": gymserve_tag, "pullPolicy": "Never"},
        "router": {
            "image": {"repository": router_repo, "tag": router_tag, "pullPolicy": "Never"},
            "resolver": dns.resolver,
            "dnsConfig": {"nameservers": [dns.address]},
        },
        # The gymserve pods find the store and each other (an adopted env's holder) through the stand-in DNS too.
        "dnsConfig": {"nameservers": [dns.address]},
        "store": {"image": {"repository": store_repo, "tag": store_tag, "pullPolicy": "Never"}},
        "config": {"drainSeconds": DRAIN_SECONDS},
        "preStopSleepSeconds": PRE_STOP_SECONDS,
        "tests": {"connection": False},
        # The chart's requests (500m a gymserve pod) are for real nodes: this one node has 2 cores, and the
        # test runs up to 3 + 1 gymserve pods and 3 routers at once (the upgrade, then a Helm 4 release).
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="gymserve-e2e-", delete=False) as f:
        yaml.safe_dump(values, f)
    try:
        started = time.monotonic()
        kube.helm("install", RELEASE, str(CHART), "--values", f.name, "--wait", "--timeout", "5m")
        measure("helm install --wait (2 gymserve pods, 2 router pods)", time.monotonic() - started)
        rel = Release(kube, f.name)
        ready = [seconds_to_ready(pod) for pod in rel.pods().values()]
        MEASURED["gymserve pod created -> Ready"] = ", ".join(f"{s:.0f} s" for s in sorted(ready))
        yield rel
    finally:
        kube.helm("uninstall", RELEASE, "--wait", check=False)
        os.unlink(f.name)


# --- envs and their local twins ------------------------------------------------------------------------


def decode(obs: dict[str, Any]) -> np.ndarray:
    """The /v1 observation: base64(zlib(little-endian bytes)) of the flattened observation."""
    return np.frombuffer(zlib.decompress(base64.b64decode(obs["data"])), dtype=np.dtype(obs["type"]).newbyteorder("<"))


@dataclass
class Twin:
    """An env on the farm and the same env made locally with the same seed: every answer must match."""

    seed: int
    instance_id: str = ""
    local: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.instance_id.split(".", 1)[0]

    def create(self, router: PortForward) -> Twin:
        answer = router.call("POST", "/v1/envs/", {"env_id": ENV_ID})
        assert answer.status == 200, f"create through the router: {answer.status} {answer.body}"
        self.instance_id = answer.body["instance_id"]
        self.local = gymnasium.make(ENV_ID)
        self.local.action_space.seed(self.seed)
        answer = router.call("POST", f"/v1/envs/{self.instance_id}/reset/", {"seed": self.seed})
        obs, _ = self.local.reset(seed=self.seed)
        self._check("reset", answer, obs)
        return self

    def step(self, target: PortForward, count: int = 1) -> Answer:
        answer = Answer(0, None, {})
        for _ in range(count):
            action = int(self.local.action_space.sample())
            answer = target.call("POST", f"/v1/envs/{self.instance_id}/step/", {"action": action})
            if answer.status != 200:
                return answer
            obs, reward, terminated, truncated, _ = self.local.step(action)
            self._check("step", answer, obs)
            if (answer.body["reward"], answer.body["terminated"]) != (float(reward), terminated):
                self.errors.append(f"step: {answer.body} != {reward, terminated, truncated}")
            if terminated or truncated:
                self._check(
                    "reset", target.call("POST", f"/v1/envs/{self.instance_id}/reset/", {}), self.local.reset()[0]
                )
        return answer

    def _check(self, what: str, answer: Answer, obs: Any) -> None:
        if answer.status != 200:
            self.errors.append(f"{what}: {answer.status} {answer.body}")
        elif not np.array_equal(decode(answer.body["observation"]), np.asarray(obs, dtype=np.float64)):
            self.errors.append(f"{what}: observation {answer.body['observation']} != {obs}")


def step_until_ok(envs: list[Twin], target: PortForward, steps: int) -> None:
    for twin in envs:
        answer = twin.step(target, steps)
        assert answer.status == 200, f"{twin.instance_id}: {answer.status} {answer.body}"
        assert not twin.errors, f"{twin.instance_id}: {twin.errors[:3]}"


def create_on(router: PortForward, node: str, seed: int, seconds: float = 60) -> Twin:
    """Creates through the router until one lands on `node` (the others are deleted).

    Bounded in time, not in tries: a pod that just came back joins the backend's endpoints (and the
    router's 2 s DNS cache) some seconds after it is Ready on this cluster.
    """
    deadline, tries = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        twin = Twin(seed + tries).create(router)
        tries += 1
        if twin.node == node:
            return twin
        router.call("DELETE", f"/v1/envs/{twin.instance_id}/")
        time.sleep(0.25)
    raise AssertionError(f"{tries} creates through the router in {seconds:.0f} s, none on {node}")


# --- the tests, in order -----------------------------------------------------------------------------

SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_pass_the_1_20_api_server(kube: Kube, scenario: str) -> None:
    """helm template --validate (the cluster's API set, so the 1.20 fallbacks) | kubectl apply --dry-run=server."""
    # No ServiceMonitor or HTTPRoute CRDs on this cluster (no Prometheus Operator, no Gateway API): everything else
    # of "all features" is checked (tests/helm validates those two statically).
    args = ["template", RELEASE, str(CHART), "--values", str(CHART / "ci" / scenario), "--validate"]
    rendered = kube.helm(*args, "--set", "serviceMonitor.enabled=false", "--set", "httpRoute.enabled=false")
    kinds = {(o["kind"], o["apiVersion"]) for o in yaml.safe_load_all(rendered) if o}
    assert ("PodDisruptionBudget", "policy/v1") not in kinds and (
        "HorizontalPodAutoscaler",
        "autoscaling/v2",
    ) not in kinds
    if scenario == "all-features-values.yaml":
        assert {("PodDisruptionBudget", "policy/v1beta1"), ("HorizontalPodAutoscaler", "autoscaling/v2beta2")} <= kinds
    kube.kubectl("apply", "--dry-run=server", "--filename", "-", input=rendered)


def test_install_starts_hardened_pods_named_for_their_ids(release: Release) -> None:
    pods = release.pods()
    assert sorted(pods) == [f"{FULLNAME}-0", f"{FULLNAME}-1"]
    assert all(is_ready(p) for p in pods.values())
    assert len([p for p in release.kube.pods(ROUTER).values() if is_ready(p)]) == 2
    spec = pods[f"{FULLNAME}-0"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == PRE_STOP_SECONDS + DRAIN_SECONDS + 10
    # The process, as the kernel sees it: the image's user, a read-only root and a writable /tmp.
    probe = "import os; print(os.getuid(), os.getgid(), os.access('/', os.W_OK), os.access('/tmp', os.W_OK))"
    out = release.kube.kubectl("exec", f"{FULLNAME}-0", "--", "python", "-c", probe)
    assert out.split() == ["10001", "10001", "False", "True"]
    status = release.kube.kubectl("exec", f"{FULLNAME}-0", "--", "cat", "/proc/1/status")
    assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status


def test_the_store_refuses_a_client_without_its_password(release: Release) -> None:
    """The release's store runs with the password of the chart's Secret: a client without it (here, valkey-cli inside
    the store's own pod) is refused, and the gymserve pods, which have it, park and adopt through it (below)."""
    store = f"deployment/{FULLNAME}-store"
    refused = release.kube.kubectl("exec", store, "--", "valkey-cli", "ping", check=False)
    assert "NOAUTH" in refused, refused
    answer = release.kube.kubectl(
        "exec", store, "--", "sh", "-c", 'valkey-cli -a "$STORE_PASSWORD" --no-auth-warning ping'
    )
    assert answer.strip() == "PONG", answer


def test_helm_test_hooks_pass(release: Release) -> None:
    started = time.monotonic()
    try:
        out = release.kube.helm("test", RELEASE, "--timeout", "3m")
    except AssertionError as failed:
        # A failed test pod stays (hook-delete-policy hook-succeeded): its log says why.
        logs = release.kube.kubectl("logs", "--selector", f"{SELECTOR},app.kubernetes.io/component=test", check=False)
        pytest.fail(f"{failed}\n{logs}")
    measure("helm test (in-pod app and router checks)", time.monotonic() - started)
    assert out.count("Phase:          Succeeded") == 2, out
    # hook-delete-policy hook-succeeded: passed test pods do not linger.
    wait_for("test pods deleted", lambda: not release.kube.pods(f"{SELECTOR},app.kubernetes.io/component=test"), 30)


def test_each_pod_serves_on_its_own_port(release: Release) -> None:
    names = [f"{FULLNAME}-0", f"{FULLNAME}-1"]
    with port_forwards(release.kube, [f"pod/{n}" for n in names], PORT) as forwards:
        for name in names:
            pod = forwards[f"pod/{name}"]
            assert pod.call("GET", "/healthz").status == 200
            ready = pod.call("GET", "/readyz")
            assert ready.status == 200 and ready.body["workers"] == 2, ready
            # Each worker's own port, which the router's pools reach (config.workerPortBase).
            assert pod.call("GET", "/healthz").body["worker_ports"] == {"0": 8100, "1": 8101}
            metrics = pod.call("GET", "/metrics").body
            assert "gymserve_build_info{" in metrics and 'gymserve_capacity_envs{scope="replica"} 4000.0' in metrics
            created = pod.call("POST", "/v1/envs/", {"env_id": ENV_ID})
            assert created.status == 200 and created.body["instance_id"].startswith(f"{name}."), created
            iid = created.body["instance_id"]
            assert pod.call("POST", f"/v1/envs/{iid}/reset/", {"seed": 1}).status == 200
            assert pod.call("POST", f"/v1/envs/{iid}/step/", {"action": 0}).status == 200
            assert "gymserve_steps_total{" in pod.call("GET", "/metrics").body
            assert pod.call("DELETE", f"/v1/envs/{iid}/").status == 200


def test_the_step_stream_upgrades_through_the_charts_router(release: Release) -> None:
    """The chart's router passes the WebSocket upgrade to the worker that holds the env, and frames both ways."""
    from gymserve.client import RemoteEnv

    local = gymnasium.make(ENV_ID)
    with release.router() as router, RemoteEnv(f"http://127.0.0.1:{router.port}", ENV_ID, stream=True) as env:
        assert env._remote.stream is not None  # type: ignore[attr-defined]  # True: the upgrade answered 101
        assert np.array_equal(env.reset(seed=5)[0], local.reset(seed=5)[0])
        for action in [0, 1, 1, 0, 1] * 3:
            assert np.array_equal(env.step(action)[0], local.step(action)[0])
        assert env._remote.stream is not None  # type: ignore[attr-defined]  # every step came over the stream


def test_router_answers_by_itself_and_leaves_foreign_ids_to_a_replica(release: Release) -> None:
    """The router only places requests: an id it cannot place on its pod goes to the replica its hash picks,
    which answers in the app's words (never a router's own refusal)."""
    with release.router() as router:
        assert router.call("GET", "/router/healthz").status == 200
        answer = router.call("GET", "/metrics")
        assert answer.status == 404 and answer.body["code"] == "not_found"
        for path in [
            "/v1/envs/not-an-id/step/",
            f"/v1/envs/other-gymserve-0.0-1.{HEX}/",  # another release's pod
            f"/v1/envs/{FULLNAME}-router.0-1.{HEX}/",  # this release, but not a gymserve pod
            f"/v1/envs/{FULLNAME}-0.example.com.0-1.{HEX}/",
            f"/v1/envs/{FULLNAME}-0.0-1.{HEX}0/",
        ]:
            # With its route's method: a pod answers, and a step is a POST.
            answer = router.call("POST", path, {"action": 0}) if path.endswith("/step/") else router.call("GET", path)
            assert answer.status == 400 and "x-gymserve-router" not in answer.headers, (path, answer)
        answer = router.call("GET", "/v2/envs/not-an-id")
        assert answer.status == 404 and answer.body["error"]["code"] == "unknown_instance", answer.body
        # One of this release's pod names, but no such pod: a replica (the id's hash picks it) looks in the park
        # store and answers, in the app's words: never parked, so unknown.
        answer = router.call("POST", f"/v1/envs/{FULLNAME}-9999.0-1.{HEX}/step/", {"action": 0})
        assert (answer.status, answer.body["code"]) == (400, "unknown_instance"), answer
        answer = router.call("GET", f"/v2/envs/{FULLNAME}-9999.0-1.{HEX}")
        assert (answer.status, answer.body["error"]["code"]) == (404, "unknown_instance"), answer


def test_envs_created_through_the_router_land_on_every_pod_and_step_without_errors(release: Release) -> None:
    with release.router() as router:
        release.envs = [Twin(seed=100 + i).create(router) for i in range(12)]
        step_until_ok(release.envs, router, 30)
        # The router reaches the worker that holds each env: no step took the hop between a pod's workers.
        workers = {ids.parse(t.instance_id)[:2] for t in release.envs}  # (pod, slot)
        assert len(workers) >= 3, f"12 creates reached only the workers {workers}"
        hops = [t.instance_id for t in release.envs if t.step(router).headers.get("x-gymserve-forwarded") == "1"]
        assert not hops, f"steps through the router that took a hop between workers: {hops}"
    nodes = {t.node for t in release.envs}
    assert nodes == {f"{FULLNAME}-0", f"{FULLNAME}-1"}, f"creates reached only {nodes}"
    # The same envs, straight on their pods: the router had sent each request to its owner.
    with port_forwards(release.kube, [f"pod/{n}" for n in sorted(nodes)], PORT) as forwards:
        for twin in release.envs:
            step_until_ok([twin], forwards[f"pod/{twin.node}"], 5)
    MEASURED["envs through the router"] = f"{len(release.envs)} envs on {len(nodes)} pods, 35 steps each, 0 errors"


# --- park and adopt: envs outlive their pods --------------------------------------------------------------


class NotAnswered(AssertionError):
    pass


@dataclass
class FarmClient:
    """A /v2 client through the router that rides out a pod's stop, as a training loop must.

    It retries what the farm says is retryable (`503 unavailable` and `moving`, after their Retry-After; a router
    that found no replica) and connection errors (the port-forward to the router breaks while pods come and go),
    in a loop bounded in time. A reset or step is resent only as it was, with the same `seq`: if the first try ran
    and only its answer was lost, the resend is answered again and never runs twice.
    """

    kube: Kube
    patience: float = 120.0
    retries: dict[str, int] = field(default_factory=dict)
    forward: PortForward | None = None

    def __enter__(self) -> FarmClient:
        self.forward = PortForward(self.kube, f"service/{FULLNAME}", 80).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.forward is not None:
            self.forward.stop()

    def _count(self, why: str) -> None:
        self.retries[why] = self.retries.get(why, 0) + 1

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        deadline = time.monotonic() + self.patience
        while True:
            assert self.forward is not None
            try:
                answer = self.forward.call(method, path, body, timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                self._count(type(exc).__name__)
                wait = 0.5
                if self.forward.proc is None or self.forward.proc.poll() is not None:
                    self.forward.stop()  # kubectl port-forward gives up when the pod behind it goes
                    with contextlib.suppress(AssertionError):
                        self.forward.start()
            else:
                error = answer.body.get("error") if isinstance(answer.body, dict) else None
                if not (isinstance(error, dict) and error.get("retryable")) or answer.status < 500:
                    return answer
                reason = (error.get("details") or {}).get("reason") or error["code"]
                self._count(f"{answer.status} {reason}")
                wait = min(float(answer.headers.get("retry-after") or 1), 2.0)
            if time.monotonic() + wait > deadline:
                raise NotAnswered(f"{method} {path}: no answer in {self.patience:.0f} s (retried {self.retries})")
            time.sleep(wait)


@dataclass
class FarmTwin:
    """A CartPole on the farm (/v2, numbered calls) and its local twin: every observation bit for bit the same."""

    seed: int
    instance_id: str = ""
    seq: int = 0
    steps: int = 0
    local: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.instance_id.split(".", 1)[0]

    def create(self, client: FarmClient) -> FarmTwin:
        answer = client.call("POST", "/v2/envs", {"env_id": ENV_ID})
        assert answer.status == 201 or answer.status == 200, f"create: {answer.status} {answer.body}"
        self.instance_id, self.seq = answer.body["instance_id"], answer.body["seq"]
        self.local = gymnasium.make(ENV_ID)
        self.local.action_space.seed(self.seed)
        self._sequenced(client, "reset", {"seed": self.seed}, self.local.reset(seed=self.seed)[0])
        return self

    def step(self, client: FarmClient) -> None:
        action = int(self.local.action_space.sample())
        obs, reward, terminated, truncated, _ = self.local.step(action)
        body = self._sequenced(client, "step", {"action": action}, obs)
        if body and (body["reward"], body["terminated"], body["truncated"]) != (reward, terminated, truncated):
            self.errors.append(f"step {self.steps}: {body} != {reward, terminated, truncated}")
        self.steps += 1
        if terminated or truncated:
            self._sequenced(client, "reset", {}, self.local.reset()[0])

    def _sequenced(self, client: FarmClient, kind: str, body: dict[str, Any], obs: Any) -> dict[str, Any] | None:
        answer = client.call("POST", f"/v2/envs/{self.instance_id}/{kind}", {**body, "seq": self.seq + 1})
        if answer.status != 200:
            self.errors.append(f"{kind} {self.steps}: {answer.status} {answer.body}")
            raise NotAnswered(f"{self.instance_id} {kind}: {answer.status} {answer.body}")
        self.seq = answer.body["seq"]
        got = values.from_wire(answer.body["observation"], "observation")  # /v2 JSON: dtype, shape and data
        if got.dtype != obs.dtype or not np.array_equal(got, obs):
            self.errors.append(f"{kind} {self.steps}: observation {got.tolist()} != {obs.tolist()}")
        return dict(answer.body)


class Stepper:
    """A client that steps every env through the router, round after round, in a thread, while the test disrupts
    the farm; it stops at the first env that stops answering."""

    def __init__(self, kube: Kube, envs: list[FarmTwin]) -> None:
        self.envs, self.client = envs, FarmClient(kube)
        self.rounds = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for twin in self.envs:
                    twin.step(self.client)
                self.rounds += 1
        except BaseException as exc:  # reported by check(), in the test's thread
            self.failure = exc

    def __enter__(self) -> Stepper:
        self.client.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.client.patience + 40)
        self.client.__exit__()

    def rounds_after(self, rounds: int, seconds: float = 120) -> None:
        """At least `rounds` more rounds of steps on every env (the envs answer again after the disruption)."""
        target = self.rounds + rounds
        wait_for(f"{rounds} rounds of steps", lambda: self.rounds >= target or self.failure is not None, seconds)
        self.check()

    def check(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"the stepping client failed: {self.failure!r} (retried {self.client.retries})")
        errors = [f"{t.instance_id}: {t.errors[:3]}" for t in self.envs if t.errors]
        assert not errors, errors


def farm_envs(kube: Kube, count: int, seed: int) -> list[FarmTwin]:
    with FarmClient(kube) as client:
        envs = [FarmTwin(seed + i).create(client) for i in range(count)]
        for _ in range(5):
            for twin in envs:
                twin.step(client)
    return envs


def record_moves(name: str, stepper: Stepper, started: float) -> None:
    measure(name, time.monotonic() - started)
    retried = ", ".join(f"{k} {v}" for k, v in sorted(stepper.client.retries.items())) or "none"
    MEASURED[f"{name}: the client's retries"] = retried


def test_a_deleted_pod_parks_its_envs_and_they_answer_under_their_ids(release: Release) -> None:
    """`kubectl delete pod`: its envs are parked at SIGTERM, adopted by another pod under the same ids, and the
    client's trajectories go on bit for bit; the pod comes back under its name and the ids keep answering.

    What the local cluster cannot show: the store's and the peers' traffic goes through the stand-in DNS (no
    CoreDNS, no kube-proxy: a Service name resolves straight to its ready pods), NetworkPolicies are not enforced
    (tests/helm checks the flows they admit), and a store restart with a PersistentVolume (no provisioner here).
    """
    victim = f"{FULLNAME}-1"
    release.farm = farm_envs(release.kube, 12, seed=1000)
    moved = [t for t in release.farm if t.node == victim]
    assert moved and len(moved) < len(release.farm), [t.node for t in release.farm]
    uid = release.pods()[victim]["metadata"]["uid"]
    started = time.monotonic()
    with Stepper(release.kube, release.farm) as stepper:
        stepper.rounds_after(2)
        release.kube.kubectl("delete", "pod", victim, "--wait=false")

        def back() -> bool:
            stepper.check()
            pod = release.pods().get(victim)
            return pod is not None and pod["metadata"]["uid"] != uid and is_ready(pod)

        wait_for(f"{victim} back and ready", back, 180, interval=0.5)
        stepper.rounds_after(5)
    stepper.check()
    record_moves("deleted gymserve pod -> back and Ready, under a stepping client", stepper, started)
    MEASURED["envs moved by the pod's deletion"] = f"{len(moved)} of {len(release.farm)}, {stepper.rounds} rounds"


def test_upgrade_to_three_pods_keeps_the_envs(release: Release) -> None:
    uids = {name: pod["metadata"]["uid"] for name, pod in release.pods().items()}
    started = time.monotonic()
    release.kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "replicaCount=3", "--wait")
    measure("helm upgrade --wait to 3 gymserve pods", time.monotonic() - started)
    pods = release.pods()
    assert sorted(pods) == [f"{FULLNAME}-{i}" for i in range(3)]
    # Only the replica count changed: no pod was replaced.
    assert {name: pods[name]["metadata"]["uid"] for name in uids} == uids
    with Stepper(release.kube, release.farm) as stepper:
        stepper.rounds_after(2)
    with release.router() as router:
        newcomer = create_on(router, f"{FULLNAME}-2", seed=900)
        step_until_ok([newcomer], router, 10)


def snapshot_key(kube: Kube) -> str:
    return kube.kubectl("get", "secret", f"{FULLNAME}-snapshot-key", "--output", "jsonpath={.data.snapshot-key}")


def test_an_upgrade_that_replaces_every_pod_keeps_the_envs_and_the_key(release: Release) -> None:
    """A changed value that rolls the StatefulSet: every pod stops (parks), one after the other, under the client."""
    key = snapshot_key(release.kube)
    assert len(base64.b64decode(key)) == 64
    uids = {name: pod["metadata"]["uid"] for name, pod in release.pods().items()}
    started = time.monotonic()
    with Stepper(release.kube, release.farm) as stepper:
        stepper.rounds_after(2)
        roll = ["--set", f"podAnnotations.gymserve-e2e/rolled={secrets.token_hex(4)}"]
        release.kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", *roll, "--wait", "--timeout", "8m")
        stepper.rounds_after(5)
    stepper.check()
    record_moves("helm upgrade rolling 3 gymserve pods, under a stepping client", stepper, started)
    pods = release.pods()
    assert all(pods[name]["metadata"]["uid"] != uid for name, uid in uids.items()), "some pod was not replaced"
    # lookup kept the key: a new one would have failed every parked record's signature.
    assert snapshot_key(release.kube) == key


def test_a_scale_down_parks_the_removed_pods_envs(release: Release) -> None:
    gone = f"{FULLNAME}-2"
    with FarmClient(release.kube) as client:
        extra = [twin for twin in (FarmTwin(2000 + i).create(client) for i in range(12)) if twin.node == gone]
    release.farm.extend(extra)
    started = time.monotonic()
    with Stepper(release.kube, release.farm) as stepper:
        stepper.rounds_after(2)
        release.kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "replicaCount=2", "--wait")
        wait_for(f"{gone} gone", lambda: gone not in release.pods(), 120)
        stepper.rounds_after(5)
    stepper.check()
    record_moves("helm upgrade 3 -> 2 gymserve pods, under a stepping client", stepper, started)
    MEASURED["envs of the removed pod"] = str(len([t for t in release.farm if t.node == gone]))


def test_helm4_installs_with_server_side_apply(kube: Kube, release: Release) -> None:
    """Helm 4 applies server-side: every port needs its protocol on a 1.20 API server.

    This release keeps the router's default resolver: the router pod's own nameservers, which HAProxy reads from
    resolv.conf (parse-resolv-conf; they answer nothing here, but they must be the ones configured).
    """
    h4 = Kube(kube.env, kube.namespace, helm_bin="helm4")
    started = time.monotonic()
    args = ["--values", release.values_file, "--set", "replicaCount=1,router.replicaCount=1,router.resolver="]
    h4.helm("install", "h4", str(CHART), *args, "--wait", "--timeout", "3m")
    measure("helm4 install --wait (1 gymserve pod, 1 router pod)", time.monotonic() - started)
    try:
        sts = json.loads(kube.kubectl("get", "statefulset", "h4-gymserve", "--output", "json", "--show-managed-fields"))
        managers = sts["metadata"]["managedFields"]
        assert any(m["operation"] == "Apply" for m in managers), managers
        with port_forwards(kube, ["pod/h4-gymserve-0"], PORT) as forwards:
            created = forwards["pod/h4-gymserve-0"].call("POST", "/v1/envs/", {"env_id": ENV_ID})
            assert created.status == 200 and created.body["instance_id"].startswith("h4-gymserve-0.")
        # No GYMSERVE_ROUTER_RESOLVER: the config's `.if defined(...)` falls back to parse-resolv-conf, the pod's
        # own nameservers.
        script = "cat /etc/resolv.conf; echo resolver=${GYMSERVE_ROUTER_RESOLVER-unset}; haproxy -c -q -f " + MOUNTED
        out = kube.kubectl("exec", "deployment/h4-gymserve-router", "--", "sh", "-c", script)
        assert re.findall(r"^nameserver (\S+)", out, re.M) and "resolver=unset" in out, out
    finally:
        h4.helm("uninstall", "h4", "--wait")


def test_uninstall_leaves_nothing_behind(kube: Kube, release: Release) -> None:
    started = time.monotonic()
    kube.helm("uninstall", RELEASE, "--wait")
    # This cluster's kubelet keeps a deleted pod's object 10-45 s after its containers stop, and several
    # pods (of this release and of the Helm 4 one) go at once.
    wait_for("every pod gone", lambda: not kube.get("pods")["items"], 180)
    measure("helm uninstall --wait, until every pod is gone", time.monotonic() - started)
    kinds = "all,configmaps,secrets,serviceaccounts,endpoints,poddisruptionbudgets,networkpolicies,ingresses"
    left = kube.kubectl("get", kinds, "--selector", SELECTOR, "--output", "name")
    assert not left.strip(), left
    assert not kube.kubectl("get", "secrets", "--selector", "owner=helm", "--output", "name").strip()
    assert kube.helm("list", "--all", "--short").strip() == ""
