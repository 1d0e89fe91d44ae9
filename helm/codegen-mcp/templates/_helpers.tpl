{{/* Names ------------------------------------------------------------------------------------------ */}}

{{- define "codegen-mcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "codegen-mcp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "codegen-mcp.operatorName" -}}
{{- printf "%s-operator" (include "codegen-mcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "codegen-mcp.coordinatorName" -}}
{{- printf "%s-coordinator" (include "codegen-mcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Redis the chart runs itself: eventStore.type redis with neither redisUrl nor redisUrlSecret. */}}
{{- define "codegen-mcp.redisName" -}}
{{- printf "%s-redis" (include "codegen-mcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "codegen-mcp.bundledRedis" -}}
{{- $es := .Values.coordinator.eventStore -}}
{{- if and (eq $es.type "redis") (not $es.redisUrl) (not $es.redisUrlSecret.name) -}}true{{- end -}}
{{- end }}

{{/* The Service clients connect to: the release's own name, e.g. `codegen-mcp`. */}}
{{- define "codegen-mcp.serviceName" -}}
{{- include "codegen-mcp.fullname" . }}
{{- end }}

{{- define "codegen-mcp.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "codegen-mcp.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "codegen-mcp.coordinatorServiceAccount" -}}
{{- if .Values.coordinator.serviceAccount.create }}
{{- default (include "codegen-mcp.coordinatorName" .) .Values.coordinator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.coordinator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of sandbox Pods (its token is never mounted); empty: the namespace's default. */}}
{{- define "codegen-mcp.sandboxServiceAccount" -}}
{{- if .Values.sessions.serviceAccount.name }}
{{- .Values.sessions.serviceAccount.name }}
{{- else if and .Values.sessions.serviceAccount.create (not .Values.operator.clusterWide) }}
{{- printf "%s-sandbox" (include "codegen-mcp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "codegen-mcp.authSecretName" -}}
{{- default (printf "%s-auth" (include "codegen-mcp.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Namespaces --------------------------------------------------------------------------------------- */}}

{{- define "codegen-mcp.sessionsNamespace" -}}
{{- default .Release.Namespace .Values.sessions.namespace }}
{{- end }}

{{/* The namespaces the operator reconciles, comma-separated: the sessions namespace first, then the extra ones. */}}
{{- define "codegen-mcp.watchedNamespaces" -}}
{{- $all := list (include "codegen-mcp.sessionsNamespace" .) }}
{{- range .Values.operator.watchNamespaces }}
{{- $all = append $all . }}
{{- end }}
{{- $all | uniq | join "," }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------------------- */}}

{{- define "codegen-mcp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "codegen-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codegen-mcp
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "codegen-mcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codegen-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Coordinator Pods carry these; each sandbox's NetworkPolicy admits exactly these Pods. */}}
{{- define "codegen-mcp.coordinatorSelectorLabels" -}}
{{ include "codegen-mcp.selectorLabels" . }}
app.kubernetes.io/component: coordinator
{{- end }}

{{- define "codegen-mcp.operatorSelectorLabels" -}}
{{ include "codegen-mcp.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The same labels as `k=v,k2=v2`, the operator's CODEGEN_OPERATOR_COORDINATOR_POD_LABELS format. */}}
{{- define "codegen-mcp.coordinatorPodLabelsEnv" -}}
{{- include "codegen-mcp.mapEnv" (include "codegen-mcp.coordinatorSelectorLabels" . | fromYaml) }}
{{- end }}

{{/* Images ------------------------------------------------------------------------------------------- */}}

{{- define "codegen-mcp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "codegen-mcp.sandboxImage" -}}
{{- printf "%s:%s" .Values.sessions.image.repository (default .Chart.AppVersion .Values.sessions.image.tag) }}
{{- end }}

{{/* Host header values the coordinator accepts: every name of its Service, each also with any port. */}}
{{- define "codegen-mcp.allowedHosts" -}}
{{- $svc := include "codegen-mcp.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
{{- if .host }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $hosts }}
{{- $out = append $out . }}
{{- $out = append $out (printf "%s:*" .) }}
{{- end }}
{{- range .Values.coordinator.allowedHosts }}
{{- $out = append $out . }}
{{- end }}
{{- $out | uniq | join "," }}
{{- end }}

{{/* A map as `k=v,k2=v2` (the operator's map format), keys sorted. */}}
{{- define "codegen-mcp.mapEnv" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- $pairs | sortAlpha | join "," }}
{{- end }}

{{/* A list of integers as `1,2` (values are float64 to templates: never let 1e+06 through). */}}
{{- define "codegen-mcp.intList" -}}
{{- $out := list }}
{{- range . }}
{{- $out = append $out (int64 . | toString) }}
{{- end }}
{{- $out | join "," }}
{{- end }}

{{/* The sandbox-shaping part of the session spec the coordinator writes (see its CODEGEN_K8S_* env): a pool's
template starts from it, so the coordinator's sessions match the pool's sandboxes (the operator compares image,
pull policy, runtime class, resources, network, env, packages and workspace size/class). */}}
{{- define "codegen-mcp.sessionTemplate" -}}
{{- $s := .Values.sessions }}
{{- $t := dict "image" (include "codegen-mcp.sandboxImage" .) "imagePullPolicy" $s.image.pullPolicy }}
{{- with $s.runtimeClassName }}{{- $_ := set $t "runtimeClassName" . }}{{- end }}
{{- $resources := dict }}
{{- range $part, $values := dict "requests" ($s.resources.requests | default dict) "limits" ($s.resources.limits | default dict) }}
{{- $picked := dict }}
{{- range $key := list "cpu" "memory" }}
{{- if hasKey $values $key }}{{- $_ := set $picked $key (index $values $key | toString) }}{{- end }}
{{- end }}
{{- if $picked }}{{- $_ := set $resources $part $picked }}{{- end }}
{{- end }}
{{- if $resources }}{{- $_ := set $t "resources" $resources }}{{- end }}
{{- $workspace := dict "size" ($s.workspace.size | toString) }}
{{- with $s.workspace.storageClassName }}{{- $_ := set $workspace "storageClassName" . }}{{- end }}
{{- $_ := set $t "workspace" $workspace }}
{{- $_ := set $t "network" (dict "egress" $s.network.egress) }}
{{- with $s.packages }}{{- $_ := set $t "packages" . }}{{- end }}
{{- toYaml $t }}
{{- end }}

{{/*
Log format and traces of the coordinator and the operator (README: Logs and traces).
*/}}
{{- define "codegen-mcp.telemetryEnv" -}}
- name: CODEGEN_LOG_FORMAT
  value: {{ .Values.logs.format | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
