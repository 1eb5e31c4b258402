#!/usr/bin/env bash
# The OpenAPI document against the server that serves it: Schemathesis, every phase and every check, on a real
# two-worker gymserve on 127.0.0.1. Passes with 0 failures beyond tests/contract/baseline.json, where each accepted
# one says why (its "reason"). Knobs:
#   GYMSERVE_VENV              the dev venv that runs the server (default .venv)
#   GYMSERVE_CONTRACT_VENV     Schemathesis' own venv (default .venv-contract; made if missing)
#   GYMSERVE_CONTRACT_EXAMPLES examples per operation and phase (default 50)
# Arguments go to `schemathesis run` (--baseline-update records this run's failures: give each a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GYMSERVE_VENV:-.venv}
CONTRACT_VENV=${GYMSERVE_CONTRACT_VENV:-.venv-contract}
EXAMPLES=${GYMSERVE_CONTRACT_EXAMPLES:-50}
SCHEMATHESIS=schemathesis==4.32.5  # pinned: its checks and generation change between releases

if [ ! -x "$CONTRACT_VENV/bin/schemathesis" ]; then
    python3 -m venv "$CONTRACT_VENV"
    "$CONTRACT_VENV/bin/pip" install --quiet "$SCHEMATHESIS" msgpack </dev/null
fi

work=$(mktemp -d)
port=$("$VENV/bin/python" -c 'import sys; sys.path.insert(0, "tests"); from servers import free_port; print(free_port())')
GYMSERVE_HOST=127.0.0.1 GYMSERVE_PORT=$port GYMSERVE_WORKERS=2 GYMSERVE_STATE_DIR="$work/state" \
    GYMSERVE_SNAPSHOT_KEY=contract-test-key-not-a-secret-0123456789 \
    "$VENV/bin/gymserve" serve >"$work/server.log" 2>&1 &
server=$!
stop() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done

status=0
PYTHONPATH=tests/contract SCHEMATHESIS_HOOKS=hooks "$CONTRACT_VENV/bin/schemathesis" run \
    "http://127.0.0.1:$port/v2/openapi.json" --checks all --max-examples "$EXAMPLES" --seed 1 --workers 2 \
    --baseline tests/contract/baseline.json --no-color "$@" </dev/null || status=$?
if [ "$status" != 0 ]; then
    echo "test-contract: failures beyond tests/contract/baseline.json; the server's log:" >&2
    tail -50 "$work/server.log" >&2
fi
exit "$status"
