"""router-pools.sh, the router's pool writer, run with stand-ins for getent, curl and nginx: which replicas get a
keep-alive pool (only those whose node name matches the farm's pattern and resolves to the address that
answered), and that a change reloads nginx while no change does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from routerconf import POOLS_SCRIPT, compose_env

pytestmark = pytest.mark.helm

NODE_A, NODE_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def _stubs(bin_dir: Path, hosts: dict[str, list[str]], healthz: dict[str, str], extra: str = "") -> None:
    """getent answers from `hosts`, curl from `healthz` (address -> node it names, and `extra` members of every
    /healthz answer), nginx records reloads."""
    bin_dir.mkdir(exist_ok=True)
    table = "\n".join(f"{name} {' '.join(ips)}" for name, ips in hosts.items())
    (bin_dir / "getent").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "{table}" | while read -r name ips; do\n'
        '  [ "$name" = "$2" ] && for ip in $ips; do echo "$ip STREAM $2"; done\ndone\nexit 0\n'
    )
    cases = "".join(
        f'  *//{ip}:*) echo \'{{"status": "ok", "node": "{node}"{extra}}}\' ;;\n' for ip, node in healthz.items()
    )
    (bin_dir / "curl").write_text(f'#!/bin/sh\nfor a; do url=$a; done\ncase "$url" in\n{cases}  *) exit 7 ;;\nesac\n')
    (bin_dir / "nginx").write_text(f'#!/bin/sh\necho "$@" >> {bin_dir}/reloads\n')
    for name in ("getent", "curl", "nginx"):
        (bin_dir / name).chmod(0o755)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """Runs the script as the entrypoint does (it returns, its loop stays); the loop is stopped at the end."""
    groups: list[int] = []

    def _run(interval: str = "600") -> int:
        env = {
            **compose_env(),
            "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
            "GYMSERVE_ROUTER_POOLS_DIR": str(tmp_path),
            "GYMSERVE_ROUTER_DISCOVERY_SECONDS": interval,
            "GYMSERVE_ROUTER_TARGETS_FILE": str(tmp_path / "targets.json"),
        }
        # A session of its own: the background loop stays in it, and is ended with it (by its id) below.
        proc = subprocess.Popen(["sh", str(POOLS_SCRIPT)], env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        groups.append(proc.pid)
        return proc.wait(timeout=30)

    yield _run
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)


@pytest.fixture(autouse=True)
def _needs_tools() -> None:
    for tool in ("sh", "awk", "grep", "sed", "sort"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")


def test_only_replicas_that_are_who_they_say_get_a_pool(tmp_path: Path, run: Callable[[str], int]) -> None:
    hosts = {
        "gymserve": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
        NODE_A: ["10.0.0.1"],
        NODE_B: ["10.0.0.9"],  # claims to be B, but B's name resolves elsewhere
    }
    healthz = {"10.0.0.1": NODE_A, "10.0.0.2": NODE_B, "10.0.0.3": "evil.example:80"}  # .4 does not answer
    _stubs(tmp_path / "bin", hosts, healthz)
    assert run("600") == 0
    pools = (tmp_path / "router.gymserve-pools").read_text()
    nodes = (tmp_path / "router.gymserve-nodes").read_text()
    assert nodes == f"{NODE_A} gymserve-node-{NODE_A};\n"
    assert f"upstream gymserve-node-{NODE_A} {{\n    server 10.0.0.1:8000;\n    keepalive 32;" in pools
    assert "10.0.0.2" not in pools and "10.0.0.3" not in pools and "evil" not in pools
    # Creates and lists: one pool of every replica.
    assert "upstream gymserve-replicas {\n    server 10.0.0.1:8000;\n    keepalive 32;" in pools
    # Creates with an Idempotency-Key: the same replicas, by a hash of the key.
    assert "upstream gymserve-keyed {\n    hash $http_idempotency_key;\n    server 10.0.0.1:8000;\n" in pools
    # Batches: the same replicas, by a hash of the client's addresses (the template's $gs_client).
    assert "upstream gymserve-by-client {\n    hash $gs_client;\n    server 10.0.0.1:8000;\n" in pools
    # Ids whose replica has no pool or refuses: the same replicas, by a consistent hash of the id.
    assert "upstream gymserve-by-id {\n    hash $gs_id consistent;\n    server 10.0.0.1:8000;\n" in pools
    assert (tmp_path / "router.gymserve-any").read_text() == '"" gymserve-replicas;\n'
    # Prometheus (compose) scrapes the same replicas by node name.
    assert json.loads((tmp_path / "targets.json").read_text()) == [{"targets": [f"{NODE_A}:8000"]}]


def test_workers_with_ports_of_their_own_get_a_pool_each(tmp_path: Path, run: Callable[[str], int]) -> None:
    hosts = {"gymserve": ["10.0.0.1"], NODE_A: ["10.0.0.1"]}
    # As gymserve's /healthz lists them (compact JSON), with one entry that is no slot and port: left out.
    _stubs(tmp_path / "bin", hosts, {"10.0.0.1": NODE_A}, ',"worker_ports":{"0":8100,"1":8101,"2":"evil:80"}')
    assert run("600") == 0
    pools = (tmp_path / "router.gymserve-pools").read_text()
    for slot in (0, 1):
        pool = f"upstream gymserve-worker-{NODE_A}-{slot} {{\n    server 10.0.0.1:810{slot};\n    keepalive 32;"
        assert pool in pools
    assert "evil" not in pools and f"gymserve-worker-{NODE_A}-2" not in pools
    workers = (tmp_path / "router.gymserve-workers").read_text()
    assert workers == f"{NODE_A}.0 gymserve-worker-{NODE_A}-0;\n{NODE_A}.1 gymserve-worker-{NODE_A}-1;\n"
    # The replica's own pool stays: ids of a slot with no port of its own, creates and lists.
    assert (tmp_path / "router.gymserve-nodes").read_text() == f"{NODE_A} gymserve-node-{NODE_A};\n"
    assert f"upstream gymserve-node-{NODE_A} {{\n    server 10.0.0.1:8000;" in pools


def test_the_loop_reloads_nginx_when_the_replicas_change_and_only_then(
    tmp_path: Path, run: Callable[[str], int]
) -> None:
    _stubs(tmp_path / "bin", {"gymserve": ["10.0.0.1"], NODE_A: ["10.0.0.1"]}, {"10.0.0.1": NODE_A})
    assert run("0.2") == 0
    reloads = tmp_path / "bin" / "reloads"
    time.sleep(1)
    assert not reloads.exists(), "nothing changed, yet nginx was reloaded"
    # A second replica starts: within a few intervals it has a pool, and nginx reloads once.
    _stubs(
        tmp_path / "bin",
        {"gymserve": ["10.0.0.1", "10.0.0.2"], NODE_A: ["10.0.0.1"], NODE_B: ["10.0.0.2"]},
        {"10.0.0.1": NODE_A, "10.0.0.2": NODE_B},
    )
    deadline = time.monotonic() + 10
    while not reloads.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert reloads.read_text() == "-s reload\n"
    assert NODE_B in (tmp_path / "router.gymserve-nodes").read_text()


def test_no_replica_yet_means_no_pools_and_no_reloads(tmp_path: Path, run: Callable[[str], int]) -> None:
    _stubs(tmp_path / "bin", {}, {})
    assert run("0.2") == 0
    time.sleep(1)
    assert not (tmp_path / "bin" / "reloads").exists(), "nothing changed, yet nginx was reloaded"
    assert (tmp_path / "router.gymserve-any").read_text().strip() == ""  # creates go by name until one shows up
    assert json.loads((tmp_path / "targets.json").read_text()) == [{"targets": []}]
