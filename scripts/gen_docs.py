"""Generate every copy of gymserve's settings (docs tables, the chart's config values and schema) from `Settings`,
and the router's error answers from gymserve's error classes.

Usage (with the dev venv's python: it imports gymserve and PyYAML):
    python scripts/gen_docs.py           # rewrite the generated parts in place
    python scripts/gen_docs.py --check   # exit 1 and name the stale files (tests/unit/test_docs_generated.py)

What it writes, and only there:
- docs/settings.md and helm/README.md: the settings table between the `GENERATED settings` markers;
- helm/README.md: the table of every other chart value between the `GENERATED values` markers, from the
  comments and defaults of helm/values.yaml;
- helm/values.yaml: the keys and comments under `config:` (the comment above `config:` stays hand-written);
- helm/values.schema.json: `properties.config`;
- helm/files/router.cfg: the router's own answers (`http-error` lines between the `GENERATED router-errors`
  comments), one body template filled in from gymserve's error classes (status, code, fault, retryable).

A new `Settings` field appears everywhere on the next run: nothing here lists the settings, except the few
chart-specific words in CHART_OVERRIDES.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gymserve.errors import (
    GymServeError,
    OwnerTimeout,
    PayloadTooLarge,
    RateLimited,
    RoutingError,
    Unavailable,
)
from gymserve.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python scripts/gen_docs.py"


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name} by `{COMMAND}`: do not edit by hand -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


# The chart sets GYMSERVE_NODE_ID to the pod's name itself: the router finds a pod by the node in an id.
CHART_OWNED = {"node_id"}
JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
_DEFAULT_IN_HELP = re.compile(r"\s*\(default: (?P<default>[^)]*)\)")
_UNSET: Any = object()


@dataclass(frozen=True)
class ChartOverride:
    """What the chart says differently about one setting: its value in values.yaml, its words, schema extras."""

    value: Any = _UNSET
    help: str = ""  # replaces the setting's own help in values.yaml, the schema and helm/README.md
    note: str = ""  # appended to the help
    schema: dict[str, Any] = field(default_factory=dict)


CHART_OVERRIDES: dict[str, ChartOverride] = {
    "host": ChartOverride(
        value="0.0.0.0",
        help="Address gunicorn binds to in the pod; the router and the kubelet's probes reach the pod's IP, "
        "so keep 0.0.0.0.",
        schema={"minLength": 1},
    ),
    "port": ChartOverride(
        help="The pod's HTTP port (API, /healthz, /readyz and /metrics); also the container's and the Services' "
        "target port.",
        schema={"maximum": 65535},
    ),
    "workers": ChartOverride(help="gunicorn worker processes per pod; each holds its own envs."),
    "worker_port_base": ChartOverride(
        value=8100,
        note="The chart's router reaches each worker there (its NetworkPolicy admits these ports); 0 sends every "
        "request to the shared port, and (workers - 1) / workers of the steps then take a hop between workers.",
    ),
    "metrics_port": ChartOverride(
        value=9464,
        note="The chart names it the pods' `metrics` port: the ServiceMonitor scrapes it and "
        "networkPolicy.metricsFrom reaches it and no other (0: both use the API's port).",
        schema={"maximum": 65535},
    ),
    "runtime_dir": ChartOverride(
        help="Directory of the workers' private Unix sockets; empty means a fresh directory under /tmp "
        "(an in-memory emptyDir)."
    ),
    "allowed_hosts": ChartOverride(
        help="Comma-separated Host header values the pods answer to, with any port: a name, '.example.com' (that "
        "domain and its subdomains), an IP address, a CIDR network, or '*' for every host (another Host is a 400: "
        "no web page reaches the farm by DNS rebinding). Empty means what the router and the pods themselves use: "
        "localhost, 127.0.0.1, [::1], the router Service's names, every name under .<namespace>.svc.<clusterDomain>, "
        "the Ingress' hosts, the HTTPRoute's hostnames, and the private networks (pods ask each other by address). "
        "Add the names clients use to reach the farm from outside (a Gateway's, a LoadBalancer's)."
    ),
    "max_envs": ChartOverride(help="Live envs one pod may hold (503 beyond; the pod then reads not ready)."),
    "drain_seconds": ChartOverride(
        note="The pods' terminationGracePeriodSeconds is derived from it: preStopSleepSeconds + drainSeconds + 10."
    ),
}


@dataclass(frozen=True)
class Setting:
    """One field of Settings, as the docs and the chart describe it."""

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None
    choices: tuple[str, ...]
    items: str | None  # the pattern every comma-separated item must match

    @property
    def variable(self) -> str:
        return f"{PREFIX}{self.name.upper()}"

    @property
    def chart_key(self) -> str:
        head, *rest = self.name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    @property
    def meaning(self) -> str:
        """The help without its "(default: ...)" part, which the default column says instead."""
        return _DEFAULT_IN_HELP.sub("", self.help)

    @property
    def derived_default(self) -> str:
        """What an empty value means, from the help's "(default: ...)"; empty when the help does not say."""
        m = _DEFAULT_IN_HELP.search(self.help)
        return m["default"] if m else ""

    @property
    def limits(self) -> str:
        if self.choices:
            return "One of " + ", ".join(f"`{c}`" for c in self.choices) + "."
        if self.minimum is not None:
            return f"At least {_number(self.minimum)}."
        return ""

    @property
    def override(self) -> ChartOverride:
        return CHART_OVERRIDES.get(self.name, ChartOverride())

    @property
    def chart_value(self) -> Any:
        value = self.override.value
        return self.default if value is _UNSET else value

    @property
    def chart_help(self) -> str:
        """The sentence that values.yaml, the schema and helm/README.md give this setting."""
        text = self.override.help
        if not text:
            text = self.meaning
            if self.default == "" and self.derived_default:
                text = f"{text.rstrip('.')}; empty means {self.derived_default}."
        return f"{text} {self.override.note}".strip()


