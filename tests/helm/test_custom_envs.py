"""The chart runs any image with its own env modules: a derived image, envModules, init containers and volumes."""

from __future__ import annotations

import pytest
from helmchart import env_of, render

pytestmark = pytest.mark.helm

SCENARIO = "custom-envs-values.yaml"


def test_a_derived_image_and_its_env_modules_reach_the_gymserve_container() -> None:
    server = render(SCENARIO).server
    assert server["image"] == "registry.example.com/team/gymserve-guess:0.1.0"
    assert server["imagePullPolicy"] == "Always"
    env = env_of(server)
    assert env["GYMSERVE_ENV_MODULES"] == "guess_env,ale_py"
    assert env["GYMSERVE_ENV_KWARGS_ALLOW"] == "Guess-v0:assets_dir"


def test_empty_env_modules_leave_the_images_own_setting_alone() -> None:
    """A derived image sets GYMSERVE_ENV_MODULES itself; an empty value must not override it with ''."""
    env = env_of(render(None, "image.repository=team/gymserve-guess").server)
    assert "GYMSERVE_ENV_MODULES" not in env and "GYMSERVE_ENV_KWARGS_ALLOW" not in env


def test_init_containers_and_extra_volumes_are_added_next_to_the_charts_own() -> None:
    rendered = render(SCENARIO)
    pod = rendered.statefulset["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-assets"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "env-assets"]
    mounts = {m["name"]: m["mountPath"] for m in rendered.server["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "env-assets": "/opt/env-assets"}


def test_the_default_pod_has_no_init_containers_or_extra_volumes() -> None:
    pod = render().statefulset["spec"]["template"]["spec"]
    assert "initContainers" not in pod and [v["name"] for v in pod["volumes"]] == ["tmp"]


@pytest.mark.parametrize("bad", ["config.envModules=os:system", "config.envModules=a b", "extraVolumeMounts[0].name=x"])
def test_the_schema_refuses_bad_module_lists_and_incomplete_mounts(bad: str) -> None:
    from helmchart import CHART, run_helm

    proc = run_helm("lint", "--strict", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in (proc.stdout + proc.stderr).lower(), bad
