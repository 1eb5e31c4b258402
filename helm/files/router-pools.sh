#!/bin/sh
# gymserve's router: one keep-alive connection pool per replica, kept in step with the replicas that run.
#
# Runs from the nginx image's /docker-entrypoint.d (docker compose and the chart both mount it there, next to
# router.conf.template): it writes the pools once before nginx starts, then checks every
# GYMSERVE_ROUTER_DISCOVERY_SECONDS (default 2) in the background and reloads nginx when they changed.
# Open-source nginx before 1.27.3 resolves an upstream's server names only at start, and a name that does not
# resolve stops it; so the pools hold addresses, and a reload (which keeps serving) picks up scaling.
#
# Replicas whose workers listen on ports of their own (GYMSERVE_WORKER_PORT_BASE; /healthz lists them) also get a
# pool per worker, which the ids of that worker's envs (<node>.<slot>-...) reach with no hop between workers.
#
# A pool is written only for an address that GYMSERVE_ROUTER_REPLICAS resolves to (the replicas, ready or not),
# whose /healthz names a node that matches GYMSERVE_ROUTER_NODE_PATTERN, and whose node name
# (+ GYMSERVE_ROUTER_NODE_DOMAIN) resolves to that same address: the router reaches through a pool exactly the
# replica it would reach by resolving the node's name, and nothing a client wrote.
set -eu

POOLS_DIR=${GYMSERVE_ROUTER_POOLS_DIR:-/etc/nginx/conf.d}
INTERVAL=${GYMSERVE_ROUTER_DISCOVERY_SECONDS:-2}
# Idle connections each nginx worker keeps per replica; closed before gunicorn's keepalive (75 s) would.
KEEPALIVE=${GYMSERVE_ROUTER_KEEPALIVE:-32}
# Optional (compose): a Prometheus file_sd list of the replicas by node name, so that their series carry the
# name that instance ids carry (Docker's DNS gives Prometheus only addresses). The chart's ServiceMonitor
# labels pods by name itself.
TARGETS_FILE=${GYMSERVE_ROUTER_TARGETS_FILE:-}

addresses() {
    getent ahostsv4 "$1" 2>/dev/null | awk '{ print $1 }' | sort -u
}

# "<node> <address> [<slot>:<port>,...]" for every replica that says who it is, one line each (its workers' own
# ports when it lists them: slots of 1-3 digits, ports of 1-5).
replicas() {
    for ip in $(addresses "$GYMSERVE_ROUTER_REPLICAS"); do
        health=$(curl -fsS --max-time 1 "http://$ip:$GYMSERVE_PORT/healthz" 2>/dev/null) || continue
        node=$(printf '%s\n' "$health" | sed -n 's/.*"node": *"\([a-z0-9-]*\)".*/\1/p')
        [ -n "$node" ] || continue
        printf '%s\n' "$node" | grep -qxP "$GYMSERVE_ROUTER_NODE_PATTERN" || continue
        addresses "$node$GYMSERVE_ROUTER_NODE_DOMAIN" | grep -qxF "$ip" || continue
        workers=$(printf '%s\n' "$health" | sed -n 's/.*"worker_ports": *{\([^}]*\)}.*/\1/p' | tr ',' '\n' |
            sed -n 's/^ *"\([0-9]\{1,3\}\)": *\([0-9]\{1,5\}\) *$/\1:\2/p' | paste -sd, -)
        echo "$node $ip $workers"
    done | sort -u -k1,1
}

