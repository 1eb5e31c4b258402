"""The chart's defaults for a farm teams share: resources, the router's limits, tenants' keys and the store."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from helmchart import CHART, FULLNAME, env_of, render
from routerconf import chart_env, compose_env
from routerconf import render as render_template

from gymserve.settings import Settings
from gymserve.tenancy.tenants import parse

pytestmark = pytest.mark.helm

TENANTS = ("tenants.enabled=true", "tenants.list.team-a.maxEnvs=200", "tenants.list.team-b.createsPerMinute=60")


def containers(rendered: Any) -> list[dict[str, Any]]:
    workloads = [*rendered.of_kind("StatefulSet"), *rendered.of_kind("Deployment")]
    return [c for w in workloads for c in w["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("sets", [(), TENANTS])
def test_every_container_has_cpu_and_memory_requests_and_limits(sets: tuple[str, ...]) -> None:
    found = containers(render(None, *sets))
    assert len(found) == 3  # gymserve, router and the store
    for container in found:
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, container["name"]


def test_the_routers_body_limit_is_the_apps_in_compose_and_the_chart() -> None:
    app_default = Settings.from_env({}).max_body_bytes
    limit = 'http-request deny deny_status 413 if { req.body_size gt "%d" }'
    for name, env in {"compose": compose_env(), "chart": chart_env(render())}.items():
        config = render_template(env)
        assert limit % app_default in config, name
        # The whole body fits in the buffer, so the limit is checked in memory.
        assert f'tune.bufsize "{app_default + 65536}"' in config, name
    assert limit % 2000000 in render_template(chart_env(render(None, "config.maxBodyBytes=2000000")))


def test_per_client_limits_are_settable_and_the_same_by_default_in_compose_and_the_chart() -> None:
    defaults = {}
    for name, env in {"compose": compose_env(), "chart": chart_env(render())}.items():
        config = render_template(env)
        defaults[name] = (
            re.search(r"deny_status 429 if \{ sc0_conn_cur gt \"(\d+)\" \}", config)[1],  # type: ignore[index]
            re.search(r"sub\((\d+)\)\" gt \"(\d+)\"", config)[2],  # type: ignore[index]
            re.search(r"sub\((\d+)\)\" gt \"(\d+)\"", config)[1],  # type: ignore[index]
        )
    assert defaults["compose"] == defaults["chart"] == ("64", "20000", "20000")
    custom = render_template(chart_env(render(None, "router.limits.connectionsPerClient=4")))
    assert 'sc0_conn_cur gt "4"' in custom


def test_the_router_runs_as_non_root_read_only_with_its_buffers_in_memory() -> None:
    spec = render().router["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # No emptyDir at all: HAProxy keeps request bodies in its buffers (tune.bufsize), never on a disk.
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/usr/local/etc/haproxy"]
    assert not any("emptyDir" in v for v in spec["volumes"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 99


def test_without_tenants_the_farm_has_its_park_store_and_no_tenant_keys() -> None:
    """A farm always runs its park store: a stopping pod parks its envs there, whatever the tenants."""
    rendered = render()
    assert not any(o["metadata"]["name"].endswith(("-tenant-keys", "-tenants")) for o in rendered.objects)
    assert rendered.one("Deployment", f"{FULLNAME}-store") and rendered.one("Service", f"{FULLNAME}-store")
    env = env_of(rendered.server)
    assert "GYMSERVE_TENANTS_FILE" not in env
    assert env["GYMSERVE_STORE_URL"] == f"redis://{FULLNAME}-store.farm.svc.cluster.local:6379/0"
    # The helm test's own app serves alone: no store of the farm's, no key.
    app = next(p for p in rendered.tests if p["metadata"]["name"] == f"{FULLNAME}-test-app")
    assert "GYMSERVE_STORE_URL" not in env_of(app["spec"]["containers"][0])


@pytest.mark.parametrize(
    "sets", [("store.url=redis://ext:6380/1",), ("config.storeUrl=redis://ext:6380/1",), ("store.enabled=false",)]
)
def test_an_external_store_or_none_replaces_the_store_pod(sets: tuple[str, ...]) -> None:
    rendered = render(None, *sets)
    assert not any(o["metadata"]["name"].endswith("-store") for o in rendered.objects)
    env = env_of(rendered.server)
    assert env.get("GYMSERVE_STORE_URL") == (None if "store.enabled=false" in sets else "redis://ext:6380/1")


def test_the_store_keeps_parked_envs_in_memory_unless_persistence_is_on() -> None:
    """Off by default: a PVC that no provisioner binds (the local cluster, many bare clusters) would keep the store,
    and with it every park and every tenant's create, Pending."""
    spec = render().one("Deployment", f"{FULLNAME}-store")["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "no" and args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert "emptyDir" in spec["template"]["spec"]["volumes"][0] and "strategy" not in spec
    rendered = render(None, "store.persistence.enabled=true", "store.persistence.storageClass=fast")
    spec = rendered.one("Deployment", f"{FULLNAME}-store")["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and spec["strategy"] == {"type": "Recreate"}
    assert spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": f"{FULLNAME}-store"}
    claim = rendered.one("PersistentVolumeClaim", f"{FULLNAME}-store")["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "1Gi"
    rendered = render(None, "store.persistence.enabled=true", "store.persistence.existingClaim=ours")
    assert not rendered.has("PersistentVolumeClaim")
    volume = rendered.one("Deployment", f"{FULLNAME}-store")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"] == {"claimName": "ours"}


def test_generated_keys_are_in_a_secret_and_only_their_digests_reach_the_pods() -> None:
    rendered = render(None, *TENANTS)
    secret = rendered.one("Secret", f"{FULLNAME}-tenant-keys")
    keys = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    assert set(keys) == {"team-a", "team-b"} and all(len(k) > 40 for k in keys.values())
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    text = rendered.one("ConfigMap", f"{FULLNAME}-tenants")["data"]["tenants.toml"]
    tenants = parse(text, "rendered")
    assert tenants["team-a"].max_envs == 200 and tenants["team-b"].creates_per_minute == 60
    for name, key in keys.items():
        assert tenants[name].digests == (hashlib.sha256(key.encode()).digest(),)
        assert key not in text
    env = env_of(rendered.server)
    assert env["GYMSERVE_TENANTS_FILE"] == "/etc/gymserve/tenants/tenants.toml"
    assert env["GYMSERVE_STORE_URL"] == f"redis://{FULLNAME}-store.farm.svc.cluster.local:6379/0"
    mounts = {m["mountPath"]: m for m in rendered.server["volumeMounts"]}
    assert "subPath" not in mounts["/etc/gymserve/tenants"]  # a subPath mount would never see an update
    volumes = {v["name"]: v for v in rendered.statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/gymserve/tenants"]["name"]]["configMap"]["name"] == f"{FULLNAME}-tenants"


def test_the_store_is_the_releases_own_pod_reached_by_gymserve_alone() -> None:
    rendered = render(None, *TENANTS)
    store = rendered.one("Deployment", f"{FULLNAME}-store")
    (container,) = store["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "valkey/valkey:8"
    assert rendered.one("Service", f"{FULLNAME}-store")["spec"]["ports"][0]["port"] == 6379
    policy = rendered.one("NetworkPolicy", f"{FULLNAME}-store")
    (rule,) = policy["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]] == ["server"]
    egress = rendered.one("NetworkPolicy", FULLNAME)["spec"]["egress"]
    # [0]: the other gymserve pods (a batch or list across the farm), [1]: the store, [2]: DNS.
    assert egress[1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "store"


def test_an_existing_secret_and_an_external_store() -> None:
    rendered = render(
        None, "tenants.enabled=true", "tenants.existingSecret=our-tenants", "store.url=redis://ext:6380/1"
    )
    assert [s["metadata"]["name"] for s in rendered.of_kind("Secret")] == [f"{FULLNAME}-snapshot-key"]
    assert not any(o["metadata"]["name"].endswith("-store") for o in rendered.objects)
    env = env_of(rendered.server)
    assert env["GYMSERVE_STORE_URL"] == "redis://ext:6380/1"
    volumes = {v["name"]: v for v in rendered.statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tenants"]["secret"]["secretName"] == "our-tenants"
    egress = rendered.one("NetworkPolicy", FULLNAME)["spec"]["egress"]
    assert egress[1]["ports"] == [{"port": 6380, "protocol": "TCP"}]


def test_helm_test_uses_a_tenants_key_through_the_router_and_runs_its_own_app_open() -> None:
    rendered = render(None, *TENANTS)
    pods = {p["metadata"]["name"]: p for p in rendered.tests}
    connection = env_of(pods[f"{FULLNAME}-test-connection"]["spec"]["containers"][0])
    assert connection["GYMSERVE_API_KEY"]["secretKeyRef"] == {"name": f"{FULLNAME}-tenant-keys", "key": "team-a"}
    app = env_of(pods[f"{FULLNAME}-test-app"]["spec"]["containers"][0])
    assert "GYMSERVE_TENANTS_FILE" not in app


def test_notes_say_how_to_read_a_generated_key() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "tenant-keys -o jsonpath=" in notes and "base64 -d" in notes


def test_tenants_without_a_store_are_refused() -> None:
    from helmchart import CHART, RELEASE, run_helm, value_args

    sets = ("tenants.enabled=true", "tenants.list.team-a.maxEnvs=2", "store.enabled=false")
    proc = run_helm("template", RELEASE, str(CHART), *value_args(None, sets), check=False)
    assert proc.returncode != 0 and "needs a store" in proc.stderr
    assert render(None, *sets[:2], "store.enabled=false", "store.url=redis://ext:6379/0").has("StatefulSet")
