"""The chart's values: lint with Helm 3 and 4, values.yaml and values.schema.json in step, every setting a value."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

import pytest
import yaml
from helmchart import CHART, SCENARIOS, run_helm, value_args

import gymserve
from gymserve.settings import PREFIX, Settings

pytestmark = pytest.mark.helm

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
# Values that are Kubernetes objects passed through as they are.
KUBERNETES_SHAPED = {"resources", "podSecurityContext", "securityContext"}
# Set by the chart itself, never by a value: the router finds a pod by the node id in its envs' ids.
CHART_OWNED_SETTINGS = {"GYMSERVE_NODE_ID"}


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def settings_fields() -> dict[str, Any]:
    """gymserve's settings by their chart value's name (GYMSERVE_MAX_ENVS -> maxEnvs), less the chart-owned."""
    return {camel(f.name): f for f in fields(Settings) if PREFIX + f.name.upper() not in CHART_OWNED_SETTINGS}


# --- lint --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("major", ["3", "4"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(major: str, scenario: str) -> None:
    run_helm("lint", "--strict", str(CHART), *value_args(scenario), major=major)


@pytest.mark.parametrize(
    "bad",
    [
        "config.workers=0",
        "config.logLevel=verbose",
        "config.port=70000",
        "config.maxBodyBytes=10",
        "config.unknownSetting=1",
        "image.pullPolicy=Sometimes",
        "router.service.type=ExternalName",
        "updateStrategy.type=Recreate",
        "extraEnv[0].name=GYMSERVE_WORKERS",
        "podDisruptionBudget.maxUnavailable=half",
        "serviceMonitor.interval=often",
        "notAValue=1",
    ],
)
def test_schema_refuses_bad_values(bad: str) -> None:
    proc = run_helm("lint", "--strict", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0, f"helm lint accepted {bad}"
    assert "schema" in (proc.stdout + proc.stderr).lower()


def test_chart_metadata() -> None:
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["name"] == "gymserve"
    assert re.fullmatch(r"\d+\.\d+\.\d+", CHART_META["version"])
    # One version everywhere: the image tag defaults to appVersion, which is the package's version.
    assert CHART_META["appVersion"] == gymserve.__version__
    assert CHART_META["kubeVersion"] == ">=1.20.0-0"


# --- values.yaml and the schema ----------------------------------------------------------------------


def test_values_opens_with_the_schema_modeline() -> None:
    assert VALUES_TEXT.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"


def test_schema_is_draft_07_and_closed_at_the_top() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["additionalProperties"] is False


def _walk_schema(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        found += _walk_schema(sub, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        found += _walk_schema(schema["items"], f"{path}[]")
    return found


def test_every_schema_property_has_a_description() -> None:
    missing = [path for path, sub in _walk_schema(SCHEMA) if path and "description" not in sub and "[]" not in path]
    assert not missing


def _compare_keys(values: Any, schema: dict[str, Any], path: str, problems: list[str]) -> None:
    """Every key of a closed schema object is in values.yaml and the other way round, all the way down."""
    if isinstance(values, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(values):
            _compare_keys(item, schema["items"], f"{path}[{i}]", problems)
        return
    if not isinstance(values, dict) or "properties" not in schema:
        return
    if schema.get("additionalProperties") is False:
        # Optional fields of Kubernetes' own objects (e.g. securityContext.privileged, resources.limits) may stay
        # out of values.yaml; so may "global", which only a parent chart sets.
        optional = {"global"}
        if KUBERNETES_SHAPED & set(path.split(".")):
            optional |= set(schema["properties"]) - set(schema.get("required", []))
        for key in set(schema["properties"]) - set(values) - optional:
            problems.append(f"{path}.{key}: in the schema, not in values.yaml")
    for key, value in values.items():
        sub = schema["properties"].get(key)
        if sub is None:
            if schema.get("additionalProperties") is False:
                problems.append(f"{path}.{key}: in values.yaml, not in the schema")
            continue
        _compare_keys(value, sub, f"{path}.{key}" if path else key, problems)


def test_schema_and_values_have_the_same_keys() -> None:
    problems: list[str] = []
    _compare_keys(VALUES, SCHEMA, "", problems)
    assert not problems, "\n".join(problems)


_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z][A-Za-z0-9]*):(?:\s|$)")
_COMMENT_LINE = re.compile(r"^\s*(?:- )?#")


def test_every_key_has_a_comment_that_starts_with_its_name() -> None:
    lines = VALUES_TEXT.splitlines()
    problems = []
    for n, line in enumerate(lines):
        m = _KEY_LINE.match(line)
        if not m or _COMMENT_LINE.match(line):
            continue
        # The comment block right above the key (or on its list item's dash line) must open with "# key --".
        above = n - 1
        first = None
        while above >= 0 and _COMMENT_LINE.match(lines[above]) and lines[above].strip() != "#":
            first = lines[above]
            above -= 1
        if first is None or not re.search(rf"#\s*{m['key']} -- \S", first):
            problems.append(f"values.yaml:{n + 1}: {m['key']} has no comment '# {m['key']} -- ...' above it")
    assert not problems, "\n".join(problems)


# --- the settings ------------------------------------------------------------------------------------


def test_every_gymserve_setting_has_a_chart_value() -> None:
    config = VALUES["config"]
    assert set(config) == set(settings_fields()), "config: must have exactly one key per GYMSERVE_* setting"
    for f in fields(Settings):
        var = PREFIX + f.name.upper()
        assert var in CHART_OWNED_SETTINGS or camel(f.name) in config, var


def test_config_defaults_are_gymserve_defaults() -> None:
    """values.yaml shows the app's defaults; an empty string leaves the setting to gymserve (a derived default)."""
    for key, f in settings_fields().items():
        value = VALUES["config"][key]
        if key == "host":
            assert value == "0.0.0.0"  # a pod must listen on its IP, not on loopback (gymserve's default)
        elif key == "workerPortBase":
            assert value == 8100 and f.default == 0  # the chart's router reaches each worker (off in the app)
        elif key == "metricsPort":
            assert (
                value == 9464 and f.default == 0
            )  # the scrapers' own port, so that they reach no API (off in the app)
        elif f.default == "":
            assert value == "", key
        else:
            assert value == f.default, key
            assert isinstance(value, str) == isinstance(f.default, str), key  # 900 for 900.0 is fine, "900" is not


def test_config_schema_matches_the_settings() -> None:
    """Same types, minimums and choices as gymserve's own validation, and the variable's name in the description."""
    props = SCHEMA["properties"]["config"]["properties"]
    json_type = {"int": "integer", "float": "number", "str": "string"}
    for key, f in settings_fields().items():
        prop = props[key]
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        assert prop["type"] == json_type[kind], key
        assert prop["description"].startswith(PREFIX + f.name.upper()), key
        if f.metadata["minimum"] is not None:
            assert prop["minimum"] == f.metadata["minimum"], key
        if f.metadata["choices"]:
            assert prop["enum"] == list(f.metadata["choices"]), key
    assert SCHEMA["properties"]["config"]["additionalProperties"] is False
