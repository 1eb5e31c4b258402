"""The `gymserve` command: `serve` runs gunicorn with gymserve's config; `bench`; `settings`; `tenant-key`; `keygen`."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import secrets
import sys
import tempfile

from . import __version__
from . import bench as bench_module
from .settings import MULTIPROC_ENV, PREFIX, Settings, SettingsError, describe
from .tenancy import keys
from .tenancy.tenants import TenantsFileError
from .tenancy.tenants import load as load_tenants


def _fresh_multiproc_dir(path: str | None) -> str:
    """The metrics directory, created and emptied so that no dead process's numbers come back.

    This module must not import gymserve.metrics: defining the metrics opens files in this directory.
    """
    path = path or tempfile.mkdtemp(prefix="gymserve-metrics-")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.unlink(stale)
    return path


def _envs_can_be_created(settings: Settings) -> bool:
    """Import GYMSERVE_ENV_MODULES and build the allowlist once before gunicorn forks, as every worker will.

    A module that fails, or an allowlist that matches no env at all, stops the start: such a server
    could never create an env, yet /readyz would call it ready. A pattern that matches nothing while
    others do is only a warning, so that one allowlist can serve images with and without a family.
    """
    from .envs.factory import EnvFactory
    from .envs.modules import EnvModuleError

    try:
        factory = EnvFactory(settings)
    except EnvModuleError as exc:
        print(f"gymserve: {exc}", file=sys.stderr)
        return False
    for pattern in factory.unmatched_patterns():
        print(f"gymserve: warning: {PREFIX}ALLOWED_ENVS: '{pattern}' matches no registered env", file=sys.stderr)
    if not factory.allowed:
        print(
            f"gymserve: no env could ever be created: {PREFIX}ALLOWED_ENVS={settings.allowed_envs!r} matches "
            f"no registered env (with {PREFIX}ENV_MODULES={settings.env_modules!r})",
            file=sys.stderr,
        )
        return False
    return True


def _serve(args: argparse.Namespace) -> int:
    # `pip install gymserve` is the client alone; the server's packages come with the "server" extra.
    missing = [name for name in ("flask", "gunicorn", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gymserve serve: the server needs {', '.join(missing)}: pip install 'gymserve[server]'", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "workers": args.workers, "threads": args.threads}.items()
        if v is not None
    }
    env = dict(os.environ)
    env.update({PREFIX + k.upper(): str(v) for k, v in overrides.items()})
    from . import secret
    from .lifecycle.copies import Sealer
    from .tenancy.store import PASSWORD_VARIABLE

    try:
        settings = Settings.from_env(env)  # fail here, with the variable's name, rather than inside every worker
        if settings.tenants_file:  # a bad file later keeps the last good one; at start there is none
            load_tenants(settings.tenants_file)
        Sealer.from_environ(settings.max_snapshot_bytes, env)  # the snapshot key (a secret) too
        secret.read(PASSWORD_VARIABLE, env)  # and the store's password, when it is in a file
    except SettingsError as exc:
        print(f"gymserve: bad setting: {exc}", file=sys.stderr)
        return 2
    except TenantsFileError as exc:
        print(f"gymserve: bad tenants file ({PREFIX}TENANTS_FILE): {exc}", file=sys.stderr)
        return 2
    if settings.tenants_file and not settings.store_url and (settings.peers_dns or settings.peer_node_pattern):
        # Without a store each replica counts alone: a farm of N replicas would give every tenant N shares.
        print(
            f"gymserve: a farm ({PREFIX}PEERS_DNS or {PREFIX}PEER_NODE_PATTERN) with tenants needs {PREFIX}STORE_URL:"
            " without a shared store, max_envs and creates_per_minute would hold per replica",
            file=sys.stderr,
        )
        return 2
    if not _envs_can_be_created(settings):
        return 2
    # Metrics of every worker go to one directory, wiped now so that no dead process's numbers return.
    # https://prometheus.github.io/client_python/multiprocess/
    env[MULTIPROC_ENV] = _fresh_multiproc_dir(env.get(MULTIPROC_ENV))
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:gymserve.gunicorn_conf", "gymserve.app:create_app()"]
    # exec: gunicorn's master takes this process's PID, so signals from docker/kubernetes reach it.
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def _settings_table(_: argparse.Namespace) -> int:
    """The settings in effect (this process's GYMSERVE_* variables over the defaults), and where each came from."""
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"gymserve: bad setting: {exc}", file=sys.stderr)
        return 2
    print("| variable | value | source | default | meaning |\n|---|---|---|---|---|")
    for row in describe():
        var = row["variable"]
        value = getattr(settings, var.removeprefix(PREFIX).lower())
        source = "environment" if var in os.environ else "default"
        shown = f"`{value}`" if value != "" else "(unset)"  # empty: the behaviour the meaning's "default:" says
        default = f"`{row['default']}`" if row["default"] != "" else "(derived)"
        print(f"| `{var}` | {shown} | {source} | {default} | {row['help']} |")
    return 0


