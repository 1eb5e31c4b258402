"""Typed settings read from GYMSERVE_* variables: the one home of every default, limit and timeout."""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

PREFIX = "GYMSERVE_"
# prometheus_client's own variable: where every process of a replica writes its metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SettingsError(ValueError):
    """A GYMSERVE_* variable has a value that cannot be used; the message names the variable."""


def _setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] = (),
    items: tuple[str, str] | None = None,
) -> Any:
    """A setting; `items` = (pattern, example): a comma-separated list whose every item matches the pattern."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "choices": choices, "items": items})


def _default_node_id() -> str:
    # The first DNS label of the host name: the pod name on Kubernetes, the container id in compose.
    label = socket.gethostname().split(".")[0].lower()
    label = re.sub(r"[^a-z0-9-]", "-", label).strip("-")[:63]
    return label or "node"


NODE_ID_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
MODULE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
HOST_ITEM_PATTERN = r"\*|\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[?[0-9A-Fa-f:.]+\]?(?:/[0-9]{1,3})?"
KWARG_EXEMPTION_PATTERN = r"[A-Za-z0-9_.\-/*?\[\]]+:[A-Za-z_][A-Za-z0-9_]*"

# Episode returns span orders of magnitude and signs across envs (Pendulum about -1500..0, CartPole 0..500,
# MountainCar -200..-100): the default buckets are coarse on both sides of 0; operators refine them per env id.
DEFAULT_RETURN_BUCKETS = (-1000, -500, -200, -100, -50, -20, -10, -5, -1, 0, 1, 5, 10, 20, 50, 100, 200, 500, 1000)
DEFAULT_LENGTH_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
SPARE_WORKER_SLOTS = 8
BucketRules = tuple[tuple[str, tuple[float, ...]], ...]


@dataclass(frozen=True)
class Settings:
    """Every knob of the server. Each field is read from GYMSERVE_<FIELD NAME IN UPPER CASE>."""

    # --- listening and the worker model ---
    host: str = _setting("127.0.0.1", "Address gunicorn binds to (use 0.0.0.0 in a container).")
    port: int = _setting(8000, "TCP port gunicorn binds to.", minimum=1)
    workers: int = _setting(2, "gunicorn worker processes; each holds its own envs.", minimum=1)
    threads: int = _setting(8, "Threads per worker (gthread); requests on different envs run in parallel.", minimum=1)
    keepalive_linger_seconds: float = _setting(
        0.002,
        "How long a worker thread that answered a keep-alive request waits for that client's next one before "
        "handing the connection back to gunicorn's poller, while another thread is free (0: never waits).",
        minimum=0,
    )
    log_level: str = _setting(
        "info", "Log level of gunicorn and gymserve.", choices=("debug", "info", "warning", "error", "critical")
    )
    node_id: str = _setting("", "Replica name carried in instance ids (default: the host name's first label).")
    runtime_dir: str = _setting("", "Directory for the workers' private Unix sockets (default: a fresh temp dir).")
    worker_port_base: int = _setting(
        0,
        "When set, the worker in slot s also listens on GYMSERVE_HOST, port GYMSERVE_WORKER_PORT_BASE + s, and "
        "/healthz lists these ports: a router reaches the very worker that holds an env, with no hop between "
        "workers (0: off; the router of compose and of the chart turns it on).",
        minimum=0,
    )
    metrics_port: int = _setting(
        0,
        "When set, gymserve also listens on GYMSERVE_HOST at this port and answers /metrics there and nothing "
        "else: a scraper that a network policy admits to it reaches no API (0: /metrics only on GYMSERVE_PORT).",
        minimum=0,
    )

    allowed_hosts: str = _setting(
        "",
        "Comma-separated Host header values this server answers to, with any port: a name, '.example.com' (that "
        "domain and its subdomains), an IP address ('[::1]' or '::1'), a CIDR network, or '*' for every host. "
        "Another Host is a 400, so that no web page can reach the API by DNS rebinding (default: localhost, "
        "127.0.0.1, [::1], GYMSERVE_HOST and the host of GYMSERVE_PUBLIC_URL).",
        items=(HOST_ITEM_PATTERN, "a host name, .domain, IP address, CIDR network or *"),
    )

    # --- which envs may be created ---
    allowed_envs: str = _setting(
        "",
        "Comma-separated env ids or fnmatch patterns that may be created "
        "(default: every env Gymnasium itself registers, plus those of GYMSERVE_ENV_MODULES).",
    )
    env_modules: str = _setting(
        "",
        "Comma-separated Python modules every worker imports at start, so that the envs they register "
        "can be created (e.g. ale_py, or your own package). Clients can never name a module.",
        items=(MODULE_PATTERN, "a module name, like ale_py or my_envs.v2"),
    )
    env_kwargs_allow: str = _setting(
        "",
        "Comma-separated ENV:KWARG pairs (ENV may be an fnmatch pattern) accepted beyond the kwargs allowlist, "
        "still as plain bounded values, e.g. MyEnv-*:difficulty. See docs/custom-envs.md (an exemption for a "
        "file argument such as xml_file lets clients make the server read files).",
        items=(KWARG_EXEMPTION_PATTERN, "ENV:KWARG, like MyEnv-*:difficulty"),
    )
    max_episode_steps_limit: int = _setting(100_000, "Largest max_episode_steps a create may ask for.", minimum=1)

    # --- request bounds ---
    max_body_bytes: int = _setting(1_048_576, "Largest request body in bytes (413 beyond).", minimum=64)
    episodes_max_count: int = _setting(100, "Most episodes one /episodes request may run.", minimum=1)
    episodes_max_steps: int = _setting(100_000, "Most env steps one /episodes request may take in total.", minimum=1)
    list_max_page: int = _setting(
        500,
        "Most envs one GET /v2/envs answer holds; a longer list is paged (next_cursor). A limit above it is a 422.",
        minimum=1,
    )
    max_batch_size: int = _setting(1024, "Most items one /v2/batch/step request may step.", minimum=1)
    max_num_envs: int = _setting(
        1024, "Largest num_envs of one server-side vector env (each sub-env counts against capacity).", minimum=1
    )

    # --- lifecycle ---
    env_ttl_seconds: float = _setting(
        900.0, "Idle time after which an env is closed by the reaper (0 disables the TTL).", minimum=0
    )
    env_ttl_max_seconds: float = _setting(86_400.0, "Largest idle TTL a create may ask for.", minimum=0)
    reaper_interval_seconds: float = _setting(5.0, "How often each worker looks for expired envs.", minimum=0.05)
    max_envs_per_worker: int = _setting(2_000, "Live envs one worker may hold (503 beyond).", minimum=1)
    max_envs: int = _setting(4_000, "Live envs the whole replica may hold (503 beyond).", minimum=1)
    drain_seconds: float = _setting(
        20.0,
        "After SIGTERM: how long a worker has to park its envs (each once its call in flight is answered).",
        minimum=0,
    )
    state_dir: str = _setting(
        "",
        "Where a server without GYMSERVE_STORE_URL parks its envs at a restart, one subdirectory per port, with the "
        "key that signs them (default: $XDG_STATE_HOME/gymserve, else ~/.local/state/gymserve).",
    )
    idle_action: str = _setting(
        "close",
        "What the reaper does with an env idle past its TTL: close it, or park it (hibernate) for "
        "GYMSERVE_PARK_TTL_SECONDS; the next request brings it back.",
        choices=("close", "park"),
    )
    park_ttl_seconds: float = _setting(
        86_400.0, "How long an env hibernated by GYMSERVE_IDLE_ACTION=park is kept.", minimum=1
    )
    forward_timeout_seconds: float = _setting(60.0, "Timeout of a request forwarded to the owning worker.", minimum=0.1)
    stream_idle_seconds: float = _setting(
        60.0,
        "A step stream (GET /v2/envs/<id>/stream, a WebSocket) with no message for this long is closed (1001).",
        minimum=1,
    )
    stream_max_in_flight: int = _setting(
        64,
        "Requests a step stream may send before reading: the server answers at most this many of those it has read "
        "before it sends their answers, and reads no more while they are being sent.",
        minimum=1,
    )
    stream_max_unsent_bytes: int = _setting(
        4 * 1024 * 1024,
        "Answers a step stream holds before sending them; the server reads no more while they are being sent (a "
        "client that takes none of them for GYMSERVE_HEAD_TIMEOUT_SECONDS is closed).",
        minimum=1024,
    )
    stream_pings_per_second: int = _setting(
        10, "Pings a step stream may send per second; past it, it is closed (1008).", minimum=1
    )
    step_timeout_seconds: float = _setting(
        30.0,
        "The deadline of every env call (reset, step, render, fork, snapshot; batch items and frames too): past it the "
        "caller gets 504 step_timeout and the env is quarantined (docs/operations.md, 'What one env may cost').",
        minimum=0.1,
    )
    step_timeout_overrides: str = _setting(
        "",
        "Deadlines by env id: 'pattern=seconds' entries joined by ';', the first fnmatch pattern that matches an env "
        "id wins (e.g. 'ALE/*=60;Ant-v5=10'); other env ids get GYMSERVE_STEP_TIMEOUT_SECONDS.",
    )
    max_stuck_threads: int = _setting(
        4,
        "Calls past their deadline that a worker's threads may stay stuck in (each gets a spare thread); one more, and "
        "the worker parks its other envs, its successor adopts them, and it is replaced.",
        minimum=0,
    )
    tenant_thread_share: float = _setting(
        0.5,
        "The share of a worker's threads one tenant's slow env calls (running over 0.1 s) may hold; past it its "
        "new env calls get 429 tenant_busy at once.",
        minimum=0.01,
    )
    retry_after_seconds: int = _setting(5, "Retry-After sent with 503 answers.", minimum=1)
    snapshot_ttl_seconds: float = _setting(
        604_800.0,
        "How long a snapshot can be restored after it was made (it is bound to its tenant and the farm's key too).",
        minimum=1,
    )
    max_snapshot_bytes: int = _setting(
        1_048_576,
        "Largest env snapshot in bytes (GET /v2/envs/<id>/snapshot; a restore's body is also bounded by "
        "GYMSERVE_MAX_BODY_BYTES). Snapshots are signed with GYMSERVE_SNAPSHOT_KEY, a secret read from the "
        "environment only (never printed); without it they are off.",
        minimum=1024,
    )

    # --- watching: the /ui page, frames and episode statistics ---
    frame_wait_seconds: float = _setting(
        0.5,
        "How long a frame request (GET /v2/envs/<id>/frame) waits for an env busy with another request "
        "before it answers with the env's last frame instead.",
        minimum=0,
    )
    episode_history: int = _setting(
        100, "Finished episodes whose return and length each env keeps for GET /v2/envs/<id>.", minimum=1
    )
    episode_return_buckets: str = _setting(
        "default=" + ",".join(map(format, DEFAULT_RETURN_BUCKETS)),
        "Buckets of the gymserve_episode_return histogram by env id: 'pattern=b1,b2,...' entries joined by ';', "
        "the first fnmatch pattern that matches an env id wins, 'default' matches every env id "
        "(e.g. 'CartPole-*=10,50,100,200,500;default=-100,0,100').",
    )
    episode_length_buckets: str = _setting(
        "default=" + ",".join(map(format, DEFAULT_LENGTH_BUCKETS)),
        "Buckets of the gymserve_episode_length histogram (steps) by env id, written like "
        "GYMSERVE_EPISODE_RETURN_BUCKETS.",
    )
    # --- tenants, keys and what one request may cost ---
    tenants_file: str = _setting(
        "",
        "TOML file of tenants, their key digests and limits (docs/sharing.md); unset: open, one anonymous tenant.",
    )
    tenants_reload_seconds: float = _setting(
        5.0,
        "How often each worker looks whether the tenants file changed (a bad file keeps the last good one).",
        minimum=0.1,
    )
    store_url: str = _setting(
        "",
        "redis:// URL of the farm's Redis or Valkey: it parks envs that move between replicas (with "
        "GYMSERVE_SNAPSHOT_KEY) and counts tenants' envs farm-wide (unset: GYMSERVE_STATE_DIR and a SQLite file, "
        "per server).",
    )
    store_timeout_seconds: float = _setting(
        0.5,
        "Longest a call to the store may take (connect or answer); after a failure, creates get 503 at once "
        "for GYMSERVE_RETRY_AFTER_SECONDS, then one call tries the store again.",
        minimum=0.01,
    )
    store_heartbeat_seconds: float = _setting(
        10.0,
        "How often a worker renews its counts in the store; a worker silent for 3 beats stops counting.",
        minimum=0.5,
    )
    head_timeout_seconds: float = _setting(
        10.0,
        "Longest a client may take to send a request (head, and a body up to the limit); it holds no thread meanwhile.",
        minimum=0.1,
    )
    max_answer_bytes: int = _setting(
        16_777_216,
        "Largest answer, in bytes: an env whose observation, vector render or space descriptions would exceed it "
        "is refused at create (422), and any other answer over it (a step's info, a batch) is answered 422.",
        minimum=1024,
    )
    max_env_bytes: int = _setting(
        268_435_456,
        "Memory one env may take (a vector env's sub-envs together), measured as the worker's growth while it is "
        "made (a vector env's on one sub-env, made first); over it the create is refused (422 env_too_large).",
        minimum=1_048_576,
    )

    # --- placement ---
    placement_tolerance: int = _setting(
        2,
        "A create goes to the worker with the fewest envs (sub-envs counted) when the one that accepted it holds "
        "more than this many above it.",
        minimum=0,
    )

    # --- across replicas ---
    peer_node_pattern: str = _setting(
        "",
        "Regex (whole name) of the other replicas' node names: a batch sends their items to them "
        "(empty: such items fail with wrong_replica).",
    )
    peer_domain: str = _setting(
        "", "What follows a peer's node name in its DNS name (e.g. .gymserve-pods.envs.svc.cluster.local)."
    )
    peer_connect_timeout_seconds: float = _setting(
        1.5,
        "How long connecting to another replica may take (its answer then has GYMSERVE_FORWARD_TIMEOUT_SECONDS): "
        "a connection a network policy drops is a timeout, not a refusal, and a batch falls back from a worker's "
        "port to the shared one after it.",
        minimum=0.05,
    )
    peers_dns: str = _setting(
        "",
        "A DNS name that resolves to every replica: lists show the envs of all of them (empty: this replica's only).",
    )
    public_url: str = _setting(
        "",
        "This replica's own base URL (e.g. its pod's name under the headless Service), returned at create as "
        "direct_url so that clients can step its envs without the router (empty: none).",
    )

    def __post_init__(self) -> None:
        if not self.node_id:
            object.__setattr__(self, "node_id", _default_node_id())
        if not re.fullmatch(NODE_ID_PATTERN, self.node_id):
            raise SettingsError(
                f"{PREFIX}NODE_ID={self.node_id!r}: use lowercase letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit"
            )
        try:
            re.compile(self.peer_node_pattern)
        except re.error as err:
            raise SettingsError(f"{PREFIX}PEER_NODE_PATTERN={self.peer_node_pattern!r}: not a regex ({err})") from err
        if self.worker_port_base and not (
            self.worker_port_base + self.worker_slots <= 65536
            and not self.worker_port_base <= self.port < self.worker_port_base + self.worker_slots
        ):
            raise SettingsError(
                f"{PREFIX}WORKER_PORT_BASE={self.worker_port_base}: its {self.worker_slots} ports (one per worker "
                f"slot: {PREFIX}WORKERS + {SPARE_WORKER_SLOTS}) must end by 65535 and leave out "
                f"{PREFIX}PORT={self.port}"
            )
        if self.metrics_port and (
            self.metrics_port > 65535
            or self.metrics_port == self.port
            or (self.worker_port_base <= self.metrics_port < self.worker_port_base + self.worker_slots)
        ):
            raise SettingsError(
                f"{PREFIX}METRICS_PORT={self.metrics_port}: must be at most 65535 and differ from {PREFIX}PORT "
                f"and the workers' ports"
            )
        if self.public_url and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", self.public_url):
            raise SettingsError(f"{PREFIX}PUBLIC_URL={self.public_url!r}: expected http(s)://host[:port][/prefix]")
        if self.env_ttl_max_seconds and self.env_ttl_seconds > self.env_ttl_max_seconds:
            raise SettingsError(
                f"{PREFIX}ENV_TTL_SECONDS={self.env_ttl_seconds} exceeds "
                f"{PREFIX}ENV_TTL_MAX_SECONDS={self.env_ttl_max_seconds}"
            )
        for f in fields(self):
            if f.metadata["items"] is not None:
                pattern, example = f.metadata["items"]
                for item in _items(getattr(self, f.name)):
                    if not re.fullmatch(pattern, item):
                        raise SettingsError(f"{PREFIX}{f.name.upper()}: {item!r} is not {example}")
        for item in _items(self.allowed_hosts):
            if "/" in item:
                try:
                    ipaddress.ip_network(item.strip("[]"), strict=False)
                except ValueError as err:
                    raise SettingsError(f"{PREFIX}ALLOWED_HOSTS: {item!r} is not a CIDR network ({err})") from None
        for name in ("episode_return_buckets", "episode_length_buckets"):
            parse_buckets(PREFIX + name.upper(), getattr(self, name))  # a bad value stops the start, naming it
        if self.tenant_thread_share > 1:
            raise SettingsError(f"{PREFIX}TENANT_THREAD_SHARE: {self.tenant_thread_share} is not a share (0.01 to 1)")
        self.step_timeouts  # noqa: B018  # a bad value stops the start, naming it

    @property
    def worker_slots(self) -> int:
        """Worker slots of a replica: its workers, and room for those added later with SIGTTIN (a slot is reused
        by the worker that replaces a dead one)."""
        return self.workers + SPARE_WORKER_SLOTS

    def worker_port(self, slot: int) -> int | None:
        """The port of the worker in `slot` (GYMSERVE_WORKER_PORT_BASE), or None when workers have none."""
        return self.worker_port_base + slot if self.worker_port_base else None

    @property
    def allowed_host_items(self) -> tuple[str, ...]:
        """GYMSERVE_ALLOWED_HOSTS's items, or the default: this machine's own names, the bind address, the public
        URL's host."""
        given = _items(self.allowed_hosts)
        if given:
            return given
        public = urlsplit(self.public_url).hostname if self.public_url else None
        return tuple(dict.fromkeys(h for h in ("localhost", "127.0.0.1", "[::1]", self.host, public) if h))

    @property
    def allowed_env_patterns(self) -> tuple[str, ...]:
        return _items(self.allowed_envs)

    @property
    def env_module_names(self) -> tuple[str, ...]:
        return _items(self.env_modules)

    @property
    def env_kwargs_exemptions(self) -> tuple[tuple[str, str], ...]:
        """(env pattern, kwarg name) pairs of GYMSERVE_ENV_KWARGS_ALLOW."""
        return tuple((env, kwarg) for env, _, kwarg in (p.rpartition(":") for p in _items(self.env_kwargs_allow)))

    @property
    def episodes_max_bytes(self) -> int:
        """Observation bytes one /episodes answer may hold: a frame env would otherwise fill the memory."""
        return 64 * self.max_body_bytes

    @property
    def max_kwargs_bytes(self) -> int:
        """JSON size of a create's kwargs: a constructor argument (a map, say) must not take minutes to build."""
        return min(16_384, self.max_body_bytes)

    @property
    def parking_dir(self) -> str:
        """GYMSERVE_STATE_DIR, or the per-user state directory (the XDG base directory rule)."""
        if self.state_dir:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return os.path.join(base, "gymserve")

    @property
    def graceful_timeout_seconds(self) -> float:
        """gunicorn's graceful_timeout: the drain window plus time to close envs and answer in-flight steps."""
        return self.drain_seconds + 5.0

    @property
    def stop_grace_seconds(self) -> float:
        """What an orchestrator should wait after SIGTERM before SIGKILL (compose, Kubernetes)."""
        return self.graceful_timeout_seconds + 5.0

    @property
    def step_timeouts(self) -> tuple[tuple[str, float], ...]:
        """GYMSERVE_STEP_TIMEOUT_OVERRIDES as (fnmatch pattern, seconds) pairs, in their order."""
        var = PREFIX + "STEP_TIMEOUT_OVERRIDES"
        rules = parse_buckets(var, self.step_timeout_overrides)
        if any(len(seconds) != 1 or seconds[0] < 0.1 for _, seconds in rules):
            raise SettingsError(
                f"{var}={self.step_timeout_overrides!r}: each entry is 'pattern=seconds', seconds >= 0.1"
            )
        return tuple((pattern, seconds[0]) for pattern, seconds in rules)

    def step_timeout(self, env_id: str) -> float:
        """The deadline of `env_id`'s calls: its first matching override, or GYMSERVE_STEP_TIMEOUT_SECONDS."""
        return next(
            (s for pattern, s in self.step_timeouts if fnmatch.fnmatchcase(env_id, pattern)), self.step_timeout_seconds
        )

    def episode_buckets(self, kind: str, env_id: str) -> tuple[float, ...]:
        """The buckets of the episode `kind` ("return" or "length") histogram for `env_id`."""
        name = f"episode_{kind}_buckets"
        rules = parse_buckets(PREFIX + name.upper(), getattr(self, name))
        for pattern, buckets in rules:
            if pattern == "default" or fnmatch.fnmatchcase(env_id, pattern):
                return buckets
        return tuple(map(float, DEFAULT_RETURN_BUCKETS if kind == "return" else DEFAULT_LENGTH_BUCKETS))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = PREFIX + f.name.upper()
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            raw = environ.get(var)
            if raw is None:
                continue
            values[f.name] = _parse(var, raw, f.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in fields(self):
            var = PREFIX + f.name.upper()
            value = getattr(self, f.name)
            minimum = f.metadata["minimum"]
            if minimum is not None and value < minimum:
                raise SettingsError(f"{var}={value!r}: must be at least {minimum}")
            choices = f.metadata["choices"]
            if choices and value not in choices:
                raise SettingsError(f"{var}={value!r}: must be one of {', '.join(choices)}")

    def as_environ(self) -> dict[str, str]:
        """These settings as GYMSERVE_* variables, for handing them to a child process."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def _items(csv: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in csv.split(",") if p.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _parse(var: str, raw: str, type_name: Any) -> Any:
    kind = type_name if isinstance(type_name, str) else type_name.__name__
    try:
        return _PARSERS[kind](raw.strip())
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: expected {'a number' if kind == 'float' else 'an integer'}") from None


def parse_buckets(var: str, raw: str) -> BucketRules:
    """'pattern=b1,b2,...;...' as (pattern, strictly increasing finite bounds) pairs; a SettingsError names `var`."""
    rules = []
    for entry in filter(None, (e.strip() for e in raw.split(";"))):
        pattern, sep, numbers = (part.strip() for part in entry.partition("="))
        if not sep or not pattern:
            raise SettingsError(f"{var}={raw!r}: {entry!r} is not 'pattern=b1,b2,...'")
        try:
            bounds = tuple(float(n) for n in numbers.split(","))
        except ValueError:
            raise SettingsError(f"{var}={raw!r}: the buckets of {pattern!r} must be numbers separated by ','") from None
        if not all(math.isfinite(b) for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise SettingsError(f"{var}={raw!r}: the buckets of {pattern!r} must be finite and strictly increasing")
        rules.append((pattern, bounds))
    return tuple(rules)


def describe() -> list[dict[str, Any]]:
    """Every setting with its variable, default and help, for `gymserve settings` and scripts/gen_docs.py."""
    return [
        {"variable": PREFIX + f.name.upper(), "default": f.default, "help": f.metadata["help"]}
        for f in fields(Settings)
    ]
