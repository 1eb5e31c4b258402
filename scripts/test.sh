#!/usr/bin/env bash
# Set up and run every check: Debian's prometheus (the metrics tests scrape with a real one) and chromium
# (the /ui test drives a headless one), a venv with the dev extras, ruff (lint + format), mypy, then pytest.
# Usage: bash scripts/test.sh [pytest args...]   (default: the unit and integration suites)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "scripts/test.sh: the metrics tests need prometheus and promtool: sudo apt-get install prometheus" >&2
        exit 1
    fi
fi
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "scripts/test.sh: the /ui test needs Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
VENV=${GYMSERVE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# families: MuJoCo, Box2D and ale-py wheels (the family trajectory tests); guess-env: the example env package.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev,families]' -e examples/guess-env
"$VENV/bin/ruff" check service tests scripts
"$VENV/bin/ruff" format --check service tests scripts
"$VENV/bin/mypy"
"$VENV/bin/pytest" "$@"