def _tenant_key(args: argparse.Namespace) -> int:
    """A new random key for a tenant (shown once: only its digest goes in the file) and the file's lines."""
    if not re.fullmatch(keys.NAME_PATTERN, args.name) or args.name == "anonymous":
        print(f"gymserve: tenant name {args.name!r}: use lowercase letters, digits, '-' and '_'", file=sys.stderr)
        return 2
    key = keys.new_key()
    # First line: the key (give it to the tenant; it is shown once). Then the lines for the file, which
    # hold its digest only (or append the digest to an existing tenant's key_sha256 to rotate keys).
    print(key)
    print(f"# for {PREFIX}TENANTS_FILE:")
    print(keys.file_entry(args.name, key), end="")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    """The farm's signing key (GYMSERVE_SNAPSHOT_KEY_FILE) written once: a random key in a new file of mode 0600, or
    nothing when the file exists, so that every later run (compose's `keygen` service on each `up`) keeps it.

    The key is written to a temporary file and linked to PATH, which fails if PATH exists: no reader ever sees a
    half-written key, and of two runs at once one wins and the other keeps its key.
    """
    path = os.path.abspath(args.path)
    if os.path.exists(path):
        print(f"gymserve: {path} exists: the key is kept", file=sys.stderr)
        return 0
    try:
        fd, temporary = tempfile.mkstemp(prefix=".keygen-", dir=os.path.dirname(path))  # mode 0600
        try:
            if args.group_readable:  # the store's password: its server reads it through the file's group
                os.fchmod(fd, 0o640)
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:
        print(f"gymserve: {path} exists: the key is kept", file=sys.stderr)
        return 0
    except OSError as exc:
        print(f"gymserve: cannot write the key to {path}: {exc}", file=sys.stderr)
        return 1
    print(f"gymserve: wrote a new key to {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gymserve", description="Serve Gymnasium environments over HTTP.")
    parser.add_argument("--version", action="version", version=f"gymserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server under gunicorn")
    serve.add_argument("--host", help=f"bind address ({PREFIX}HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"TCP port ({PREFIX}PORT, default 8000)")
    serve.add_argument("--workers", type=int, help=f"worker processes ({PREFIX}WORKERS)")
    serve.add_argument("--threads", type=int, help=f"threads per worker ({PREFIX}THREADS)")
    serve.set_defaults(func=_serve)
    bench = sub.add_parser("bench", help="closed-loop load generator: steps/s, latency, errors, bytes per step")
    bench_module.add_arguments(bench)
    bench.set_defaults(func=bench_module.main)
    table = sub.add_parser("settings", help="print every GYMSERVE_* setting in effect, its source and default")
    table.set_defaults(func=_settings_table)
    tenant_key = sub.add_parser(
        "tenant-key", help="print a new API key for a tenant and its lines for the tenants file"
    )
    tenant_key.add_argument("name", help="the tenant's name in the tenants file")
    tenant_key.set_defaults(func=_tenant_key)
    keygen = sub.add_parser(
        "keygen", help=f"write a random farm key to PATH ({PREFIX}SNAPSHOT_KEY_FILE) once, unless PATH exists"
    )
    keygen.add_argument("path", help="the key file to create (mode 0600); an existing file is left as it is")
    keygen.add_argument(
        "--group-readable",
        action="store_true",
        help="mode 0640: for a secret another container reads through the file's group (the store's password)",
    )
    keygen.set_defaults(func=_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
