#!/usr/bin/env bash
# The docs stage: the commands of README.md and docs/*.md run as written, in a scratch copy of the checkout (what a
# user has after `git clone`), as scripts/docs_blocks.py lists them: every shell block runs here or in the compose
# stage, or carries a `<!-- not-run: reason -->` marker.
#   local    (.ci/run, after scripts/test.sh) the blocks that need a local `gymserve serve`: the README's first
#            command makes the scratch copy's .venv and starts the server, each page runs against it (or its own);
#            then the wheel and sdist are built, and the client is installed from the wheel into a clean venv and
#            steps an env with the server's packages (flask, gunicorn, pygame, prometheus_client) blocked.
#   compose  (scripts/e2e-compose.sh, with the engine up) the blocks that need Docker Compose.
# The docs' ports move to free ones (localhost:8000, :8080, :9000, --port, GYMSERVE_PORT), so nothing here meets a
# server or a stack of yours; compose runs under its own project name. curl fails on an HTTP error unless the block
# is marked `http-errors`. HOME is a scratch directory. Usage: bash scripts/test-docs.sh [local|compose]
# Environment: GYMSERVE_VENV (the dev venv, default .venv: the compose stage's `.venv/bin/gymserve`),
#   GYMSERVE_DOCS_KEEP=1 (keep the scratch directory, for a look at it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
STAGE=${1:-local}
VENV=${GYMSERVE_VENV:-.venv}
started=$(date +%s)
say() { echo "docs: $* ($(( $(date +%s) - started ))s)"; }

python3 scripts/docs_blocks.py check

WORK=$(mktemp -d -t gymserve-docs-XXXXXX)
COPY=$WORK/gymserve
mkdir -p "$WORK/bin" "$WORK/home" "$WORK/logs"
: >"$WORK/servers"
# A clone (the docs run git too), with the tracked files and the new ones that are not ignored copied over it: a
# change being written is checked too. Never .venv, dist or caches.
git clone --quiet --depth 1 "file://$REPO" "$COPY"
git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$COPY"

free_port() {
    python3 - <<'PY'
import random, socket
for _ in range(200):
    port = random.randint(20000, 29999)  # below the ephemeral range and Kubernetes' NodePorts
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
PY
}
P8000=$(free_port) P8080=$(free_port) P9000=$(free_port)
PORTS=(--port "8000=$P8000" --port "8080=$P8080" --port "9000=$P9000")

# curl fails on an HTTP error (4xx/5xx) and shows the body, unless a block is marked http-errors.
REAL_CURL=$(command -v curl)
cat >"$WORK/bin/curl" <<EOF
#!/bin/sh
if [ "\${DOCS_CURL_ANY_STATUS:-0}" = 1 ]; then exec "$REAL_CURL" "\$@"; fi
exec "$REAL_CURL" --fail-with-body "\$@"
EOF
# A bare `gymserve` (docs that assume an activated venv) is the scratch copy's. `gymserve bench` without --url
# goes to 127.0.0.1:8000, which is moved too; and it runs 2 s instead of 10 unless a block says how long.
cat >"$WORK/bin/gymserve" <<EOF
#!/bin/sh
if [ "\$1" = bench ]; then
    case " \$* " in *" --url"*) ;; *) set -- "\$@" --url "http://127.0.0.1:$P8000" ;; esac
    case " \$* " in *" --seconds"*) ;; *) set -- "\$@" --seconds 2 ;; esac
fi
exec "$COPY/.venv/bin/gymserve" "\$@"
EOF
chmod +x "$WORK/bin/curl" "$WORK/bin/gymserve"
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
export HOME=$WORK/home PATH=$WORK/bin:$PATH DOCS_PYTHON=$COPY/.venv/bin/python DOCS_CURL_ANY_STATUS=0

