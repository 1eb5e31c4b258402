#!/usr/bin/env bash
# Set up and run every check: a venv with the dev extras, ruff (lint + format), mypy, then pytest.
# Usage: bash scripts/test.sh [pytest args...]   (default: the unit and integration suites)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GYMSERVE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
"$VENV/bin/ruff" check service tests
"$VENV/bin/ruff" format --check service tests
"$VENV/bin/mypy"
"$VENV/bin/pytest" "$@"
