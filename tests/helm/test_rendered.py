"""`helm template` of every ci/ scenario: valid Kubernetes objects, selectors, labels, probes, settings, hardening."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from helmchart import CHART, FULLNAME, NAMESPACE, ROOT, Rendered, env_of, render, run_helm

from gymserve import secret
from gymserve.settings import PREFIX, Settings, describe

pytestmark = pytest.mark.helm

# Kinds that are custom resources: no Kubernetes schema knows them (their fields are checked below).
CUSTOM_KINDS = {"ServiceMonitor", "HTTPRoute"}
# The newest schema kubernetes-validate ships, and the oldest (1.25; 1.20 is checked on the live cluster).
KUBERNETES_VERSIONS = [kubernetes_validate.latest_version(), "1.25.0"]
IMAGE_UID = int(re.search(r"^USER (\d+):\d+$", (ROOT / "Dockerfile").read_text(), re.M)[1])  # type: ignore[index]
SELECTOR_FORBIDDEN = {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec: the StatefulSet's, the router Deployment's and the helm test pods'."""
    yield "statefulset", rendered.statefulset["spec"]["template"]["spec"]
    yield "router", rendered.router["spec"]["template"]["spec"]
    for pod in rendered.tests:
        yield pod["metadata"]["name"], pod["spec"]


def selectors(rendered: Rendered) -> Iterator[tuple[str, dict[str, str]]]:
    for o in rendered.objects:
        spec, name = o.get("spec", {}), f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Service":
            yield name, spec["selector"]
        elif o["kind"] in ("StatefulSet", "Deployment", "PodDisruptionBudget", "ServiceMonitor"):
            yield name, spec["selector"]["matchLabels"]
        elif o["kind"] == "NetworkPolicy":
            yield name, spec["podSelector"]["matchLabels"]


# --- valid objects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes(rendered: Rendered, version: str) -> None:
    """kubernetes-validate --strict: unknown fields are errors too."""
    for o in rendered.objects:
        if o["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{o['kind']}/{o['metadata']['name']} on Kubernetes {version}: {err.message} at {err.path}")


def test_every_object_is_in_the_release_namespace_and_labelled(rendered: Rendered) -> None:
    for o in rendered.objects:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gymserve"
        assert labels["app.kubernetes.io/instance"] == "t"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("gymserve-")
        assert o["metadata"]["name"].startswith(FULLNAME)
        assert o["metadata"].get("namespace", NAMESPACE) == NAMESPACE


def test_selectors_are_stable_and_select_the_right_pods(rendered: Rendered) -> None:
    server_labels = rendered.statefulset["spec"]["template"]["metadata"]["labels"]
    router_labels = rendered.router["spec"]["template"]["metadata"]["labels"]
    stores = [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == f"{FULLNAME}-store"]
    store_labels = stores[0]["spec"]["template"]["metadata"]["labels"] if stores else {}
    for name, selector in selectors(rendered):
        assert not SELECTOR_FORBIDDEN & set(selector), f"{name} selects on labels that change on upgrade"
        assert selector["app.kubernetes.io/instance"] == "t", name
        target = router_labels if name in (f"Service/{FULLNAME}", f"Deployment/{FULLNAME}-router") else server_labels
        if name.startswith("NetworkPolicy/") and name.endswith("-router"):
            target = router_labels
        if name.endswith("-store"):  # the tenants' store (Deployment, Service, NetworkPolicy)
            target = store_labels
        plain = {k: v for k, v in selector.items() if k != "gymserve/headless"}  # a Service label, not a pod's
        assert plain.items() <= target.items(), f"{name} does not select its pods: {selector}"
    # A new chart version alone must not replace the gymserve pods: that would lose every env.
    assert "helm.sh/chart" not in server_labels
    assert "helm.sh/chart" not in router_labels


def test_every_port_says_tcp(rendered: Rendered) -> None:
    """Helm 4's server-side apply on old clusters needs protocol on every port."""
    for o in rendered.of_kind("Service"):
        assert all(p["protocol"] == "TCP" for p in o["spec"]["ports"]), o["metadata"]["name"]
    for name, spec in pod_specs(rendered):
        for c in spec["containers"]:
            assert all(p["protocol"] == "TCP" for p in c.get("ports", [])), name


