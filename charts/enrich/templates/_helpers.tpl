{{/* Names and labels, as `helm create` makes them. */}}
{{- define "enrich.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "enrich.fullname" -}}
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

{{- define "enrich.headlessName" -}}
{{- printf "%s-headless" (include "enrich.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "enrich.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enrich.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "enrich.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "enrich.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "enrich.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "enrich.bundlePath" -}}
{{- printf "%s/bundle" (trimSuffix "/" .Values.model.mountPath) }}
{{- end }}

{{/* Probes speak plain-text gRPC: the serving port, or the health port when the serving port has TLS. */}}
{{- define "enrich.probePort" -}}
{{- if .Values.tls.enabled }}{{ .Values.server.healthPort }}{{ else }}{{ .Values.server.port }}{{ end }}
{{- end }}

{{/* preStop pause + the server's drain grace + a margin; an explicit value must stay above the first two. */}}
{{- define "enrich.terminationGracePeriodSeconds" -}}
{{- $needed := add .Values.shutdown.preStopSeconds (ceil .Values.server.graceSeconds) }}
{{- if .Values.shutdown.terminationGracePeriodSeconds }}
{{- if le (int .Values.shutdown.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must exceed shutdown.preStopSeconds + server.graceSeconds (%v), or accepted requests are killed mid-drain" .Values.shutdown.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- .Values.shutdown.terminationGracePeriodSeconds }}
{{- else }}
{{- add $needed .Values.shutdown.marginSeconds }}
{{- end }}
{{- end }}
