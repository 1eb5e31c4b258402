#!/usr/bin/env bash
# Speed rows of the compose farm (a benchmark that prints numbers, not a test): 16 keep-alive clients stepping
# CartPole over /v1, then 16 step streams, through the router (with the router's CPU per step) and to the same
# replica directly. One replica with one worker, and the
# router, share CPU 0; the load generator runs in a container of its own on CPU 1 (docs/performance.md).
# Usage: bash scripts/e2e-bench.sh   (needs a Docker engine with compose v2; stand-in images as for the e2e stage)
# Environment: BENCH_SECONDS (10), BENCH_CLIENTS (16), GYMSERVE_SHARED_DIR (../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-16}
standins="${DOCKER_STATE:-/tmp/docker-local}/standins.env"
if [ -f "$standins" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$standins"
    set +a
fi
project="gymserve-bench-$$"
export GYMSERVE_IMAGE="gymserve-bench:$project" GYMSERVE_REPLICAS=1 GYMSERVE_WORKERS=1 GYMSERVE_DRAIN_SECONDS=1
export GYMSERVE_ROUTER_PORT=${BENCH_ROUTER_PORT:-18411} PROMETHEUS_PORT=${BENCH_PROMETHEUS_PORT:-18412}
compose() { docker compose --project-name "$project" "$@"; }
up() { # compose up, quiet unless it fails
    local out
    out=$(compose up --detach --wait --wait-timeout 180 "$@" 2>&1) || { echo "$out" >&2; return 1; }
}
relay_cfg=$(mktemp)
cleanup() {
    docker rm --force "$project-relay" >/dev/null 2>&1 || true
    rm -f "$relay_cfg"
    compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    docker image rm "$GYMSERVE_IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

up gymserve router
replica=$(compose ps --quiet gymserve)
router=$(compose ps --quiet router)
address() { # container -> its address on the farm's network (a Host the replica answers to: GYMSERVE_ALLOWED_HOSTS)
    docker inspect --format "{{(index .NetworkSettings.Networks \"${project}_farm\").IPAddress}}" "$1"
}
node=$(address "$replica")
docker update --cpuset-cpus 0 "$replica" "$router" >/dev/null
sleep 3 # the router's DNS and health checks (every second) find the replica; let it settle

bench() { # url -> one JSON report
    docker run --rm --network "${project}_farm" --cpuset-cpus 1 --entrypoint gymserve "$GYMSERVE_IMAGE" \
        bench --url "$1" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --api v1 --json
}
stream() { # url -> one JSON report: the step stream, /v2 msgpack, one WebSocket per client in lockstep
    docker run --rm --network "${project}_farm" --cpuset-cpus 1 --entrypoint gymserve "$GYMSERVE_IMAGE" \
        bench --url "$1" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --stream --json
}
container_cpu() { # container -> CPU seconds of all its processes so far (utime + stime, from the host's /proc)
    docker top "$1" -eo pid | tail -n +2 | python3 -c 'import os, sys
total = 0
for pid in sys.stdin.read().split():
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue  # exited meanwhile
    total += int(fields[11]) + int(fields[12])
print(total / os.sysconf("SC_CLK_TCK"))'
}
routed() { # runner, url[, proxy container] -> its JSON report, with the proxy's CPU over the run ("proxy_cpu_s")
    local before report proxy=${3:-$router}
    before=$(container_cpu "$proxy")
    report=$("$1" "$2")
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])
r["proxy_cpu_s"] = float(sys.argv[3]) - float(sys.argv[2])
print(json.dumps(r))' "$report" "$before" "$(container_cpu "$proxy")"
}
report() { # name, JSON report
    python3 -c 'import json, sys
r = json.loads(sys.argv[2])
rate, errors, hops = r["steps_per_s"], sum(r["errors"].values()), r["forwarded_share"]
line = "%-30s %9.0f steps/s  errors %d  forwarded %.2f" % (sys.argv[1], rate, errors, hops)
if "proxy_cpu_s" in r:
    line += "  %s CPU %.0f us/step" % (sys.argv[3], r["proxy_cpu_s"] / max(r["steps"], 1) * 1e6)
print(line)' "$1" "$2" "${3:-router}"
}
ROUNDS=${BENCH_ROUNDS:-3}
ratio() { # baseline JSON report, other JSON report -> other / baseline steps/s
    python3 -c 'import json, sys
d, r = (json.loads(a)["steps_per_s"] for a in sys.argv[1:])
print(f"{r / d:.2f}")' "$1" "$2"
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
rounds() { # runner, baseline URL, its name, other URL, its name, what the ratio is -> each run, then the ratios
    local ratios=() round base other
    for round in $(seq "$ROUNDS"); do
        base=$("$1" "$2")
        other=$(routed "$1" "$4")
        report "round $round: $3" "$base"
        report "round $round: $5" "$other"
        ratios+=("$(ratio "$base" "$other")")
    done
    echo "$6 by round: ${ratios[*]} (median $(median "${ratios[@]}"))"
}
echo "compose farm: 1 replica x 1 worker + router on CPU 0, $CLIENTS keep-alive clients on CPU 1," \
    "${SECONDS_EACH} s each, $ROUNDS rounds alternating (the machine may be shared: compare within a round)"
rounds bench "http://$node:8000" "replica directly" "http://router:8080" "through router" "router / direct"
# The step stream (issue 23): the router proxies each upgrade to the env's worker, then only relays frames.
rounds stream "http://$node:8000" "stream, replica directly" "http://router:8080" "stream, through router" \
    "stream: router / direct"
# The floor under the router's CPU per streamed step: HAProxy itself as a bare TCP relay (no HTTP, no rules) to the
# same worker's own port, from the router's image on the same CPU. What the relay spends is the kernel's and
# HAProxy's cost of passing a step's two messages through a container; the router's excess over it is its own.
cat > "$relay_cfg" <<EOF
global
    log stdout format raw local0
defaults
    mode tcp
    timeout connect 3s
    timeout client 130s
    timeout server 130s
frontend relay
    bind :8080
    default_backend worker
backend worker
    server worker $node:${GYMSERVE_WORKER_PORT_BASE:-8100}
EOF
chmod 644 "$relay_cfg"
relay=$(docker run --detach --name "$project-relay" --network "${project}_farm" --cpuset-cpus 0 --user 99:99 \
    --volume "$relay_cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" "$(docker inspect --format '{{.Config.Image}}' "$router")" \
    haproxy -db -f /usr/local/etc/haproxy/haproxy.cfg)
relay_address=$(address "$relay")
sleep 1
for round in $(seq "$ROUNDS"); do
    report "round $round: stream, through router" "$(routed stream "http://router:8080")"
    report "round $round: stream, bare TCP relay" "$(routed stream "http://$relay_address:8080" "$relay")" relay
done
docker rm --force "$relay" >/dev/null

# Batches across replicas: 2 replicas (all CPUs), one client stepping a batch of 64 CartPole envs over /v2: through
# the router (its envs spread over both replicas, each batch split by the replica it reaches) against the same
# batch sent to one replica directly (all 64 envs there). Twice: with one worker per replica (as above: the
# split crosses replicas only) and with the default two (on 2 cores, 4 workers, and siblings' hops as well).
echo "compose farm: 2 replicas, one client, a batch of 64 CartPole envs per request, ${SECONDS_EACH} s each"
export GYMSERVE_REPLICAS=2
batch() { # url -> one JSON report
    docker run --rm --network "${project}_farm" --entrypoint gymserve "$GYMSERVE_IMAGE" bench --url "$1" \
        --clients 1 --seconds "$SECONDS_EACH" --api v2 --mode batch --batch-size 64 --json
}
for workers in 1 2; do
    export GYMSERVE_WORKERS=$workers
    up --force-recreate gymserve router
    docker update --cpuset-cpus "0-$(($(nproc) - 1))" $(compose ps --quiet gymserve router) >/dev/null
    router=$(compose ps --quiet router)
    sleep 3
    one=$(address "$(compose ps --quiet gymserve | head -1)")
    rounds batch "http://$one:8000" "$workers worker(s), one replica, all 64" "http://router:8080" \
        "$workers worker(s), router, both replicas" "$workers worker(s) per replica, both replicas / one"
done

# BENCH_PPO=1: SB3 PPO on 8 CartPole envs (60,000 steps by default, BENCH_PPO_STEPS), local envs against the farm
# (2 replicas with their default workers, all CPUs) through the router with RemoteVecEnv; needs the venv's sb3 extra.
if [ "${BENCH_PPO:-0}" = 1 ]; then
    "${GYMSERVE_VENV:-.venv}/bin/python" tests/perf/bench_sb3_ppo.py --url "http://127.0.0.1:$GYMSERVE_ROUTER_PORT" \
        --steps "${BENCH_PPO_STEPS:-60000}"
fi
