{{/*
Names, labels and the decider group's layout, shared by every template.

Object names are "<fullname>-decider…" and "<fullname>-edge…", where fullname is the
release name (not "<release>-<chart>"): decider pod names are node names in the Raft group
and end up in --initial-cluster lists that other regions' releases repeat, so they should
be short and predictable. 40 characters leave room for "-decider-headless" within a DNS
label (63) and for the StatefulSet's controller-revision-hash label.
*/}}

{{- define "ratchet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratchet.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratchet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "ratchet.labels" -}}
helm.sh/chart: {{ include "ratchet.chart" . }}
app.kubernetes.io/name: {{ include "ratchet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ratchet
{{- with .Values.region }}
ratchet.io/region: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "decider"). */}}
{{- define "ratchet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratchet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every pod of this release (deciders, edges, hook and test pods): allowed to decider gRPC. */}}
{{- define "ratchet.releasePodLabels" -}}
app.kubernetes.io/name: {{ include "ratchet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ratchet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{- define "ratchet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ratchet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A flat map as TOML, one `key = value` per line; null values are left out so that the
binary's default applies. Values go through toJson, whose strings, numbers, booleans and
arrays of them are also valid TOML. Nested tables are refused: neither config has any.
*/}}
{{- define "ratchet.toml" -}}
{{- range $key, $value := . }}
{{- if kindIs "map" $value }}
{{- fail (printf "%s: a table is not a valid value here" $key) }}
{{- end }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ $value | toJson }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------------ deciders */}}

{{- define "ratchet.decider.name" -}}
{{- printf "%s-decider" (include "ratchet.fullname" .) -}}
{{- end -}}

{{- define "ratchet.decider.headless" -}}
{{- printf "%s-decider-headless" (include "ratchet.fullname" .) -}}
{{- end -}}

{{/*
The host name other deciders reach one pod at: decider.podAddressTemplate for
(dict "root" $ "pod" NAME). NAME may be "$(POD_NAME)", which Kubernetes expands in the
container's args and env.
*/}}
{{- define "ratchet.decider.podHost" -}}
{{- $root := .root -}}
{{- tpl $root.Values.decider.podAddressTemplate (dict
      "pod" .pod
      "service" (include "ratchet.decider.headless" $root)
      "namespace" $root.Release.Namespace
      "clusterDomain" $root.Values.clusterDomain
      "region" $root.Values.region
      "release" $root.Release.Name
      "Template" $root.Template) -}}
{{- end -}}

{{- define "ratchet.decider.podAddress" -}}
{{- printf "%s:%d" (include "ratchet.decider.podHost" .) (int .root.Values.decider.ports.grpc) -}}
{{- end -}}

{{/*
The founding members as a JSON list of {name, address}: decider.initialCluster when given
(a group across releases), else this release's pods 0..foundingMembers-1 at their stable
DNS names.
*/}}
{{- define "ratchet.decider.foundingMembers" -}}
{{- $members := list -}}
{{- if .Values.decider.initialCluster -}}
{{- range .Values.decider.initialCluster -}}
{{- $members = append $members (dict "name" .name "address" .address) -}}
{{- end -}}
{{- else -}}
{{- range $ordinal := until (int $.Values.decider.foundingMembers) -}}
{{- $pod := printf "%s-%d" (include "ratchet.decider.name" $) $ordinal -}}
{{- $members = append $members (dict "name" $pod "address" (include "ratchet.decider.podAddress" (dict "root" $ "pod" $pod))) -}}
{{- end -}}
{{- end -}}
{{- toJson $members -}}
{{- end -}}

{{/* The value of --initial-cluster: NAME=ADDR,... */}}
{{- define "ratchet.decider.initialCluster" -}}
{{- $entries := list -}}
{{- range include "ratchet.decider.foundingMembers" . | fromJsonArray -}}
{{- $entries = append $entries (printf "%s=%s" .name .address) -}}
{{- end -}}
{{- join "," $entries -}}
{{- end -}}

{{/*
How many founding members are this release's own pods (ordinals 0..n-1), after checking
the list: names unique, this release's entries contiguous from ordinal 0 and within
replicas, and their addresses exactly what the pods advertise. A wrong list would make
the founders wait for each other forever, so it is refused at render time.
*/}}
{{- define "ratchet.decider.ownFounders" -}}
{{- if gt (int .Values.decider.foundingMembers) (int .Values.decider.replicas) -}}
{{- if not .Values.decider.initialCluster -}}
{{- fail (printf "decider.foundingMembers (%d) exceeds decider.replicas (%d)" (int .Values.decider.foundingMembers) (int .Values.decider.replicas)) -}}
{{- end -}}
{{- end -}}
{{- $sts := include "ratchet.decider.name" . -}}
{{- $members := include "ratchet.decider.foundingMembers" . | fromJsonArray -}}
{{- $seen := dict -}}
{{- $own := 0 -}}
{{- range $members -}}
{{- if or (not .name) (not .address) -}}
{{- fail (printf "decider.initialCluster: every entry needs a name and an address (got %v)" .) -}}
{{- end -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "decider.initialCluster: %s is listed twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- if regexMatch (printf "^%s-[0-9]+$" (regexQuoteMeta $sts)) .name -}}
{{- $ordinal := trimPrefix (printf "%s-" $sts) .name | atoi -}}
{{- if ge $ordinal (int $.Values.decider.replicas) -}}
{{- fail (printf "decider.initialCluster: %s is a founding member but decider.replicas is %d" .name (int $.Values.decider.replicas)) -}}
{{- end -}}
{{- $expected := include "ratchet.decider.podAddress" (dict "root" $ "pod" .name) -}}
{{- if ne .address $expected -}}
{{- fail (printf "decider.initialCluster: %s has address %s, but that pod advertises %s (decider.podAddressTemplate)" .name .address $expected) -}}
{{- end -}}
{{- $own = add1 $own -}}
{{- end -}}
{{- end -}}
{{- range $ordinal := until (int $own) -}}
{{- if not (hasKey $seen (printf "%s-%d" $sts $ordinal)) -}}
{{- fail (printf "decider.initialCluster: this release's founding members must be ordinals 0..%d, but %s-%d is missing" (sub $own 1) $sts $ordinal) -}}
{{- end -}}
{{- end -}}
{{- if eq (len $members) 0 -}}
{{- fail "decider: no founding members (decider.foundingMembers is 0 and decider.initialCluster is empty): nothing would ever found the group" -}}
{{- end -}}
{{- $own -}}
{{- end -}}

{{/* True when founding members live in other releases (a group across regions). */}}
{{- define "ratchet.decider.spansReleases" -}}
{{- $own := include "ratchet.decider.ownFounders" . | atoi -}}
{{- $all := include "ratchet.decider.foundingMembers" . | fromJsonArray | len -}}
{{- if ne $own $all }}true{{ end -}}
{{- end -}}

{{/*
The PodDisruptionBudget's maxUnavailable. Voters this chart knows of: the founders plus,
when joined pods are promoted, this release's pods beyond its founders. A group within
this release keeps a quorum with (voters-1)/2 down; one spread over releases gets 1 per
release, since no release's budget sees the others'.
*/}}
{{- define "ratchet.decider.maxUnavailable" -}}
{{- if not (kindIs "invalid" .Values.decider.pdb.maxUnavailable) -}}
{{- .Values.decider.pdb.maxUnavailable -}}
{{- else if include "ratchet.decider.spansReleases" . -}}
1
{{- else -}}
{{- $voters := include "ratchet.decider.foundingMembers" . | fromJsonArray | len -}}
{{- if .Values.decider.join.promote -}}
{{- $voters = add $voters (sub (int .Values.decider.replicas) (include "ratchet.decider.ownFounders" . | atoi)) -}}
{{- end -}}
{{- div (sub $voters 1) 2 -}}
{{- end -}}
{{- end -}}

{{/*
Where the join sidecar looks for the group: every founding member, then every pod of this
release (scale-up pods may already be members), as host:port,...; the script skips itself.
*/}}
{{- define "ratchet.decider.joinEndpoints" -}}
{{- $endpoints := list -}}
{{- range include "ratchet.decider.foundingMembers" . | fromJsonArray -}}
{{- $endpoints = append $endpoints .address -}}
{{- end -}}
{{- range $ordinal := until (int .Values.decider.replicas) -}}
{{- $pod := printf "%s-%d" (include "ratchet.decider.name" $) $ordinal -}}
{{- $endpoints = append $endpoints (include "ratchet.decider.podAddress" (dict "root" $ "pod" $pod)) -}}
{{- end -}}
{{- $endpoints | uniq | join "," -}}
{{- end -}}

{{/* The edges' --deciders: this release's headless Service, resolved to every pod. */}}
{{- define "ratchet.edge.deciders" -}}
{{- if .Values.edge.deciders -}}
{{- .Values.edge.deciders -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:%d" (include "ratchet.decider.headless" .) .Release.Namespace .Values.clusterDomain (int .Values.decider.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{/* The client Service's in-cluster address, for hook and test pods running ratchet ctl. */}}
{{- define "ratchet.decider.clientEndpoint" -}}
{{- printf "%s.%s.svc.%s:%d" (include "ratchet.decider.name" .) .Release.Namespace .Values.clusterDomain (int .Values.decider.ports.grpc) -}}
{{- end -}}

{{/* ------------------------------------------------------------------ edges */}}

{{- define "ratchet.edge.name" -}}
{{- printf "%s-edge" (include "ratchet.fullname" .) -}}
{{- end -}}

{{/*
The edge's readiness path: edge.readinessProbe.path when set; otherwise /readyz (ready to
enforce), or /healthz when the edge fails open (config.accept_without_verdict), so that a
decider outage does not take every edge out of the Service at once.
*/}}
{{- define "ratchet.edge.readinessPath" -}}
{{- if .Values.edge.readinessProbe.path -}}
{{- .Values.edge.readinessProbe.path -}}
{{- else if .Values.edge.config.accept_without_verdict -}}
/healthz
{{- else -}}
/readyz
{{- end -}}
{{- end -}}

{{/* The edge's grace period: longer than the preStop sleep and the drain together. */}}
{{- define "ratchet.edge.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.edge.preStopSleepSeconds) (int (default 30 .Values.edge.config.shutdown_grace_secs)) -}}
{{- if kindIs "invalid" .Values.edge.terminationGracePeriodSeconds -}}
{{- add $needed 15 -}}
{{- else if le (int .Values.edge.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "edge.terminationGracePeriodSeconds (%d) must exceed edge.preStopSleepSeconds + edge.config.shutdown_grace_secs (%d), or sessions are killed mid-drain" (int .Values.edge.terminationGracePeriodSeconds) $needed) -}}
{{- else -}}
{{- .Values.edge.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
Pod affinity for one component: (dict "root" $ "component" "decider" "values" .Values.decider).
Anti-affinity over nodes (soft or hard); an explicit affinity replaces it.
*/}}
{{- define "ratchet.affinity" -}}
{{- if .values.affinity -}}
{{- toYaml .values.affinity -}}
{{- else -}}
podAntiAffinity:
{{- if eq .values.podAntiAffinity "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "ratchet.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "ratchet.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
Zone spread for one component. Edges (a Deployment) spread each rollout's pods on their
own (matchLabelKeys pod-template-hash), so that old pods on their way out do not skew it.
*/}}
{{- define "ratchet.topologySpread" -}}
{{- if .values.topologySpread.enabled -}}
- maxSkew: {{ .values.topologySpread.maxSkew }}
  topologyKey: {{ .values.topologySpread.topologyKey }}
  whenUnsatisfiable: {{ .values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "ratchet.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  {{- if eq .component "edge" }}
  matchLabelKeys: [pod-template-hash]
  {{- end }}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------ transport security */}}

{{/*
Mutual TLS between Ratchet's processes (tls.*). Each component has its own certificate,
in a Secret with tls.crt, tls.key and ca.crt (what cert-manager writes), mounted whole at
/etc/ratchet/mtls so that a renewed certificate reaches the running process, which reloads
changed files. The role each one must carry:

  decider  peer    every decider pod: the decider, its join sidecar, its check-identity
  edge     edge    the edges' Decide and WatchConnectors calls
  policy   admin   the policy hook Job (ratchet ctl policy show, policy set)
  test     viewer  the helm test pod (ratchet ctl cluster status)
  backup   admin   the backup CronJob (ratchet ctl snapshot save)
*/}}

{{- define "ratchet.tls.roles" -}}
{{- dict "decider" "peer" "edge" "edge" "policy" "admin" "test" "viewer" "backup" "admin" | toJson -}}
{{- end -}}

{{- define "ratchet.tls.role" -}}
{{- get (include "ratchet.tls.roles" . | fromJson) .component | required (printf "no TLS role for component %s" .component) -}}
{{- end -}}

{{/* The Secret of one component: (dict "root" $ "component" "decider"). */}}
{{- define "ratchet.tls.secretName" -}}
{{- $name := get .root.Values.tls.secrets .component -}}
{{- default (printf "%s-%s-mtls" (include "ratchet.fullname" .root) .component) $name -}}
{{- end -}}

{{/* The SPIFFE ID of one component's certificate: spiffe://<trust domain>/<role>/<fullname>-<component>. */}}
{{- define "ratchet.tls.spiffeId" -}}
{{- printf "spiffe://%s/%s/%s-%s" .root.Values.tls.trustDomain (include "ratchet.tls.role" .) (include "ratchet.fullname" .root) .component -}}
{{- end -}}

{{- define "ratchet.tls.dir" -}}
/etc/ratchet/mtls
{{- end -}}

{{/*
The TLS flags of the decider and edge processes, as one line: the mounted certificate,
or --insecure when tls.enabled is false.

tls.enabled: false means PLAINTEXT AND NO AUTHENTICATION on every gRPC link: anyone who
reaches a decider's gRPC port may change the policy, tenants and the group's membership.
The binary refuses plaintext on anything but loopback unless told --insecure; the chart
says it for you only because tls.enabled: false asked for exactly that.
*/}}
{{- define "ratchet.tls.flags" -}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "ratchet.tls.dir" . -}}
--cert {{ $dir }}/tls.crt --key {{ $dir }}/tls.key --ca {{ $dir }}/ca.crt
{{- else -}}
--insecure
{{- end -}}
{{- end -}}

{{/* The same flags as YAML list items, for a container's args. */}}
{{- define "ratchet.tls.args" -}}
{{- $items := list -}}
{{- range splitList " " (include "ratchet.tls.flags" .) -}}
{{- $items = append $items (printf "- %s" (quote .)) -}}
{{- end -}}
{{- join "\n" $items -}}
{{- end -}}

{{/*
Environment of the containers that run `ratchet ctl` (the decider container, for kubectl
exec; join.sh, check-identity.sh, apply-policy.sh, backup.sh, the helm test): with tls.enabled the
certificate, which ratchet reads from RATCHET_CERT, RATCHET_KEY and RATCHET_CA; without,
CTL_INSECURE=true, which the scripts turn into `ratchet ctl --insecure`.
*/}}
{{- define "ratchet.tls.ctlEnv" -}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "ratchet.tls.dir" . -}}
- name: RATCHET_CERT
  value: {{ $dir }}/tls.crt
- name: RATCHET_KEY
  value: {{ $dir }}/tls.key
- name: RATCHET_CA
  value: {{ $dir }}/ca.crt
{{- else -}}
# !!! tls.enabled is false: ratchet ctl --insecure, plaintext and unauthenticated.
- name: CTL_INSECURE
  value: "true"
{{- end -}}
{{- end -}}

{{/* The volume mount of the component's certificate, when tls.enabled. */}}
{{- define "ratchet.tls.volumeMount" -}}
- name: mtls
  mountPath: {{ include "ratchet.tls.dir" . }}
  readOnly: true
{{- end -}}

{{/*
The volume of one component's certificate, when tls.enabled: (dict "root" $ "component"
"decider"). The whole Secret, no subPath: renewals reach the running process, which
reloads the files. A Secret without one of the three keys keeps the pod from starting,
with the key named in its events.
*/}}
{{- define "ratchet.tls.volume" -}}
- name: mtls
  secret:
    secretName: {{ include "ratchet.tls.secretName" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{/* The decider's probes: HTTPS when it has a certificate (the kubelet sends none and needs none). */}}
{{- define "ratchet.decider.probeScheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}
