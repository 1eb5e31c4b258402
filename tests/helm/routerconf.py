"""The router's one config template and the environments that fill it in: compose's and the chart's.

The nginx image's entrypoint renders /etc/nginx/templates/*.template with envsubst, substituting only the
variables that are set and match NGINX_ENVSUBST_FILTER; `render` does the same here, so the tests read the
config that each router really runs.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from helmchart import ROOT, Rendered, env_of

TEMPLATE = ROOT / "helm" / "files" / "router.conf.template"
# Started by the image's entrypoint next to the template: keeps a keep-alive pool per replica.
POOLS_SCRIPT = ROOT / "helm" / "files" / "router-pools.sh"
POOLS_MOUNTED_AT = "/docker-entrypoint.d/40-gymserve-router-pools.sh"
# What router-pools.sh reads besides the template's variables (envsubst finds none of them in the template).
POOLS_VARIABLES = {"GYMSERVE_ROUTER_REPLICAS", "GYMSERVE_ROUTER_TARGETS_FILE"}
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Where both routers mount it: the image renders it into /etc/nginx/conf.d/default.conf.
MOUNTED_AT = "/etc/nginx/templates/default.conf.template"
# What the image's entrypoint sets by itself when NGINX_ENTRYPOINT_LOCAL_RESOLVERS is on (the pod's resolv.conf).
LOCAL_RESOLVERS = "10.96.0.10"

_ENVSUBST_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def template_variables(text: str | None = None) -> set[str]:
    """The ${NAME} variables of the template (nginx's own $variables are lower case and never set)."""
    return {m[1] for m in re.finditer(r"\$\{([A-Z_][A-Z0-9_]*)\}", TEMPLATE.read_text() if text is None else text)}


def render(env: dict[str, str]) -> str:
    """The template as envsubst renders it: ${NAME} and $NAME of every variable that is set and passes the filter."""
    names = {n for n in env if re.search(env.get("NGINX_ENVSUBST_FILTER", ""), n)}

    def substitute(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        return env[name] if name in names else m[0]

    return _ENVSUBST_VAR.sub(substitute, TEMPLATE.read_text())


def compose_router() -> dict[str, Any]:
    """The router service of docker-compose.yml (its environment's ${NAME:-default} are left as written)."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["router"])


def compose_env() -> dict[str, str]:
    env = compose_router()["environment"]
    assert isinstance(env, dict), "the router's environment is a map"
    # What compose makes of ${NAME:-default} when NAME is not set in the shell: the default.
    return {k: "" if v is None else re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def chart_env(rendered: Rendered) -> dict[str, str]:
    """The chart's router container environment, with what the image's entrypoint adds to it."""
    env = {k: str(v) for k, v in env_of(rendered.router["spec"]["template"]["spec"]["containers"][0]).items()}
    if env.get("NGINX_ENTRYPOINT_LOCAL_RESOLVERS"):
        env["NGINX_LOCAL_RESOLVERS"] = LOCAL_RESOLVERS
    return env


def id_location(config: str) -> str:
    """The regex of the location that proxies instance ids, as written in the config (PCRE)."""
    found = re.findall(r'location ~ "(\^/v\[12\]/envs/\(\?<gs_id>[^"]+)"', config)
    assert len(found) == 1, f"expected one location for instance ids, found {found}"
    return str(found[0])


def python_regex(pcre: str) -> re.Pattern[str]:
    """A location regex for Python's re: PCRE's (?<name>...) is Python's (?P<name>...)."""
    return re.compile(pcre.replace("(?<", "(?P<"))