# Writes the pools and the maps from names to them; exit status 0 when they changed.
render() {
    found=$(replicas)
    pools=$(printf '%s\n' "$found" | awk -v port="$GYMSERVE_PORT" -v keep="$KEEPALIVE" '
        function upstream(name, balance, servers) {
            printf "upstream %s {\n%s%s    keepalive %s;\n", name, balance, servers, keep
            printf "    keepalive_timeout 60s;\n    keepalive_requests 100000;\n}\n"
        }
        NF >= 2 {
            upstream("gymserve-node-" $1, "", "    server " $2 ":" port ";\n")
            n = split($3, workers, ",")
            for (i = 1; i <= n; i++) {
                split(workers[i], w, ":")
                upstream("gymserve-worker-" $1 "-" w[1], "", "    server " $2 ":" w[2] ";\n")
            }
            servers = servers "    server " $2 ":" port ";\n"
        }
        END {
            if (servers == "") exit
            upstream("gymserve-replicas", "", servers)
            # Creates with an Idempotency-Key: the key picks the replica, so a resend reaches the one that made
            # (and remembers) the env. A plain hash: "consistent" builds its ring from server names, and these
            # are addresses of one name. A change in the set of replicas can move a key (docs/lifecycle.md).
            upstream("gymserve-keyed", "    hash $http_idempotency_key;\n", servers)
            # Batches: a client enters one replica (the template hashes its addresses), whose threads and connections
            # to the other replicas stay warm from one of its batches to the next.
            upstream("gymserve-by-client", "    hash $gs_client;\n", servers)
            # Ids whose replica has no pool (or refuses): the id picks a replica, the same one every time, which
            # adopts the env or answers for it. "consistent" (ketama over the servers written here, one address
            # each): a replica that comes or goes moves only the ids it held or takes, not the others.
            upstream("gymserve-by-id", "    hash $gs_id consistent;\n", servers)
        }')
    nodes=$(printf '%s\n' "$found" | awk 'NF >= 2 { printf "%s gymserve-node-%s;\n", $1, $1 }')
    workers=$(printf '%s\n' "$found" | awk 'NF == 3 {
        n = split($3, workers, ",")
        for (i = 1; i <= n; i++) { split(workers[i], w, ":"); printf "%s.%s gymserve-worker-%s-%s;\n", $1, w[1], $1, w[1] }
    }')
    any=$(printf '%s\n' "$found" | awk 'NF >= 2 { print "\"\" gymserve-replicas;"; exit }')
    # (Command substitution drops trailing newlines, as it does when the files are read back below.)
    if [ -f "$POOLS_DIR/router.gymserve-any" ] &&
        [ "$pools" = "$(cat "$POOLS_DIR/router.gymserve-pools" 2>/dev/null)" ] &&
        [ "$nodes" = "$(cat "$POOLS_DIR/router.gymserve-nodes" 2>/dev/null)" ] &&
        [ "$workers" = "$(cat "$POOLS_DIR/router.gymserve-workers" 2>/dev/null)" ] &&
        [ "$any" = "$(cat "$POOLS_DIR/router.gymserve-any" 2>/dev/null)" ]; then
        return 1
    fi
    printf '%s\n' "$pools" >"$POOLS_DIR/router.gymserve-pools.new"
    printf '%s\n' "$nodes" >"$POOLS_DIR/router.gymserve-nodes.new"
    printf '%s\n' "$workers" >"$POOLS_DIR/router.gymserve-workers.new"
    printf '%s\n' "$any" >"$POOLS_DIR/router.gymserve-any.new"
    for kind in pools nodes workers any; do
        mv "$POOLS_DIR/router.gymserve-$kind.new" "$POOLS_DIR/router.gymserve-$kind"
    done
    if [ -n "$TARGETS_FILE" ]; then
        printf '%s\n' "$found" | awk -v port="$GYMSERVE_PORT" '
            BEGIN { printf "[{\"targets\": [" }
            NF >= 2 { printf "%s\"%s:%s\"", (n++ ? ", " : ""), $1, port }
            END { print "]}]" }' >"$TARGETS_FILE.new" &&
            mv "$TARGETS_FILE.new" "$TARGETS_FILE" ||
            echo "router-pools: could not write $TARGETS_FILE" >&2
    fi
    echo "router-pools: $(printf '%s\n' "$found" | grep -c . || true) replica(s): $(printf '%s' "$found" | tr '\n' ' ')"
}

loop() {
    while sleep "$INTERVAL"; do
        if render; then
            nginx -s reload 2>&1 || echo "router-pools: nginx reload failed; the old pools stay" >&2
        fi
    done
}

render || true
loop </dev/null &
