#!/usr/bin/env bash
# The compose end-to-end stage: a Docker engine and compose from ../shared/infra (stand-in base images
# when there is no registry), static compose checks, then tests/e2e against a real stack.
# Usage: bash scripts/e2e-compose.sh [pytest args...]
# Works from a fresh clone, as root, with CI=true and no stdin. Environment:
#   GYMSERVE_SHARED_DIR   where infra/ lives (default ../shared, relative to the repository)
#   GYMSERVE_VENV         the dev venv (default .venv; created with the dev extras if missing)
#   GYMSERVE_E2E_KEEP_ENGINE=1  leave the Docker engine running if this script started it
#   GYMSERVE_E2E_ROUTER_PORT, GYMSERVE_E2E_PROMETHEUS_PORT, GYMSERVE_E2E_IMAGE  see tests/e2e/conftest.py
#   STORE_IMAGE, HAPROXY_IMAGE  the store's and the router's images (default: the official ones, else the stand-ins)
#   GYMSERVE_E2E_DOCS=0         skip the docs' compose commands (scripts/test-docs.sh compose), run after the tests
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
INFRA="${GYMSERVE_SHARED_DIR:-../shared}/infra"
VENV=${GYMSERVE_VENV:-.venv}
started=$(date +%s)
stage() { echo "e2e-compose: $* ($(( $(date +%s) - started ))s)"; }
# shellcheck source=scripts/images.sh
. scripts/images.sh  # the working directory is the repository (above)

if [ ! -f "$INFRA/docker-up.sh" ]; then
    echo "e2e-compose: no $INFRA/docker-up.sh; set GYMSERVE_SHARED_DIR to the directory that holds infra/" >&2
    exit 2
fi

# Stop the engine at the end only if it was not already running: never take one away from its owner.
engine_was_up=0
if docker info >/dev/null 2>&1; then engine_was_up=1; fi
cleanup() {
    if [ "$engine_was_up" = 0 ] && [ "${GYMSERVE_E2E_KEEP_ENGINE:-0}" != 1 ]; then
        bash "$INFRA/docker-down.sh" || true
    fi
}
trap cleanup EXIT

stage "engine, stand-in images and compose"
bash "$INFRA/docker-up.sh" </dev/null
bash "$INFRA/compose-install.sh" </dev/null
standins="${DOCKER_STATE:-/tmp/docker-local}/standins.env"
if [ -f "$standins" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$standins"
    set +a
    echo "e2e-compose: stand-in images: PYTHON_IMAGE=$PYTHON_IMAGE PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
else
    echo "e2e-compose: no $standins: using the official images from the registry"
fi

# The farm's park store (every stack has one; with tenants it also counts quotas): the official image, or Debian's
# redis-server in a stand-in.
official_or_stand_in STORE_IMAGE valkey/valkey:8 local/valkey:bookworm deploy/store

# The router: the official HAProxy image, or Debian's haproxy in a stand-in (deploy/router/Dockerfile).
official_or_stand_in HAPROXY_IMAGE haproxy:2.8 local/haproxy:bookworm deploy/router

stage "static checks"
docker compose config --quiet
docker compose --profile grafana config --quiet
GYMSERVE_IMAGE=gymserve-derived docker compose -f docker-compose.yml -f docker-compose.image.yml config --quiet
GYMSERVE_TENANTS_DIR=./tests/e2e docker compose -f docker-compose.yml -f deploy/compose/tenants.yml config --quiet

if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c "import docker, gymserve" 2>/dev/null; then
    stage "dev venv ($VENV)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]' </dev/null
fi

stage "tests/e2e"
# -o markers: the e2e marker, also where pyproject does not register it (--strict-markers).
GYMSERVE_E2E=1 "$VENV/bin/pytest" -p no:cacheprovider -o "markers=e2e: docker compose end-to-end tests" \
    tests/e2e/test_compose.py tests/e2e/test_compose_derived.py tests/e2e/test_compose_moves.py \
    tests/e2e/test_compose_tenants.py "$@" </dev/null

if [ "${GYMSERVE_E2E_DOCS:-1}" != 0 ]; then
    stage "the docs' compose commands, as written (scripts/test-docs.sh compose)"
    GYMSERVE_VENV=$VENV bash scripts/test-docs.sh compose </dev/null
fi
stage "done"