# --- the gymserve pods -------------------------------------------------------------------------------


def test_pods_are_addressable_through_a_headless_service(rendered: Rendered) -> None:
    sts = rendered.statefulset
    headless = rendered.one("Service", f"{FULLNAME}-pods")
    backend = rendered.one("Service", f"{FULLNAME}-backend")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    # A draining or full pod (not ready) keeps its DNS name: its envs stay reachable.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    # Creates go only to ready pods.
    assert "clusterIP" not in backend["spec"] and not backend["spec"].get("publishNotReadyAddresses")
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_probes_ask_the_health_endpoints(rendered: Rendered) -> None:
    server = rendered.server
    http = {"name": "http", "containerPort": server_port(rendered), "protocol": "TCP"}
    assert server["ports"] == [
        http,
        {"name": "metrics", "containerPort": settings_of(rendered).metrics_port, "protocol": "TCP"},
    ]
    assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    router = rendered.router["spec"]["template"]["spec"]["containers"][0]
    assert router["readinessProbe"]["httpGet"] == {"path": "/router/healthz", "port": "http"}
    assert router["livenessProbe"]["httpGet"] == {"path": "/router/healthz", "port": "http"}


def server_port(rendered: Rendered) -> int:
    return int(env_of(rendered.server)["GYMSERVE_PORT"])


def settings_of(rendered: Rendered, pod: str = f"{FULLNAME}-0") -> Settings:
    """The settings gymserve reads from the container's env, with the node id the pod name gives it."""
    env = env_of(rendered.server)
    assert env.pop("GYMSERVE_NODE_ID") == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The farm's signing key and the store's password: from Secrets, never values (their own tests below).
    assert "secretKeyRef" in env.pop("GYMSERVE_SNAPSHOT_KEY")
    password = env.pop("GYMSERVE_STORE_PASSWORD", None)
    assert password is None or "secretKeyRef" in password
    assert all(isinstance(v, str) for v in env.values())
    return Settings.from_env({**env, "GYMSERVE_NODE_ID": pod})


def test_env_is_gymserve_settings_that_gymserve_accepts(rendered: Rendered) -> None:
    names = {row["variable"] for row in describe()}
    env = env_of(rendered.server)
    ours = {k for k in env if k.startswith(PREFIX)} - set(secret.VARIABLES)  # secrets, not settings
    assert ours <= names, f"not gymserve settings: {ours - names}"
    settings = settings_of(rendered)  # raises SettingsError on anything gymserve would refuse at start
    assert settings.node_id == f"{FULLNAME}-0"
    assert settings.host == "0.0.0.0"
    # Settings left empty are not set at all: gymserve derives them (runtime dir, allowlist).
    assert all(env[k] != "" for k in ours if isinstance(env[k], str))


def test_env_follows_the_values() -> None:
    rendered = render(None, "config.workers=5", "config.allowedEnvs=CartPole-v1\\,Taxi-*", "config.drainSeconds:=2.5")
    settings = settings_of(rendered)
    assert (settings.workers, settings.allowed_envs, settings.drain_seconds) == (5, "CartPole-v1,Taxi-*", 2.5)
    assert "GYMSERVE_RUNTIME_DIR" not in env_of(rendered.server)


def test_the_pods_answer_to_the_hosts_the_router_and_the_pods_use_and_no_other() -> None:
    """The router passes its clients' Host on; pods ask each other by address (batches, lists) and by name
    (the direct path, the helm tests)."""
    from gymserve.pipeline.hosts import AllowedHosts

    rendered = render(None, "ingress.enabled=true")  # its default host: gymserve.example.com
    hosts = AllowedHosts(settings_of(rendered).allowed_host_items)
    for host in (
        f"{FULLNAME}",
        f"{FULLNAME}.{NAMESPACE}:80",
        f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
        f"{FULLNAME}-1.{FULLNAME}-pods.{NAMESPACE}.svc.cluster.local:8000",
        "gymserve.example.com",
        "localhost:8000",
        "10.244.1.7:8101",
    ):
        assert hosts.admits(host), host
    assert not hosts.admits("evil.example") and not hosts.admits(f"{FULLNAME}.other.svc.cluster.local")
    given = settings_of(render(None, "config.allowedHosts=*"))
    assert given.allowed_host_items == ("*",)