def settings(cls: type = Settings) -> list[Setting]:
    """Every field of the settings class, in declaration order."""
    found = []
    for f in fields(cls):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind not in JSON_TYPES:
            raise SystemExit(f"gen_docs: setting {f.name} has type {kind}; teach JSON_TYPES about it")
        found.append(
            Setting(
                name=f.name,
                kind=kind,
                default=f.default,
                help=f.metadata["help"],
                minimum=f.metadata.get("minimum"),
                choices=tuple(f.metadata.get("choices") or ()),
                items=(f.metadata.get("items") or (None,))[0],
            )
        )
    return found


def _number(value: Any) -> str:
    """900.0 as 900, as gymserve and the chart print it; booleans as YAML writes them; others as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return _number(value)
    return json.dumps(str(value))  # a double-quoted YAML string: "", "0.0.0.0" and "info" all stay strings


# --- the tables ------------------------------------------------------------------------------------------


def settings_table(cls: type = Settings) -> str:
    """docs/settings.md: every GYMSERVE_* variable, its default and its meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in settings(cls):
        default = s.derived_default if s.default == "" and s.derived_default else f"`{_number(s.default)}`"
        if default == "``":
            default = "empty"
        rows.append(f"| `{s.variable}` | {default} | {' '.join(filter(None, [s.meaning, s.limits]))} |")
    return "\n".join(rows)


def chart_table(cls: type = Settings) -> str:
    """helm/README.md: each GYMSERVE_* variable's chart value and the chart's default."""
    rows = ["| chart value | variable | default | meaning |", "|---|---|---|---|"]
    for s in settings(cls):
        if s.name in CHART_OWNED:
            rows.append(f"| none: set by the chart | `{s.variable}` | the pod's name | {s.meaning} |")
            continue
        value = s.chart_value
        default = '`""`' if value == "" else f"`{_number(value)}`"
        rows.append(f"| `config.{s.chart_key}` | `{s.variable}` | {default} | {s.chart_help} |")
    return "\n".join(rows)


