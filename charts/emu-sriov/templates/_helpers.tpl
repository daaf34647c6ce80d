{{/* Names and labels shared by every template. */}}
{{- define "emu-sriov.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "emu-sriov.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "emu-sriov.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "emu-sriov.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: emu-sriov
{{- end -}}

{{- define "emu-sriov.selector" -}}
app.kubernetes.io/name: {{ include "emu-sriov.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "emu-sriov.operatorName" -}}{{ include "emu-sriov.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "emu-sriov.agentName" -}}{{ include "emu-sriov.fullname" . | trunc 57 | trimSuffix "-" }}-agent{{- end -}}
{{- define "emu-sriov.cleanupName" -}}{{ include "emu-sriov.fullname" . | trunc 55 | trimSuffix "-" }}-cleanup{{- end -}}

{{- define "emu-sriov.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT when the pods must reach the API server at a given address. */}}
{{- define "emu-sriov.apiServerEnv" -}}
{{- if .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | quote }}
{{- end }}
{{- end -}}

{{/* The cleanup hook's kubectl container, less its name and args. */}}
{{- define "emu-sriov.cleanupContainer" -}}
image: {{ printf "%s:%s" .Values.cleanup.image.repository .Values.cleanup.image.tag }}
imagePullPolicy: {{ .Values.cleanup.image.pullPolicy }}
command: [kubectl]
{{- if .Values.apiServer.host }}
env:
  {{- include "emu-sriov.apiServerEnv" . | nindent 2 }}
{{- end }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
resources:
  requests: {cpu: 10m, memory: 32Mi}
  limits: {memory: 128Mi}
{{- end -}}