def test_grace_period_and_pre_stop_are_derived_from_the_drain(rendered: Rendered) -> None:
    settings = settings_of(rendered)
    spec = rendered.statefulset["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = int(pre_stop[1])
    # What gymserve says an orchestrator must wait after SIGTERM, plus the preStop sleep before SIGTERM.
    assert spec["terminationGracePeriodSeconds"] == sleep + math.ceil(settings.stop_grace_seconds)
    assert spec["terminationGracePeriodSeconds"] > sleep + settings.graceful_timeout_seconds


@pytest.mark.parametrize("drain,pre_stop,grace", [(0, 0, 10), (20, 5, 35), (7.5, 3, 21), (300, 10, 320)])
def test_grace_period_arithmetic(drain: float, pre_stop: int, grace: int) -> None:
    spec = render(None, f"config.drainSeconds:={drain}", f"preStopSleepSeconds={pre_stop}").statefulset["spec"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_pods_are_hardened(rendered: Rendered) -> None:
    for name, spec in pod_specs(rendered):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            # Whatever must be written goes to an emptyDir; HAProxy writes nothing (its buffers are in memory).
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if name.endswith("router"):  # the router and its helm test, which runs the router image
                assert all(m.get("readOnly") for m in c["volumeMounts"]), name
            else:
                assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], name
    sts_spec = rendered.statefulset["spec"]["template"]["spec"]
    assert sts_spec["securityContext"]["runAsUser"] == IMAGE_UID
    assert sts_spec["securityContext"]["runAsGroup"] == IMAGE_UID
    router_spec = rendered.router["spec"]["template"]["spec"]
    assert router_spec["securityContext"]["runAsUser"] == 99  # the haproxy image's user
    assert {m["mountPath"] for m in router_spec["containers"][0]["volumeMounts"]} == {"/usr/local/etc/haproxy"}
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert sts_spec["serviceAccountName"] == router_spec["serviceAccountName"] == account["metadata"]["name"]


def test_tmp_is_in_memory_by_default() -> None:
    volumes = render().statefulset["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]


def test_image_defaults() -> None:
    rendered = render()
    assert rendered.server["image"] == "gymserve:0.1.0"  # image.tag defaults to appVersion
    assert rendered.server["imagePullPolicy"] == "IfNotPresent"
    assert rendered.router["spec"]["template"]["spec"]["containers"][0]["image"] == "haproxy:2.8"
    rendered = render(None, "image.repository=registry.example/gymserve", "image.tag=1.2.3", "image.pullPolicy=Never")
    assert (rendered.server["image"], rendered.server["imagePullPolicy"]) == (
        "registry.example/gymserve:1.2.3",
        "Never",
    )


# --- the router --------------------------------------------------------------------------------------


def test_router_reads_its_config_from_the_configmap(rendered: Rendered) -> None:
    template = rendered.router["spec"]["template"]
    assert re.fullmatch(r"[0-9a-f]{64}", template["metadata"]["annotations"]["checksum/config"])
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (container,) = template["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/usr/local/etc/haproxy"]]["configMap"]["name"] == f"{FULLNAME}-router"
    assert container["args"][-1] == "/usr/local/etc/haproxy/haproxy.cfg"
    # The config is files/router.cfg as it is (tests/helm/test_router_config.py); the env fills it in.
    env = env_of(container)
    assert env["GYMSERVE_ROUTER_NODE_DOMAIN"] == f".{FULLNAME}-pods.{NAMESPACE}.svc.cluster.local"
    # Every pod, ready or not: the headless Service; the health checks pick the ready ones.
    assert env["GYMSERVE_ROUTER_REPLICAS"] == f"{FULLNAME}-pods.{NAMESPACE}.svc.cluster.local"
    assert env["GYMSERVE_PORT"] == str(server_port(rendered))
    pods = rendered.one("Service", f"{FULLNAME}-pods")
    assert pods["spec"]["clusterIP"] == "None" and pods["spec"]["publishNotReadyAddresses"] is True


def test_router_resolver_is_the_pods_dns_unless_set() -> None:
    container = render().router["spec"]["template"]["spec"]["containers"][0]
    assert "GYMSERVE_ROUTER_RESOLVER" not in env_of(container)
    config = render().router_config()
    assert ".if defined(GYMSERVE_ROUTER_RESOLVER)" in config and "parse-resolv-conf" in config
    env = env_of(render(None, "router.resolver=10.0.0.10:53").router["spec"]["template"]["spec"]["containers"][0])
    assert env["GYMSERVE_ROUTER_RESOLVER"] == "10.0.0.10:53"


def test_router_service_fronts_the_router(rendered: Rendered) -> None:
    service = rendered.one("Service", FULLNAME)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "router"


# --- opt-in features ---------------------------------------------------------------------------------

OPT_IN = {"Ingress", "HTTPRoute", "ServiceMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_opt_in_features_are_off_by_default() -> None:
    assert not {o["kind"] for o in render().objects} & OPT_IN
    assert render().statefulset["spec"]["replicas"] == 2


def test_network_policies_are_on_by_default() -> None:
    """A shared farm: only the router, the test pods, the other gymserve pods (a batch or list across the farm)
    reach the gymserve pods unless the values say otherwise, and the release namespace's Prometheus its /metrics
    port (no API there)."""
    server = render().one("NetworkPolicy", FULLNAME)
    rule, workers, scrapers = server["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in rule["from"]] == [
        "router",
        "test",
        "server",
    ]
    assert scrapers == {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    # The router and the other gymserve pods (a batch's sub-batch) reach the workers' own ports.
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in workers["from"]] == [
        "router",
        "server",
    ]


@pytest.mark.parametrize("workers", [1, 3])
def test_network_policies_admit_every_worker_port_gymserve_opens(workers: int) -> None:
    """The ports of every worker slot, as gymserve counts them (its workers and the spare slots), in both policies:
    the pods' ingress from the router and the router's egress; none when workers have no ports of their own."""
    rendered = render(None, f"config.workers={workers}")
    pod = rendered.statefulset["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env({k: v for k, v in env_of(pod).items() if isinstance(v, str)})
    expected = [{"port": settings.worker_port(slot), "protocol": "TCP"} for slot in range(settings.worker_slots)]
    assert settings.worker_port_base == 8100 and settings.workers == workers
    server = rendered.one("NetworkPolicy", FULLNAME)
    assert server["spec"]["ingress"][1]["ports"] == expected
    router = rendered.one("NetworkPolicy", f"{FULLNAME}-router")
    assert router["spec"]["egress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}, *expected]
    off = render(None, "config.workerPortBase=0")
    assert len(off.one("NetworkPolicy", FULLNAME)["spec"]["ingress"]) == 2  # the shared port, /metrics
    assert off.one("NetworkPolicy", f"{FULLNAME}-router")["spec"]["egress"][0]["ports"] == [
        {"port": 8000, "protocol": "TCP"}
    ]


def test_all_features_render_current_apis() -> None:
    rendered = render("all-features-values.yaml")
    assert {o["kind"] for o in rendered.objects} >= OPT_IN
    # Offline rendering assumes a current cluster; the 1.20 fallbacks are checked on the live cluster.
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": FULLNAME}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "gymserve_envs"
    assert "replicas" not in rendered.statefulset["spec"]  # the HPA owns it
    assert rendered.one("PodDisruptionBudget")["apiVersion"] == "policy/v1"
    ingress = rendered.one("Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    # The store's own policy too: the farm always runs its park store.
    policies = {p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")}
    assert policies == {FULLNAME, f"{FULLNAME}-router", f"{FULLNAME}-store"}


# The fields of gateway.networking.k8s.io/v1 HTTPRoute (Gateway API v1.0+ standard channel) that the chart
# writes. kubernetes-validate has no CRD schemas and the local 1.20 cluster has no Gateway API CRDs, so the
# route is checked here, statically, against the spec's field names and rules.
HTTPROUTE_SPEC_FIELDS = {"parentRefs", "hostnames", "rules"}
PARENT_REF_FIELDS = {"group", "kind", "namespace", "name", "sectionName", "port"}
RULE_FIELDS = {"matches", "filters", "backendRefs", "timeouts"}
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_http_route_is_off_by_default_and_sends_everything_to_the_router() -> None:
    assert not render().has("HTTPRoute")
    rendered = render("all-features-values.yaml")
    route = rendered.one("HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["annotations"] == {"example.com/team": "rl"}
    spec = route["spec"]
    assert set(spec) <= HTTPROUTE_SPEC_FIELDS
    assert spec["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https"}]
    assert all(set(ref) <= PARENT_REF_FIELDS for ref in spec["parentRefs"])
    assert spec["hostnames"] and all(HOSTNAME.match(h) and len(h) <= 253 for h in spec["hostnames"])
    (rule,) = spec["rules"]
    assert set(rule) <= RULE_FIELDS
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    # The router Service, by its port number (a BackendRef has no port names).
    service = rendered.one("Service", FULLNAME)
    assert rule["backendRefs"] == [{"name": FULLNAME, "port": service["spec"]["ports"][0]["port"]}]
    # Without hostnames the route serves the listener's.
    assert (
        "hostnames" not in render(None, "httpRoute.enabled=true", "httpRoute.hostnames=null").one("HTTPRoute")["spec"]
    )


def test_http_route_needs_a_gateway() -> None:
    proc = run_helm(
        "template",
        "t",
        str(CHART),
        "--set",
        "httpRoute.enabled=true",
        "--set",
        "httpRoute.parentRefs=null",
        check=False,
    )
    assert proc.returncode != 0 and "parentRefs" in proc.stderr


def test_service_monitor_scrapes_every_pod_as_job_gymserve() -> None:
    rendered = render("all-features-values.yaml")
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    headless = rendered.one("Service", f"{FULLNAME}-pods")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    # Only the headless Service matches: no pod is scraped twice through the backend Service.
    for service in rendered.of_kind("Service"):
        if service is not headless:
            assert not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # deploy/prometheus' alerts ask for job="gymserve".
    assert headless["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "gymserve"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
    assert {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"} in headless["spec"]["ports"]
    assert (
        render("all-features-values.yaml", "config.metricsPort=0").one("ServiceMonitor")["spec"]["endpoints"][0]["port"]
        == "http"
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_network_policy_lets_only_the_router_tests_peers_and_scrapers_in() -> None:
    rendered = render("all-features-values.yaml")
    server = rendered.one("NetworkPolicy", FULLNAME)
    rule, _, scrapers = server["spec"]["ingress"]  # the others: the workers' own ports, /metrics
    components = [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]]
    assert components == ["router", "test", "server"]  # gymserve pods: a batch's or a list's sub-request
    assert scrapers["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert scrapers["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # Egress: only the other gymserve pods, their shared port and their workers', the store (by name: DNS too).
    assert "Egress" in server["spec"]["policyTypes"]
    to_pods, to_store, dns = server["spec"]["egress"]
    assert to_store["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "store"
    assert to_pods["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert to_pods["ports"] == rendered.one("NetworkPolicy", f"{FULLNAME}-router")["spec"]["egress"][0]["ports"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns


def test_autoscaling_on_envs_only() -> None:
    rendered = render(
        None,
        "autoscaling.enabled=true",
        "autoscaling.targetCPUUtilizationPercentage=null",
        "autoscaling.envsPerPod.target=100",
    )
    (metric,) = rendered.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "100"}


# --- helm test ---------------------------------------------------------------------------------------


def test_helm_test_pods(rendered: Rendered) -> None:
    names = {p["metadata"]["name"] for p in rendered.tests}
    assert names == {f"{FULLNAME}-test-app", f"{FULLNAME}-test-router", f"{FULLNAME}-test-connection"}
    for pod in rendered.tests:
        assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert pod["spec"]["restartPolicy"] == "Never"
    app = rendered.one("Pod", f"{FULLNAME}-test-app")
    env = env_of(app["spec"]["containers"][0])
    assert env["GYMSERVE_HOST"] == "127.0.0.1"  # serves inside the test pod only
    # The same settings, except the farm's: the test pod serves open, on its own (no tenants file, no store, no key).
    tenancy = {"GYMSERVE_TENANTS_FILE", "GYMSERVE_STORE_URL", *secret.VARIABLES}
    assert {k for k in env if k.startswith(PREFIX)} == {
        k for k in env_of(rendered.server) if k.startswith(PREFIX)
    } - tenancy


def test_connection_test_is_optional() -> None:
    names = {p["metadata"]["name"] for p in render(None, "tests.connection=false").tests}
    assert names == {f"{FULLNAME}-test-app", f"{FULLNAME}-test-router"}


def test_notes_tell_how_to_reach_the_router() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "port-forward service/{{ $fullname }}" in notes


def snapshot_key_ref(rendered: Rendered) -> dict[str, Any]:
    (env,) = [e for e in rendered.server["env"] if e["name"] == "GYMSERVE_SNAPSHOT_KEY"]
    return dict(env["valueFrom"]["secretKeyRef"])


def test_the_farms_signing_key_is_the_charts_own_secret_by_default() -> None:
    """Every gymserve pod gets the same key from one Secret, so any pod adopts what another parked: a random key the
    chart makes at install. `helm template` has no cluster, so its lookup finds nothing and each render makes a
    new key; install and upgrade keep the one in the cluster (tests/e2e/test_helm.py checks that live)."""
    rendered = render()
    secret = rendered.one("Secret", f"{FULLNAME}-snapshot-key")
    key = base64.b64decode(secret["data"]["snapshot-key"]).decode()
    assert len(key) == 64 and key.isalnum()
    assert snapshot_key_ref(rendered) == {"name": f"{FULLNAME}-snapshot-key", "key": "snapshot-key"}
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret" .root.Release.Namespace .name' in helpers and "randAlphaNum 64" in helpers


def test_the_signing_key_may_be_a_secret_of_the_users() -> None:
    rendered = render(None, "snapshots.existingSecret=farm-snapshots", "snapshots.secretKey=key")
    assert [s["metadata"]["name"] for s in rendered.of_kind("Secret")] == [f"{FULLNAME}-store-password"]
    assert snapshot_key_ref(rendered) == {"name": "farm-snapshots", "key": "key"}


def env_ref(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [e for e in container.get("env", []) if e["name"] == name]
    return dict(found[0]["valueFrom"]["secretKeyRef"]) if found else None


def test_the_store_asks_for_a_password_that_every_pod_gets_from_one_secret() -> None:
    """The release's store runs with --requirepass from the chart's Secret (made by the same rule as the signing
    key), and every gymserve pod gets it as GYMSERVE_STORE_PASSWORD: a client without it is refused (the live e2e
    shows that)."""
    rendered = render()
    secret = rendered.one("Secret", f"{FULLNAME}-store-password")
    assert len(base64.b64decode(secret["data"]["store-password"])) == 64
    ref = {"name": f"{FULLNAME}-store-password", "key": "store-password"}
    assert env_ref(rendered.server, "GYMSERVE_STORE_PASSWORD") == ref
    (store,) = rendered.one("Deployment", f"{FULLNAME}-store")["spec"]["template"]["spec"]["containers"]
    assert env_ref(store, "STORE_PASSWORD") == ref
    assert store["args"][:2] == ["--requirepass", "$(STORE_PASSWORD)"]
    # An external store: its password only when a Secret of the user's names it.
    external = render(None, "store.url=redis://valkey:6379/0")
    assert env_ref(external.server, "GYMSERVE_STORE_PASSWORD") is None
    assert f"{FULLNAME}-store-password" not in [s["metadata"]["name"] for s in external.of_kind("Secret")]
    theirs = render(None, "store.url=redis://valkey:6379/0", "store.existingSecret=valkey-auth", "store.secretKey=pw")
    assert env_ref(theirs.server, "GYMSERVE_STORE_PASSWORD") == {"name": "valkey-auth", "key": "pw"}


def test_the_pods_dns_is_settable_like_the_routers() -> None:
    spec = render().statefulset["spec"]["template"]["spec"]
    assert "dnsPolicy" not in spec and "dnsConfig" not in spec
    rendered = render(None, "dnsConfig.nameservers={172.17.0.1}", "router.dnsConfig.nameservers={172.17.0.1}")
    for spec in (rendered.statefulset["spec"]["template"]["spec"], rendered.router["spec"]["template"]["spec"]):
        assert (spec["dnsPolicy"], spec["dnsConfig"]) == ("None", {"nameservers": ["172.17.0.1"]})
