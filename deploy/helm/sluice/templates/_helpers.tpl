{{/* The release's resource name: <release>-sluice, or <release> when it already says sluice. */}}
{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret the pods read their environment from ("" when there is none). */}}
{{- define "sluice.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if include "sluice.secretData" . -}}
{{- include "sluice.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* secrets.env without its empty values, as Secret data. */}}
{{- define "sluice.secretData" -}}
{{- range $name, $value := .Values.secrets.env }}
{{- if $value }}
{{ $name }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* config with the listen addresses taken from ports; fails when the
     termination grace period would cut sluice's own drain short. */}}
{{- define "sluice.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $server := get $config "server" | default dict -}}
{{- $_ := set $server "listen" (printf "0.0.0.0:%v" .Values.ports.http) -}}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%v" .Values.ports.admin) -}}
{{- $_ := set $config "server" $server -}}
{{- $grace := $server.grace_period_s | default 5 | int -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $grace -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.server.grace_period_s (%v)" .Values.terminationGracePeriodSeconds $grace) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