def replace_between_markers(text: str, name: str, body: str, where: str) -> str:
    begin, end = begin_marker(name), end_marker(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise SystemExit(f"gen_docs: {where} has no {begin!r} ... {end!r} pair to fill in")
    return text[: start + len(begin)] + "\n" + body + "\n" + text[stop:]


# --- helm/README.md's table of the other values, from values.yaml ----------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):(?P<rest>.*)$")
_COMMENT = re.compile(r"^ *# ?(?P<text>.*)$")


def _markdown_cell(text: str) -> str:
    """Text that stays one table cell and shows as written ("<release>" is not an HTML tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")


def values_table(values_text: str) -> str:
    """Every leaf of values.yaml but config (the settings table has it): path, default, its comment."""
    values = yaml.safe_load(values_text)
    rows = ["| value | default | what it does |", "|---|---|---|"]
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    inside_list_at = -1  # indent of a key whose value is a list of maps: its items are one default, not rows
    for line in values_text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if 0 <= inside_list_at < indent and line.strip():
            comment = []
            continue
        m = _KEY_LINE.match(line)
        if not m:
            c = _COMMENT.match(line)
            comment = [*comment, c["text"]] if c and c["text"] else []
            continue
        inside_list_at = -1
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m["key"]]
        stack.append((indent, m["key"]))
        text, comment = " ".join(comment), []
        text = re.sub(rf"^{m['key']} -- ", "", text)
        value: Any = values
        for key in path:
            value = value[key]
        if isinstance(value, list) and value:
            inside_list_at = indent
        if path[0] == "config" or (isinstance(value, dict) and value):
            continue  # config: the settings table; a map with keys: its keys get the rows
        default = json.dumps(value, separators=(", ", ": "))
        rows.append(f"| `{'.'.join(path)}` | `{default}` | {_markdown_cell(text)} |")
    return "\n".join(rows)


# --- the chart -------------------------------------------------------------------------------------------


def values_config_lines(cls: type = Settings) -> list[str]:
    """The lines under `config:` in values.yaml: each key with a comment that starts with its name."""
    lines = []
    for s in settings(cls):
        if s.name in CHART_OWNED:
            continue
        comment = f"{s.chart_key} -- {s.variable}: {s.chart_help}"
        lines += textwrap.wrap(comment, width=110, initial_indent="  # ", subsequent_indent="  # ")
        lines.append(f"  {s.chart_key}: {_yaml_scalar(s.chart_value)}")
    return lines


def replace_values_config(text: str, cls: type = Settings) -> str:
    lines = text.splitlines()
    try:
        start = lines.index("config:") + 1
    except ValueError:
        raise SystemExit("gen_docs: helm/values.yaml has no top-level 'config:' line") from None
    end = start
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return "\n".join([*lines[:start], *values_config_lines(cls), *lines[end:]]) + "\n"


def schema_config(cls: type = Settings) -> dict[str, Any]:
    """`properties.config` of values.schema.json: gymserve's own types, minimums and choices."""
    props: dict[str, Any] = {}
    for s in settings(cls):
        if s.name in CHART_OWNED:
            continue
        prop: dict[str, Any] = {"type": JSON_TYPES[s.kind], "description": f"{s.variable}: {s.chart_help}"}
        if s.minimum is not None:
            prop["minimum"] = s.minimum
        if s.choices:
            prop["enum"] = list(s.choices)
        if s.items:  # the same list rule as Settings: items matching the pattern, commas between
            prop["pattern"] = rf"^(?:\s*{s.items}\s*(?:,\s*{s.items}\s*)*)?$"
        prop.update(s.override.schema)
        props[s.chart_key] = prop
    return {
        "type": "object",
        "description": f"The gymserve settings, one key per {PREFIX}* variable.",
        "properties": props,
        "additionalProperties": False,
        "required": sorted(props),
    }


def replace_schema_config(text: str, cls: type = Settings) -> str:
    schema = json.loads(text)
    schema["properties"]["config"] = schema_config(cls)
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


# --- helm/files/router.cfg: the router's own answers, from the app's error classes ------------------------


@dataclass(frozen=True)
class RouterAnswer:
    """One answer the router makes itself: an app error class, in the router's words."""

    error: type[GymServeError]
    message: str
    retry_after: int | None = None
    # HAProxy's own status for the case (502: the connection broke after the request was sent, so it is not resent),
    # which router.cfg's http-after-response turns into the error's status.
    replaces: int | None = None

    @property
    def haproxy_status(self) -> int:
        return self.replaces or self.instance().status

    def instance(self) -> GymServeError:
        if self.error is RoutingError:
            return RoutingError(404, "not_found", self.message)
        err = GymServeError.__new__(self.error)
        GymServeError.__init__(err, self.message)  # no details: the router knows none
        return err


ROUTER_ANSWERS = (
    RouterAnswer(PayloadTooLarge, "request body exceeds the router's limit (GYMSERVE_MAX_BODY_BYTES)"),
    RouterAnswer(RateLimited, "too many connections or requests from this client address; slow down and retry", 1),
    RouterAnswer(Unavailable, "No gymserve replica could take this request; retry later", 5),
    RouterAnswer(
        Unavailable,
        "The replica's connection broke after the request was sent; it may have run: retry with the same seq",
        1,
        replaces=502,
    ),
    RouterAnswer(OwnerTimeout, "The replica did not answer in time; retry with the same seq"),
    # /metrics is not proxied: one replica's metrics behind a load balancer would mislead.
    RouterAnswer(RoutingError, "Scrape each replica's metrics port, not the router"),
)
# The one body template: the members both shapes share, between what the router sets per request (router.cfg's
# txn.gs_open and txn.gs_close: '{"error": {"details": {}, ' and '}}' on /v2/ paths, '{' and '}' elsewhere).
ROUTER_BODY = '%[var(txn.gs_open)]"code": {code}, "message": {message}, "fault": {fault}, "retryable": {retryable}'
ROUTER_BODY += "%[var(txn.gs_close)]"


def _haproxy_quoted(text: str) -> str:
    """Text inside a double-quoted HAProxy argument: its quotes, backslashes and $ escaped (% is log-format's)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def router_errors() -> str:
    lines = []
    for answer in ROUTER_ANSWERS:
        err = answer.instance()
        body = ROUTER_BODY.format(
            code=json.dumps(err.code),
            message=json.dumps(err.message),
            fault=json.dumps(err.fault),
            retryable=json.dumps(err.retryable),
        )
        header = f" hdr Retry-After {answer.retry_after}" if answer.retry_after else ""
        status, quoted = answer.haproxy_status, _haproxy_quoted(body)
        lines.append(f'    http-error status {status} content-type application/json{header} lf-string "{quoted}\\n"')
    return "\n".join(lines)


def replace_config_block(text: str, name: str, body: str, where: str) -> str:
    """Fills in the lines between `# BEGIN GENERATED <name>` and `# END GENERATED <name>` comments of a config."""
    found = re.search(rf"(?m)^.*# BEGIN GENERATED {name}\b.*\n(?P<body>(?:.*\n)*?)^.*# END GENERATED {name}\b", text)
    if not found:
        raise SystemExit(f"gen_docs: {where} has no '# BEGIN GENERATED {name}' ... '# END GENERATED {name}' pair")
    return text[: found.start("body")] + body + "\n" + text[found.end("body") :]


# --- all of it -------------------------------------------------------------------------------------------


def render(root: Path = ROOT, cls: type = Settings) -> dict[Path, str]:
    """Every generated file's new text, from the files as they are under root."""
    settings_md = root / "docs" / "settings.md"
    chart_md = root / "helm" / "README.md"
    values = root / "helm" / "values.yaml"
    schema = root / "helm" / "values.schema.json"
    router = root / "helm" / "files" / "router.cfg"
    new_values = replace_values_config(values.read_text(), cls)
    chart_text = replace_between_markers(chart_md.read_text(), "settings", chart_table(cls), "helm/README.md")
    return {
        settings_md: replace_between_markers(
            settings_md.read_text(), "settings", settings_table(cls), "docs/settings.md"
        ),
        chart_md: replace_between_markers(chart_text, "values", values_table(new_values), "helm/README.md"),
        values: new_values,
        schema: replace_schema_config(schema.read_text(), cls),
        router: replace_config_block(router.read_text(), "router-errors", router_errors(), "helm/files/router.cfg"),
    }


def stale(rendered: dict[Path, str]) -> list[Path]:
    return [path for path, text in rendered.items() if path.read_text() != text]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    rendered = render()
    outdated = stale(rendered)
    if args.check:
        for path in outdated:
            sys.stderr.write(f"{path.relative_to(ROOT)} is stale: run `{COMMAND}`\n")
        return 1 if outdated else 0
    for path in outdated:
        path.write_text(rendered[path])
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
