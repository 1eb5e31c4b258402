#!/usr/bin/env bash
# Set up and run every check: Debian's prometheus (the metrics tests scrape with a real one), chromium
# (the /ui test drives a headless one) and redis-server (the tenants' farm-wide counts are tested against
# a real one), a venv with the dev extras, ruff (lint + format), mypy, then pytest.
# Usage: bash scripts/test.sh [pytest args...]   (default: the unit and integration suites)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="prometheus"
command -v redis-server >/dev/null || missing="$missing redis-server"
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
# The sb3 extra's tests (tests/integration/client/test_sb3.py) need PyTorch: a CPU build named first, because an
# unpinned torch can resolve to a CUDA build of several GB (GYMSERVE_TORCH sets the requirement; about 35 s
# with the wheel at hand). families: MuJoCo, Box2D and ale-py wheels (the family trajectory tests);
# guess-env: the example env package.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${GYMSERVE_TORCH:-torch==2.13.0}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev,families,sb3]' -e examples/guess-env
"$VENV/bin/ruff" check service tests scripts
"$VENV/bin/ruff" format --check service tests scripts
"$VENV/bin/mypy"
"$VENV/bin/pytest" "$@"
