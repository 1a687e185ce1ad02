{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "assistant.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the RayService, and so KubeRay's <name>-serve-svc, use it. */}}
{{- define "assistant.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "assistant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "assistant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "assistant.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "assistant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret every pod reads: an existing one, or the one the ExternalSecret creates. Never values. */}}
{{- define "assistant.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.externalSecret.enabled -}}
{{- printf "%s-secrets" (include "assistant.fullname" .) -}}
{{- else -}}
{{- fail "set secrets.existingSecret or secrets.externalSecret.enabled: secrets never come from values" -}}
{{- end -}}
{{- end -}}

{{- define "assistant.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The Serve config: serve_apps/serve_config.yaml's app with endpoints from values, plus the vLLM app. */}}
{{- define "assistant.serveConfig" -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
applications:
  - name: assistant
    route_prefix: /
    import_path: serve_apps.app_builder:app_builder
    args:
      endpoints:
        {{- toYaml .Values.serve.endpoints | nindent 8 }}
      {{- toYaml .Values.serve.replicas | nindent 6 }}
{{- if .Values.llm.enabled }}
  - name: llm
    route_prefix: {{ .Values.llm.routePrefix }}
    import_path: ray.serve.llm:build_openai_app
    args:
      llm_configs:
        - {{- toYaml .Values.llm.config | nindent 10 }}
{{- end }}
{{- end -}}

{{/* Pod-level hardening shared by every Ray pod (the images run as uid 1000). */}}
{{- define "assistant.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
{{- end -}}

{{- define "assistant.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "assistant.envFrom" -}}
- configMapRef:
    name: {{ include "assistant.fullname" . }}-settings
- secretRef:
    name: {{ include "assistant.secretName" . }}
{{- end -}}
