{{/*
Names, labels and small derived values shared by the templates.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "gymserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object name. At most 52 characters: the StatefulSet's pods are named
"<fullname>-<ordinal>", their names are DNS labels and instance ids (63 at most), and the
controller-revision-hash label adds 11 more characters to the StatefulSet's name.
*/}}
{{- define "gymserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "gymserve.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gymserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select this release's pods: never the chart version, which changes on upgrade. */}}
{{- define "gymserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gymserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gymserve.labels" -}}
helm.sh/chart: {{ include "gymserve.chart" . }}
{{ include "gymserve.podLabels" . }}
{{- end -}}

{{/*
Labels of pod templates: without helm.sh/chart, so that a new chart version alone does not replace the
pods (a replaced gymserve pod loses its envs).
*/}}
{{- define "gymserve.podLabels" -}}
{{ include "gymserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gymserve
{{- end -}}

{{/* The gymserve pods (the StatefulSet). */}}
{{- define "gymserve.server.selectorLabels" -}}
{{ include "gymserve.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "gymserve.server.labels" -}}
{{ include "gymserve.labels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "gymserve.server.podLabels" -}}
{{ include "gymserve.podLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{/* The router pods (the Deployment). */}}
{{- define "gymserve.router.selectorLabels" -}}
{{ include "gymserve.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "gymserve.router.labels" -}}
{{ include "gymserve.labels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "gymserve.router.podLabels" -}}
{{ include "gymserve.podLabels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "gymserve.tests.labels" -}}
{{ include "gymserve.labels" . }}
app.kubernetes.io/component: test
{{- end -}}

{{/* Object names. */}}
{{- define "gymserve.router.fullname" -}}
{{- printf "%s-router" (include "gymserve.fullname" .) -}}
{{- end -}}

{{/* The headless Service that gives every gymserve pod its DNS name, ready or not. */}}
{{- define "gymserve.podsService" -}}
{{- printf "%s-pods" (include "gymserve.fullname" .) -}}
{{- end -}}

{{/* The Service of the ready gymserve pods, where the router sends creates and lists. */}}
{{- define "gymserve.backendService" -}}
{{- printf "%s-backend" (include "gymserve.fullname" .) -}}
{{- end -}}

{{- define "gymserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gymserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gymserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "gymserve.router.image" -}}
{{- printf "%s:%s" .Values.router.image.repository .Values.router.image.tag -}}
{{- end -}}

{{/*
The node part of the instance ids this release's pods mint: the StatefulSet's pod names. The router
proxies an id only when its node matches this, so it can reach no other host.
*/}}
{{- define "gymserve.nodePattern" -}}
{{- printf "%s-(?:0|[1-9][0-9]{0,3})" (include "gymserve.fullname" . | regexQuoteMeta) -}}
{{- end -}}

{{/* Cluster DNS suffix of this release's Services: ".<namespace>.svc.<cluster domain>". */}}
{{- define "gymserve.svcDomain" -}}
{{- printf ".%s.svc.%s" .Release.Namespace (trimSuffix "." .Values.router.clusterDomain) -}}
{{- end -}}

{{/*
What the kubelet waits after SIGTERM before SIGKILL: the preStop sleep, then the drain, then the
5 s gunicorn adds to the drain (graceful_timeout) and 5 s to exit.
*/}}
{{- define "gymserve.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (ceil .Values.config.drainSeconds | int) 10 -}}
{{- end -}}

{{/* A number as gymserve parses it: integers without an exponent or a ".0". */}}
{{- define "gymserve.number" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
The GYMSERVE_* variables of a gymserve container: one per key of .Values.config (maxEnvs ->
GYMSERVE_MAX_ENVS), empty strings left out so that gymserve's own default applies, and
GYMSERVE_NODE_ID from the pod's name. Called with a dict: root (the chart's context) and
optionally host (overrides config.host, for a test that serves on loopback) and open (no tenants, no
store: a test pod that serves on its own). The chart sets GYMSERVE_STORE_URL itself (the farm's park store,
gymserve.storeUrl) and, with tenants, GYMSERVE_TENANTS_FILE.
*/}}
{{- define "gymserve.env" -}}
{{- $root := .root -}}
{{- $tenants := and $root.Values.tenants.enabled (not $.open) -}}
- name: GYMSERVE_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if not $root.Values.config.peerNodePattern }}
# A batch steps items of every pod: the pod it reaches sends the others' items to them, by pod name (this
# release's only) through the headless Service, once.
- name: GYMSERVE_PEER_NODE_PATTERN
  value: {{ include "gymserve.nodePattern" $root | quote }}
- name: GYMSERVE_PEER_DOMAIN
  value: {{ printf ".%s%s" (include "gymserve.podsService" $root) (include "gymserve.svcDomain" $root) | quote }}
{{- end }}
{{- if not $root.Values.config.peersDns }}
# A list asks every pod that the headless Service resolves to.
- name: GYMSERVE_PEERS_DNS
  value: {{ printf "%s%s" (include "gymserve.podsService" $root) (include "gymserve.svcDomain" $root) | quote }}
{{- end }}
{{- if not $root.Values.config.allowedHosts }}
# The Host headers the pods answer to: the router passes the client's on; pods ask each other by address.
- name: GYMSERVE_ALLOWED_HOSTS
  value: {{ include "gymserve.allowedHosts" $root | quote }}
{{- end }}
{{- range $key, $value := $root.Values.config }}
{{- if eq $key "host" }}{{ $value = default $value $.host }}{{ end }}
{{- if eq $key "storeUrl" }}{{ $value = "" }}{{ end }}
{{- if and $tenants (eq $key "tenantsFile") }}{{ $value = "" }}{{ end }}
{{- if and $.open (eq $key "tenantsFile") }}{{ $value = "" }}{{ end }}
{{- if not (and (kindIs "string" $value) (eq $value "")) }}
- name: {{ printf "GYMSERVE_%s" (snakecase $key | upper) }}
  value: {{ include "gymserve.number" $value | quote }}
{{- end }}
{{- end }}
{{- if $tenants }}
- name: GYMSERVE_TENANTS_FILE
  value: /etc/gymserve/tenants/tenants.toml
{{- end }}
{{- if not $.open }}
{{- with include "gymserve.storeUrl" $root }}
# The farm's park store: a stopping pod parks its envs there, any pod adopts them under the same ids (and, with
# tenants, the farm-wide counts).
- name: GYMSERVE_STORE_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
GYMSERVE_ALLOWED_HOSTS when config.allowedHosts is empty: the names the router's clients use inside the cluster
(its Service, any name under the namespace's svc domain, which also covers the pods' own names of the direct path)
and through the Ingress or HTTPRoute, localhost (port-forward), and the private networks pods reach each other by.
*/}}
{{- define "gymserve.allowedHosts" -}}
{{- $name := include "gymserve.fullname" . -}}
{{- $hosts := list "localhost" "127.0.0.1" "[::1]" $name (printf "%s.%s" $name .Release.Namespace) (printf "%s.%s.svc" $name .Release.Namespace) (include "gymserve.svcDomain" .) -}}
{{- if .Values.ingress.enabled }}{{ range .Values.ingress.hosts }}{{ if .host }}{{ $hosts = append $hosts .host }}{{ end }}{{ end }}{{ end -}}
{{- if .Values.httpRoute.enabled }}{{ range .Values.httpRoute.hostnames }}{{ $hosts = append $hosts . }}{{ end }}{{ end -}}
{{- $hosts = concat $hosts (list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "fc00::/7") -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}

{{/*
The farm's store URL (GYMSERVE_STORE_URL): store.url, else config.storeUrl (the same, by its setting's name), else
the release's own store pod; empty only with store.enabled=false and no URL.
*/}}
{{- define "gymserve.storeUrl" -}}
{{- if .Values.store.url -}}
{{ .Values.store.url }}
{{- else if .Values.config.storeUrl -}}
{{ .Values.config.storeUrl }}
{{- else if .Values.store.enabled -}}
{{ printf "redis://%s-store%s:6379/0" (include "gymserve.fullname" .) (include "gymserve.svcDomain" .) }}
{{- end -}}
{{- end -}}

{{/* Whether the release runs its own store pod: with or without tenants, unless a URL names another store. */}}
{{- define "gymserve.ownStore" -}}
{{- if and .Values.store.enabled (not .Values.store.url) (not .Values.config.storeUrl) }}true{{ end -}}
{{- end -}}

{{/* The Secret and key that hold the farm's signing key (GYMSERVE_SNAPSHOT_KEY): the user's, or the chart's. */}}
{{- define "gymserve.snapshotKeyRef" -}}
name: {{ .Values.snapshots.existingSecret | default (printf "%s-snapshot-key" (include "gymserve.fullname" .)) }}
key: {{ .Values.snapshots.secretKey }}
{{- end -}}

{{/* The Secret and key that hold the store's password (GYMSERVE_STORE_PASSWORD): the user's, or the chart's. */}}
{{- define "gymserve.storePasswordRef" -}}
name: {{ .Values.store.existingSecret | default (printf "%s-store-password" (include "gymserve.fullname" .)) }}
key: {{ .Values.store.secretKey }}
{{- end -}}

{{/* Whether the pods are given a store password: the release's own store always has one; another store, if
store.existingSecret names it. */}}
{{- define "gymserve.storeHasPassword" -}}
{{- if or (include "gymserve.ownStore" .) .Values.store.existingSecret }}true{{ end -}}
{{- end -}}

{{/*
The one rule for the secrets the chart generates (the farm's signing key, the store's password; tenant keys too):
64 random characters made at install and kept at every upgrade, since lookup finds the Secret already there. A new
signing key would make every parked env fail its signature, a new password would lock the pods out of the store.
`helm template` and `--dry-run` have no cluster to look in and print a fresh value each time, so a GitOps tool that
renders with `helm template` must name the secret itself (the value's existingSecret; helm/README.md).
Called with (dict "root" . "name" <Secret name> "field" <its key>).
*/}}
{{- define "gymserve.generatedSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $value := randAlphaNum 64 | b64enc }}
{{- if and $existing $existing.data (hasKey $existing.data .field) }}
{{- $value = index $existing.data .field }}
{{- end }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  labels:
    {{- include "gymserve.labels" .root | nindent 4 }}
type: Opaque
data:
  {{ .field }}: {{ $value | quote }}
{{- end -}}

{{/* The Secret or ConfigMap that holds the tenants file. */}}
{{- define "gymserve.tenantsVolume" -}}
{{- if .Values.tenants.existingSecret -}}
secret:
  secretName: {{ .Values.tenants.existingSecret }}
  items:
    - key: tenants.toml
      path: tenants.toml
{{- else -}}
configMap:
  name: {{ include "gymserve.fullname" . }}-tenants
{{- end -}}
{{- end -}}

{{/* The Secret and key of a key `helm test` may use (the first generated one, or existingSecret's test-key). */}}
{{- define "gymserve.tests.keyRef" -}}
{{- if .Values.tenants.existingSecret -}}
name: {{ .Values.tenants.existingSecret }}
key: test-key
optional: true
{{- else -}}
name: {{ include "gymserve.fullname" . }}-tenant-keys
key: {{ first (keys .Values.tenants.list | sortAlpha) }}
{{- end -}}
{{- end -}}

{{/* The router's config, mounted where the official haproxy image reads it. */}}
{{- define "gymserve.router.volumes" -}}
- name: config
  configMap:
    name: {{ include "gymserve.router.fullname" . }}
{{- end -}}

{{- define "gymserve.router.volumeMounts" -}}
- name: config
  mountPath: /usr/local/etc/haproxy
  readOnly: true
{{- end -}}

{{/*
The router container's environment: the variables files/router.cfg leaves to it (docker-compose.yml sets the same
ones for compose); HAProxy reads them at start.
*/}}
{{- define "gymserve.router.env" -}}
{{- if .Values.router.resolver }}
- name: GYMSERVE_ROUTER_RESOLVER
  value: {{ .Values.router.resolver | quote }}
{{- end }}
# Every pod, ready or not, through the headless Service; HAProxy's health check (/readyz) picks the ready ones.
- name: GYMSERVE_ROUTER_REPLICAS
  value: {{ printf "%s%s" (include "gymserve.podsService" .) (include "gymserve.svcDomain" .) | quote }}
- name: GYMSERVE_ROUTER_MAX_REPLICAS
  value: {{ .Values.router.maxReplicas | quote }}
# Only this release's pod names, reached through the headless Service.
- name: GYMSERVE_ROUTER_NODE_PATTERN
  value: {{ include "gymserve.nodePattern" . | quote }}
- name: GYMSERVE_ROUTER_NODE_DOMAIN
  value: {{ printf ".%s%s" (include "gymserve.podsService" .) (include "gymserve.svcDomain" .) | quote }}
- name: GYMSERVE_PORT
  value: {{ include "gymserve.number" .Values.config.port | quote }}
- name: GYMSERVE_WORKER_PORT_BASE
  value: {{ include "gymserve.number" .Values.config.workerPortBase | quote }}
# The router refuses what the app would refuse (GYMSERVE_MAX_BODY_BYTES), in memory.
- name: GYMSERVE_MAX_BODY_BYTES
  value: {{ include "gymserve.number" .Values.config.maxBodyBytes | quote }}
- name: GYMSERVE_ROUTER_BUFFER_BYTES
  value: {{ add (int .Values.config.maxBodyBytes) 65536 | quote }}
- name: GYMSERVE_ROUTER_CONNECTIONS_PER_CLIENT
  value: {{ .Values.router.limits.connectionsPerClient | quote }}
- name: GYMSERVE_ROUTER_REQUESTS_PER_SECOND
  value: {{ .Values.router.limits.requestsPerSecond | quote }}
- name: GYMSERVE_ROUTER_REQUEST_BURST
  value: {{ .Values.router.limits.burst | quote }}
{{- end -}}

{{/* Base URLs of the gymserve pods the release starts with (by their DNS names), space-separated. */}}
{{- define "gymserve.tests.podUrls" -}}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled -}}
{{- $urls := list -}}
{{- range $i := until (int $replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s%s:%v" (include "gymserve.fullname" $) $i (include "gymserve.podsService" $) (include "gymserve.svcDomain" $) $.Values.config.port) -}}
{{- end -}}
{{- join " " $urls -}}
{{- end -}}

{{/*
The workers' own ports (config.workerPortBase + slot) as NetworkPolicy ports: every slot of a pod, its workers and
the 8 spare slots of workers added later (gymserve.settings.SPARE_WORKER_SLOTS).
*/}}
{{- define "gymserve.workerPorts" -}}
{{- $base := int .Values.config.workerPortBase -}}
{{- range until (add (int .Values.config.workers) 8 | int) }}
- port: {{ add $base . }}
  protocol: TCP
{{- end }}
{{- end -}}
