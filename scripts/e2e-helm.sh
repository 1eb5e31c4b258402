#!/usr/bin/env bash
# The Helm stage: helm 3 and 4, kubectl and a real Kubernetes (v1.20, built once per machine, ~11 min the first
# time) from ../shared/infra; the image built locally; then the static chart tests (tests/helm) and the chart on
# the live cluster (tests/e2e/test_helm.py). It prints what it measured (install time, time to a ready pod).
# Usage: bash scripts/e2e-helm.sh [pytest args...]
# Works from a fresh clone, as root, with CI=true and no stdin. Stops only what it started. Environment:
#   GYMSERVE_SHARED_DIR        where infra/ lives (default ../shared, relative to the repository)
#   GYMSERVE_VENV              the dev venv (default .venv; created with the dev extras if missing)
#   GYMSERVE_E2E_HELM_IMAGE    the image to build and deploy (default gymserve:ci)
#   STORE_IMAGE                the store's image (default valkey/valkey:8, else the stand-in local/valkey:bookworm)
#   HAPROXY_IMAGE              the router's image (default haproxy:2.8, else the stand-in local/haproxy:bookworm)
#   GYMSERVE_E2E_KEEP_ENGINE=1   leave the Docker engine running if this script started it
#   GYMSERVE_E2E_KEEP_CLUSTER=1  leave the Kubernetes cluster running if this script started it
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive
INFRA="${GYMSERVE_SHARED_DIR:-../shared}/infra"
VENV=${GYMSERVE_VENV:-.venv}
IMAGE=${GYMSERVE_E2E_HELM_IMAGE:-gymserve:ci}
started=$(date +%s)
stage() { echo "e2e-helm: $* ($(( $(date +%s) - started ))s)"; }
# shellcheck source=scripts/images.sh
. scripts/images.sh  # the working directory is the repository (above)

if [ ! -f "$INFRA/k8s-local.sh" ]; then
    echo "e2e-helm: no $INFRA/k8s-local.sh; set GYMSERVE_SHARED_DIR to the directory that holds infra/" >&2
    exit 2
fi

# Take down at the end only what was not already running: never take an engine or a cluster from its owner.
engine_was_up=0
cluster_was_up=0
if docker info >/dev/null 2>&1; then engine_was_up=1; fi
if bash "$INFRA/k8s-local.sh" status >/dev/null 2>&1; then cluster_was_up=1; fi
HELM_HOME_DIR=$(mktemp -d -t gymserve-e2e-helm-XXXXXX)
cleanup() {
    local rc=$?
    if [ "$cluster_was_up" = 0 ] && [ "${GYMSERVE_E2E_KEEP_CLUSTER:-0}" != 1 ]; then
        bash "$INFRA/k8s-local.sh" down </dev/null || true
    fi
    if [ "$engine_was_up" = 0 ] && [ "${GYMSERVE_E2E_KEEP_ENGINE:-0}" != 1 ]; then
        bash "$INFRA/docker-down.sh" </dev/null || true
    fi
    rm -rf "$HELM_HOME_DIR"
    stage "exit $rc"
}
trap cleanup EXIT

stage "engine, stand-in images, helm and kubectl, Debian's haproxy (tests/helm runs the router config in it)"
if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
bash "$INFRA/docker-up.sh" </dev/null
bash "$INFRA/helm-install.sh" </dev/null
standins="${DOCKER_STATE:-/tmp/docker-local}/standins.env"
build_args=()
if [ -f "$standins" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$standins"
    set +a
    build_args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
    echo "e2e-helm: stand-in images: PYTHON_IMAGE=$PYTHON_IMAGE"
else
    echo "e2e-helm: no $standins: the official images (python, haproxy:2.8, valkey:8) must be pullable"
fi
# The farm's store (the chart always runs one): the official image, else Debian's redis-server in a stand-in.
official_or_stand_in STORE_IMAGE valkey/valkey:8 local/valkey:bookworm deploy/store
# The router: the official HAProxy image, or Debian's haproxy in a stand-in (deploy/router/Dockerfile).
official_or_stand_in HAPROXY_IMAGE haproxy:2.8 local/haproxy:bookworm deploy/router

# Helm's caches and config in a scratch directory: nothing from (or for) anyone's own helm.
export HELM_CACHE_HOME=$HELM_HOME_DIR/cache HELM_CONFIG_HOME=$HELM_HOME_DIR/config HELM_DATA_HOME=$HELM_HOME_DIR/data

stage "Kubernetes binaries (cached after the first build) and the cluster"
bash "$INFRA/k8s-local.sh" build </dev/null
bash "$INFRA/k8s-local.sh" up </dev/null
export KUBECONFIG=${K8S_RUN:-/tmp/k8s-local}/kubeconfig

stage "image $IMAGE"
build_started=$(date +%s)
docker build --quiet "${build_args[@]}" --tag "$IMAGE" . >/dev/null
echo "e2e-helm: image built in $(( $(date +%s) - build_started ))s"

if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c "import kubernetes_validate, yaml, gymserve" 2>/dev/null; then
    stage "dev venv ($VENV)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]' </dev/null
fi

stage "tests/helm (static) and tests/e2e/test_helm.py (live cluster)"
GYMSERVE_E2E_HELM=1 GYMSERVE_E2E_HELM_IMAGE=$IMAGE "$VENV/bin/pytest" -p no:cacheprovider \
    tests/helm tests/e2e/test_helm.py "$@" </dev/null
stage "done"
