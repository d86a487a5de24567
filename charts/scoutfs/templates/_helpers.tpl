{{- define "scoutfs.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scoutfs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scoutfs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scoutfs.labels" -}}
app.kubernetes.io/name: scoutfs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: scoutfs
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scoutfs.selectorLabels" -}}
app.kubernetes.io/name: scoutfs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "scoutfs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
