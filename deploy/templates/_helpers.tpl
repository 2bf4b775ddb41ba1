{{/* A service's name in Kubernetes: underscores are not allowed there. */}}
{{- define "platform.component" -}}
{{- . | replace "_" "-" -}}
{{- end -}}

{{/* Resource name: release name, then component. */}}
{{- define "platform.fullname" -}}
{{- printf "%s-%s" .root.Release.Name (include "platform.component" .name) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "platform.selectorLabels" -}}
app.kubernetes.io/name: platform
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "platform.component" .name }}
{{- end -}}

{{- define "platform.labels" -}}
{{ include "platform.selectorLabels" . }}
app.kubernetes.io/version: {{ include "platform.tag" .root | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "platform.tag" -}}
{{- default .Chart.AppVersion .Values.imageTag -}}
{{- end -}}

{{- define "platform.image" -}}
{{- $registry := required "imageRegistry must name a registry, for example --set imageRegistry=ghcr.io/your-org" .Values.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .Values.imageName (include "platform.tag" .) -}}
{{- end -}}

{{/*
Sub-paths of the shared-data volume each service mounts, as the README's storage table. static_server
also gets what app writes (avatars, files) read-only at the same places under its /data, so that
the URLs app hands out are served.
*/}}
{{- define "platform.mounts" -}}
{{- $repos := dict "subPath" "repos" "mountPath" "/data/repos" -}}
{{- $mounts := dict
  "app" (list $repos (dict "subPath" "avatars" "mountPath" "/data/avatars") (dict "subPath" "files" "mountPath" "/data/files"))
  "gitserver" (list $repos)
  "git_hook" (list $repos)
  "static_server" (list (dict "subPath" "static" "mountPath" "/data") (dict "subPath" "avatars" "mountPath" "/data/avatars" "readOnly" true) (dict "subPath" "files" "mountPath" "/data/files" "readOnly" true))
-}}
{{- toJson (dict "mounts" (index $mounts . | default list)) -}}
{{- end -}}

{{/* Fails rendering when email_worker could run more than one sender. */}}
{{- define "platform.checkEmailWorker" -}}
{{- $worker := .Values.services.email_worker -}}
{{- if gt (int $worker.replicas) 1 -}}
{{- fail (printf "services.email_worker.replicas is %v, but email_worker must run exactly one replica: a second sender would send mail twice" $worker.replicas) -}}
{{- end -}}
{{- if $worker.autoscaling.enabled -}}
{{- fail "services.email_worker.autoscaling.enabled must stay false: email_worker must run exactly one replica" -}}
{{- end -}}
{{- end -}}
