#!/usr/bin/env bash
# Set up and run every check: Debian's prometheus (the metrics tests scrape with a real one), chromium
# (the /ui test drives a headless one) and redis-server (the tenants' farm-wide counts are tested against
# a real one) and haproxy (tests/helm runs the router config in it), a venv with the dev extras, ruff (lint + format), mypy, then pytest.
# Usage: bash scripts/test.sh [pytest args...]   (default: the unit and integration suites)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="prometheus"
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v haproxy >/dev/null || missing="$missing haproxy"
command -v chromium >/dev/null || missing="$missing chromium"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086  # one word per package
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "scripts/test.sh: the tests need:$missing (sudo apt-get install$missing)" >&2
        exit 1
    fi
fi
VENV=${GYMSERVE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# families: MuJoCo, Box2D and ale-py wheels (the family trajectory tests); guess-env: the example env package.
extras=dev,families
# The sb3 extra's tests (tests/integration/client/test_sb3.py) need PyTorch, and torch from PyPI is the CUDA build on
# Linux (5.5 GB with its nvidia packages). So they are opt-in on your machine: GYMSERVE_SB3=1 installs the extra
# (CI=true does too; GYMSERVE_SB3=0 opts out). GYMSERVE_TORCH_INDEX installs torch from that index first (e.g. the
# PyTorch CPU index, https://download.pytorch.org/whl/cpu); GYMSERVE_TORCH sets its requirement. CI's machines
# have the CPU wheel at hand (about 35 s).
if [ "${GYMSERVE_SB3:-}" = 1 ] || { [ "${CI:-}" = true ] && [ "${GYMSERVE_SB3:-}" != 0 ]; }; then
    torch_index=()
    if [ -n "${GYMSERVE_TORCH_INDEX:-}" ]; then torch_index=(--index-url "$GYMSERVE_TORCH_INDEX"); fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${torch_index[@]}" "${GYMSERVE_TORCH:-torch==2.13.0}"
    extras=$extras,sb3
else
    echo "scripts/test.sh: without Stable-Baselines3 (its tests are skipped): GYMSERVE_SB3=1 installs it, see the README"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]" -e examples/guess-env
"$VENV/bin/ruff" check service tests scripts
"$VENV/bin/ruff" format --check service tests scripts
"$VENV/bin/mypy"
"$VENV/bin/pytest" "$@"
