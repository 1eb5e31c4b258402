"""The chart under test: `helm template` and `helm lint` runs, cached per set of values, and the rendered objects.

Needs the helm binaries (`bash ../shared/infra/helm-install.sh` installs helm = Helm 3 and helm4; scripts/e2e-helm.sh
does it). No cluster: offline rendering assumes the newest Kubernetes API set, so the 1.20 fallbacks are
rendered by tests/e2e/test_helm.py against the live local cluster.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "t"
NAMESPACE = "farm"
FULLNAME = "t-gymserve"


def helm_binaries() -> dict[str, str]:
    """The Helm majors on this machine: "3" (helm3, else helm) and "4" (helm4)."""
    found = {}
    for major, names in {"3": ("helm3", "helm"), "4": ("helm4",)}.items():
        for name in names:
            path = shutil.which(name)
            if path:
                found[major] = path
                break
    return found


@functools.cache
def _helm_env() -> dict[str, str]:
    # Helm's caches and config in a scratch directory: no state from (or for) the user's own helm.
    home = tempfile.mkdtemp(prefix="gymserve-helm-tests-")
    return {
        **os.environ,
        "HELM_CACHE_HOME": f"{home}/cache",
        "HELM_CONFIG_HOME": f"{home}/config",
        "HELM_DATA_HOME": f"{home}/data",
    }


def run_helm(*args: str, major: str = "3", check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = helm_binaries().get(major)
    if binary is None:
        pytest.skip(f"Helm {major} is not installed (bash ../shared/infra/helm-install.sh installs it)")
    proc = subprocess.run(
        [binary, *args], env=_helm_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def value_args(scenario: str | None = None, sets: Iterable[str] = ()) -> list[str]:
    """--values for a ci/ scenario, then "key=value" as --set and "key:=json" as --set-json (e.g. a float)."""
    args = ["--values", str(CHART / "ci" / scenario)] if scenario else []
    for s in sets:
        key, sep, json_value = s.partition(":=")
        args += ["--set-json", f"{key}={json_value}"] if sep else ["--set", s]
    return args


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template` rendered, hooks (the helm test pods) included."""

    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.of_kind(kind))

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("StatefulSet")

    @property
    def server(self) -> dict[str, Any]:
        """The gymserve container of the StatefulSet."""
        return dict(self.statefulset["spec"]["template"]["spec"]["containers"][0])

    @property
    def router(self) -> dict[str, Any]:
        return self.one("Deployment", f"{FULLNAME}-router")

    @property
    def tests(self) -> list[dict[str, Any]]:
        return [o for o in self.of_kind("Pod") if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]

    def router_config(self) -> str:
        return str(self.one("ConfigMap", f"{FULLNAME}-router")["data"]["haproxy.cfg"])


@functools.cache
def _render(scenario: str | None, sets: tuple[str, ...]) -> Rendered:
    proc = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *value_args(scenario, sets))
    return Rendered(tuple(o for o in yaml.safe_load_all(proc.stdout) if o))


def render(scenario: str | None = None, *sets: str) -> Rendered:
    return _render(scenario, sets)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env as {name: value or valueFrom}."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
