{{/* Names. */}}
{{- define "daytona-mcp.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "daytona-mcp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "daytona-mcp.postgresql" -}}
{{- printf "%s-postgresql" (include "daytona-mcp.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "daytona-mcp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: daytona-mcp
{{- end -}}

{{- define "daytona-mcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daytona-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "daytona-mcp.postgresqlSelectorLabels" -}}
app.kubernetes.io/name: {{ include "daytona-mcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end -}}

{{- define "daytona-mcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "daytona-mcp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "daytona-mcp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret and key holding each secret value the server reads. */}}
{{- define "daytona-mcp.secretName" -}}
{{- include "daytona-mcp.fullname" . -}}
{{- end -}}

{{- define "daytona-mcp.adminKeySecret" -}}
{{- default (include "daytona-mcp.secretName" .) .Values.adminKey.existingSecret -}}
{{- end -}}

{{- define "daytona-mcp.databaseSecret" -}}
{{- default (include "daytona-mcp.secretName" .) .Values.database.existingSecret -}}
{{- end -}}

{{- define "daytona-mcp.daytonaSecret" -}}
{{- default (include "daytona-mcp.secretName" .) .Values.daytona.existingSecret -}}
{{- end -}}

{{- define "daytona-mcp.postgresqlSecret" -}}
{{- default (include "daytona-mcp.postgresql" .) .Values.postgresql.existingSecret -}}
{{- end -}}

{{/*
A setting as an environment value, which the server reads as a TOML value (a text that is not
one is taken as a string). The YAML type decides the TOML type: numbers reach templates as
floats, so whole ones are printed as integers (60, not 6e+01); strings are quoted (JSON's
escapes are TOML's), so that "0.5" or "true" stays a string; lists are TOML arrays (JSON's form
of a list of strings and numbers is one); booleans are true/false.
*/}}
{{- define "daytona-mcp.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if or (kindIs "slice" .) (kindIs "string" .) -}}
{{- toJson . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
DAYTONA_MCP_<SECTION>__<KEY> variables for a (nested) map of settings. Called with a dict of
`prefix` (the name so far) and `settings`.
*/}}
{{- define "daytona-mcp.configEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .settings }}
{{- /* DAYTONA_MCP_ + SECTION, then __ + KEY at each level below. */}}
{{- $name := ternary (printf "%s_%s" $prefix (upper $key)) (printf "%s__%s" $prefix (upper $key)) (eq $prefix "DAYTONA_MCP") }}
{{- if kindIs "map" $value }}
{{- include "daytona-mcp.configEnv" (dict "prefix" $name "settings" $value) }}
{{- else }}
- name: {{ $name }}
  value: {{ include "daytona-mcp.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* What the chart refuses to render. */}}
{{- define "daytona-mcp.validate" -}}
{{- if not (has .Values.driver (list "daytona" "local")) -}}
{{- fail (printf "driver must be `daytona` or `local`, not `%s`" .Values.driver) -}}
{{- end -}}
{{- if not (or .Values.database.url .Values.database.existingSecret .Values.postgresql.enabled) -}}
{{- fail "set database.url, database.existingSecret or postgresql.enabled: the replicas share one PostgreSQL" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "postgresql.enabled and database.url/existingSecret are alternatives: set one" -}}
{{- end -}}
{{- if and (eq .Values.driver "daytona") (not (or .Values.daytona.apiUrl (index .Values.config "daytona" | default dict).api_url)) -}}
{{- fail "driver `daytona` needs daytona.apiUrl (the Daytona server's API URL)" -}}
{{- end -}}
{{- range $section, $settings := .Values.config }}
{{- if not (kindIs "map" $settings) -}}
{{- fail (printf "config.%s: settings go in their section (config.SECTION.KEY); top-level ones (data_dir, node_id) have no DAYTONA_MCP_ variable" $section) -}}
{{- end -}}
{{- end }}
{{- range $key := list "listen" "metrics_listen" }}
{{- if hasKey ($.Values.config.server | default dict) $key -}}
{{- fail (printf "config.server.%s is set by the chart (service.port, service.metricsPort)" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