stop_servers() {
    local pid
    while read -r pid; do
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done <"$WORK/servers"
    : >"$WORK/servers"
}
compose_left() {
    docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
    docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
    docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"
}
compose_clean() {
    (cd "$COPY" && docker compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1) || true
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    if [ -n "$ids" ]; then docker rm -f $ids >/dev/null; fi  # shellcheck disable=SC2086
    ids=$(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    if [ -n "$ids" ]; then docker network rm $ids >/dev/null; fi  # shellcheck disable=SC2086
    ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    if [ -n "$ids" ]; then docker volume rm $ids >/dev/null; fi  # shellcheck disable=SC2086
}
finish() {
    local rc=$?
    stop_servers
    if [ "$STAGE" = compose ]; then compose_clean; fi
    if [ -s "$WORK/tagged" ]; then docker rmi "$(cat "$WORK/tagged")" >/dev/null || true; fi
    if [ "$rc" != 0 ]; then
        echo "docs: FAILED in $(cat "$WORK/at" 2>/dev/null || echo 'the set-up') (exit $rc)" >&2
        for log in "$WORK"/logs/*.log; do
            [ -s "$log" ] && { echo "--- the end of $log"; tail -n 30 "$log"; } >&2
        done
    fi
    if [ "${GYMSERVE_DOCS_KEEP:-0}" = 1 ]; then echo "docs: kept $WORK"; else rm -rf "$WORK"; fi
    say "exit $rc"
}
trap finish EXIT

# --- what the generated script calls (scripts/docs_blocks.py script) ---------------------------------------------
docs_page_start() {
    echo
    say "page $1"
    cd "$COPY"
    if [ "$STAGE" = compose ]; then rm -f .env; fi
    if [ "$1" = docs/sb3.md ]; then
        # In place of its not-run first command (PyTorch's CPU index): the CPU build that CI's machines hold, as
        # scripts/test.sh installs it (GYMSERVE_TORCH, GYMSERVE_TORCH_INDEX), so that '.[sb3]' pulls no CUDA build.
        local index=()
        if [ -n "${GYMSERVE_TORCH_INDEX:-}" ]; then index=(--index-url "$GYMSERVE_TORCH_INDEX"); fi
        .venv/bin/pip install --quiet "${index[@]}" "${GYMSERVE_TORCH:-torch==2.13.0}"
    fi
}
docs_block() {
    echo "$1" >"$WORK/at"
    printf '\ndocs: - %s (%s)\n' "$1" "$2"  # on a line of its own: curl's answers end without a newline
}
wait_for() {  # port pid log: until /healthz answers, while the server lives
    local deadline=$(( $(date +%s) + 900 ))
    until "$REAL_CURL" -fsS -o /dev/null "http://127.0.0.1:$1/healthz" 2>/dev/null; do
        if ! kill -0 "$2" 2>/dev/null; then echo "docs: the server exited; its log: $3" >&2; return 1; fi
        if [ "$(date +%s)" -gt "$deadline" ]; then echo "docs: no /healthz on port $1 in 900 s" >&2; return 1; fi
        sleep 0.5
    done
}
docs_server() {  # port, and the block on stdin: run in the background (its own process group) until it answers
    local n log
    stop_servers  # a page's own server takes the port of the plain one
    n=$(wc -l <"$WORK/servers")
    cat >"$WORK/server-$n.sh"
    log=$WORK/logs/server-$(basename "$(cat "$WORK/at")" | tr ':' '-').log
    GYMSERVE_PORT=$P8000 setsid bash -e "$WORK/server-$n.sh" >"$log" 2>&1 </dev/null &
    echo $! >>"$WORK/servers"
    wait_for "$1" "$!" "$log"
}
docs_default_server() {  # the plain server of the README's first command, for a page without a server of its own
    if [ -s "$WORK/servers" ]; then return 0; fi
    echo "$(cat "$WORK/at" 2>/dev/null || true) (the plain server)" >"$WORK/at"
    echo ".venv/bin/gymserve serve" | docs_server "$P8000"
}
docs_page_end() {
    cd "$COPY"
    if [ "$STAGE" = compose ]; then
        local left
        left=$(compose_left)
        if [ -n "$left" ]; then
            echo "docs: $1 left containers, networks or volumes of its stack behind (its 'docker compose down -v' should have taken them):" >&2
            echo "$left" >&2
            compose_clean
            return 1
        fi
    else
        stop_servers  # the next page starts from the plain server again
    fi
}

if [ "$STAGE" = compose ]; then
    # The dev venv stands in for the README's .venv (the compose pages use .venv/bin/gymserve for keys).
    case $VENV in /*) ln -s "$VENV" "$COPY/.venv" ;; *) ln -s "$REPO/$VENV" "$COPY/.venv" ;; esac
    # No registry (the stand-ins of ../shared/infra): a plain `docker build .` finds the base image under its
    # official name, as it would on a machine with a registry. Untagged again at the end if tagged here.
    if [ -n "${PYTHON_IMAGE:-}" ] && ! docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
        docker tag "$PYTHON_IMAGE" python:3.11-slim-bookworm
        echo python:3.11-slim-bookworm >"$WORK/tagged"
    fi
    export COMPOSE_PROJECT_NAME=gymserve-docs-$$ GYMSERVE_ROUTER_PORT=$P8080 PROMETHEUS_PORT=$(free_port) \
        GRAFANA_PORT=$(free_port) GYMSERVE_DRAIN_SECONDS=2
    python3 scripts/docs_blocks.py script compose "${PORTS[@]}" >"$WORK/compose.sh"
    # shellcheck disable=SC1091
    source "$WORK/compose.sh"
    say "compose blocks done"
    exit 0
fi

python3 scripts/docs_blocks.py script local "${PORTS[@]}" >"$WORK/local.sh"
# shellcheck disable=SC1091
source "$WORK/local.sh"
say "local blocks done"

# --- the client from the built wheel, in a clean venv, with the server's packages blocked -----------------------
echo "the package: wheel and sdist" >"$WORK/at"
python3 -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install --quiet build
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$COPY" >"$WORK/logs/build.log" 2>&1
if grep -n -E "SetuptoolsDeprecationWarning|License classifiers are deprecated|project.license. as a TOML table" \
    "$WORK/logs/build.log"; then
    echo "docs: building the package warns (above): pyproject.toml needs fixing" >&2
    exit 1
fi
ls "$WORK"/dist/gymserve-*.whl "$WORK"/dist/gymserve-*.tar.gz >/dev/null
sdist=$(tar -tzf "$WORK"/dist/gymserve-*.tar.gz)
grep -q "service/gymserve/client/remote_env.py" <<<"$sdist"
say "built $(cd "$WORK/dist" && echo *)"

echo "the client from the wheel, in a clean venv" >"$WORK/at"
python3 -m venv "$WORK/client"
"$WORK/client/bin/pip" install --quiet "$WORK"/dist/gymserve-*.whl
echo ".venv/bin/gymserve serve" | docs_server "$P8000"
"$WORK/client/bin/python" - "http://127.0.0.1:$P8000" <<'PY'
import importlib.abc
import importlib.util
import sys

SERVER = ("flask", "gunicorn", "pygame", "prometheus_client", "werkzeug")
missing = [name for name in SERVER if importlib.util.find_spec(name) is None]
assert missing == list(SERVER), f"the client's install brought the server's packages: {set(SERVER) - set(missing)}"


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER:
            raise ImportError(f"the client imported {name}")
        return None


sys.meta_path.insert(0, Blocked())
from gymserve.client import RemoteEnv  # noqa: E402

with RemoteEnv(sys.argv[1], "CartPole-v1") as env:
    obs, info = env.reset(seed=42)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, info = env.reset()
print("docs: the client from the wheel stepped CartPole-v1 with flask, gunicorn and pygame blocked")
PY
stop_servers
say "done"
