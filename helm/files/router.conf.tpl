# gymserve's sticky router for Kubernetes (nginx; this ConfigMap is mounted at /etc/nginx/templates and
# rendered by the image's entrypoint into /etc/nginx/conf.d/default.conf; only NGINX_LOCAL_RESOLVERS
# is substituted there, everything else was filled in by Helm).
#
# It is deploy/router/default.conf.template (the compose router) with Kubernetes names: tests/helm
# checks that the two differ only in the resolver, the node pattern and the upstream names.
#
# An instance id names the pod that holds the env: <node>.<slot>-<generation>.<32 hex>, where <node> is
# the pod's name (GYMSERVE_NODE_ID), one of this release's StatefulSet pods "{{ include "gymserve.fullname" . }}-<ordinal>". So:
#   - a request for an id goes to http://<node>.{{ include "gymserve.podsService" . }}{{ include "gymserve.svcDomain" . }}:PORT only if the whole id
#     matches the strict pattern below, whose node part admits only those pod names; any other id is
#     answered here and never reaches an upstream;
#   - that headless Service publishes not-ready pods too, so a pod that drains (or is full) stays
#     reachable for the envs it holds;
#   - creates, lists and everything else go to the Service of the ready pods; new pods (scale-up,
#     autoscaling) are picked up within the DNS cache time, with no reload.
# A pod that is gone no longer resolves (or refuses the connection): its envs are lost with it, and the
# router says so in the app's own words (/v1: 400, /v2: 410, code instance_lost). A pod that comes back
# under the same name answers "lost" itself for the ids of its former life.

resolver {{ .Values.router.resolver | default "${NGINX_LOCAL_RESOLVERS}" }} valid=2s ipv6=off;  # the cluster DNS; short cache so restarts show up fast
resolver_timeout 3s;

# Log only failures: one line per step would cost more than the step (the replicas count requests).
map $status $gymserve_log_it {
    ~^[23]  0;
    default 1;
}

server {
    listen 8080 default_server;
    server_name _;
    server_tokens off;
    access_log /var/log/nginx/access.log main if=$gymserve_log_it;

    default_type application/json;
    # The replicas enforce GYMSERVE_MAX_BODY_BYTES with a JSON 413; this only bounds what nginx buffers.
    client_max_body_size 64m;
    # Agents keep one connection open between steps; an idle agent must not lose it quickly.
    keepalive_timeout 75s;
    keepalive_requests 100000;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Set only between the workers of one replica; a client's copy would stop their forwarding.
    proxy_set_header X-Gymserve-Forwarded "";
    proxy_connect_timeout 3s;
    # Longer than gunicorn's worker timeout (120 s), so a slow env call gets the replica's own answer.
    proxy_read_timeout 130s;
    proxy_send_timeout 130s;

    error_page 413 /_gymserve/too-large;
    error_page 502 503 504 /_gymserve/unavailable;

    # --- one env: to the replica that the id names, and nowhere else ---------------------------------
    location ~ "^/v(?<gs_api>[12])/envs/(?<gs_id>(?<gs_node>{{ include "gymserve.nodePattern" . }})\.[0-9]{1,3}-[0-9]{1,9}\.[0-9a-f]{32})(?:/|$)" {
        error_page 413 /_gymserve/too-large;
        # Not resolvable, refused, or this router itself: the replica is not running, its envs are lost.
        error_page 502 = /_gymserve/lost/v$gs_api/$gs_id;
        error_page 504 /_gymserve/timeout;
        if ($gs_node = $hostname) {
            return 502;
        }
        # Never resend: a step must not run twice.
        proxy_next_upstream off;
        proxy_pass http://$gs_node.{{ include "gymserve.podsService" . }}{{ include "gymserve.svcDomain" . }}:{{ .Values.config.port }};
    }

    # Anything else below /vN/envs/<something> is not one of our ids: answer here, reach no upstream.
    # (The id is echoed only when it is made of characters that are safe inside JSON.)
    location ~ "^/v1/envs/(?<gs_bad>[A-Za-z0-9._~-]{1,100})(?:/|$)" {
        add_header X-Gymserve-Router rejected always;
        return 400 '{"message": "Instance_id $gs_bad unknown", "code": "unknown_instance", "details": {"instance_id": "$gs_bad"}}\n';
    }
    location ~ "^/v1/envs/." {
        add_header X-Gymserve-Router rejected always;
        return 400 '{"message": "Instance_id unknown", "code": "unknown_instance", "details": {}}\n';
    }
    location ~ "^/v2/envs/(?<gs_bad>[A-Za-z0-9._~-]{1,100})(?:/|$)" {
        add_header X-Gymserve-Router rejected always;
        return 404 '{"message": "Instance_id $gs_bad unknown", "code": "unknown_instance", "details": {"instance_id": "$gs_bad"}}\n';
    }
    location ~ "^/v2/envs/." {
        add_header X-Gymserve-Router rejected always;
        return 404 '{"message": "Instance_id unknown", "code": "unknown_instance", "details": {}}\n';
    }

    # --- the router's own endpoints -------------------------------------------------------------------
    location = /router/healthz {
        return 200 '{"status": "ok"}\n';
    }
    # One replica's metrics behind a load balancer would mislead: Prometheus scrapes every replica.
    location = /metrics {
        return 404 '{"message": "Scrape each replica on port {{ .Values.config.port }}, not the router", "code": "not_found", "details": {}}\n';
    }

    # --- creates, lists, health, everything else: any running replica ---------------------------------
    location / {
        # A full or draining replica answers 503 without creating anything: try another one. A request
        # that failed in transit may be retried elsewhere; at worst that leaves an env for the TTL reaper.
        proxy_next_upstream error http_503 non_idempotent;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        set $gs_pool {{ include "gymserve.backendService" . }}{{ include "gymserve.svcDomain" . }};
        proxy_pass http://$gs_pool:{{ .Values.config.port }};
    }

    # --- answers made by the router ---------------------------------------------------------------------
    location ~ "^/_gymserve/lost/v1/(?<gs_lost>(?<gs_lost_node>{{ include "gymserve.nodePattern" . }})\.[0-9]{1,3}-[0-9]{1,9}\.[0-9a-f]{32})$" {
        internal;
        add_header X-Gymserve-Router lost always;
        return 400 '{"message": "Instance_id $gs_lost unknown: the env was lost with its worker (replica $gs_lost_node is not running); create a new env", "code": "instance_lost", "details": {"instance_id": "$gs_lost"}}\n';
    }
    location ~ "^/_gymserve/lost/v2/(?<gs_lost>(?<gs_lost_node>{{ include "gymserve.nodePattern" . }})\.[0-9]{1,3}-[0-9]{1,9}\.[0-9a-f]{32})$" {
        internal;
        add_header X-Gymserve-Router lost always;
        return 410 '{"message": "Instance_id $gs_lost unknown: the env was lost with its worker (replica $gs_lost_node is not running); create a new env", "code": "instance_lost", "details": {"instance_id": "$gs_lost"}}\n';
    }
    location = /_gymserve/timeout {
        internal;
        add_header X-Gymserve-Router timeout always;
        return 504 '{"message": "The replica that holds this env did not answer in time", "code": "owner_timeout", "details": {}}\n';
    }
    location = /_gymserve/unavailable {
        internal;
        add_header X-Gymserve-Router unavailable always;
        add_header Retry-After 5 always;
        return 503 '{"message": "No gymserve replica could take this request; retry later", "code": "unavailable", "details": {}}\n';
    }
    location = /_gymserve/too-large {
        internal;
        return 413 '{"message": "Request body too large", "code": "too_large", "details": {}}\n';
    }
}
