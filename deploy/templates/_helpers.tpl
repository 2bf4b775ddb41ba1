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

{{/*
The headless Service of a service's pods, which metrics_aggregator discovers them by: its SRV
records `_http._tcp.<name>` list every ready pod with its http port.
*/}}
{{- define "platform.podsName" -}}
{{- printf "%s-pods" (include "platform.fullname" . | trunc 58 | trimSuffix "-") -}}
{{- end -}}

{{/* Where every service pushes its log records (APP_LOG_PUSH_URL); empty when logPush is off. */}}
{{- define "platform.logPushUrl" -}}
{{- if .Values.logPush.enabled -}}
{{- $aggregator := include "platform.fullname" (dict "root" . "name" "metrics_aggregator") -}}
{{- .Values.logPush.url | default (printf "http://%s:%v" $aggregator .Values.services.metrics_aggregator.port) -}}
{{- end -}}
{{- end -}}

{{/*
APP_METRICS_DISCOVERY of metrics_aggregator: one SRV name per service of the chart, then
metricsAggregator.extraDiscovery. The names are relative to the namespace on purpose: the
aggregator runs in the release's namespace, where a pod's resolver tries
<namespace>.svc.<cluster domain> first, so the first lookup answers and the chart need not know
the cluster domain (which is not always cluster.local).
*/}}
{{- define "platform.discovery" -}}
{{- $entries := list -}}
{{- range $name, $_ := .Values.services -}}
{{- $entries = append $entries (printf "%s=_http._tcp.%s" $name (include "platform.podsName" (dict "root" $ "name" $name))) -}}
{{- end -}}
{{- concat $entries .Values.metricsAggregator.extraDiscovery | join "," -}}
{{- end -}}

{{/* Fails rendering on observability settings the services would refuse, or set twice. */}}
{{- define "platform.checkObservability" -}}
{{- $aggregator := .Values.metricsAggregator -}}
{{- if ge (int $aggregator.scrapeTimeoutSeconds) (int $aggregator.scrapeIntervalSeconds) -}}
{{- fail (printf "metricsAggregator.scrapeTimeoutSeconds (%v) must be below metricsAggregator.scrapeIntervalSeconds (%v), so one slow target never delays the next round" $aggregator.scrapeTimeoutSeconds $aggregator.scrapeIntervalSeconds) -}}
{{- end -}}
{{- $owned := dict
  "APP_LOG_PUSH_URL" "logPush.url (or logPush.enabled=false)"
  "APP_INSTANCE" "nothing: it is each pod's name"
  "APP_METRICS_DISCOVERY" "metricsAggregator.extraDiscovery"
  "APP_METRICS_TARGETS" "metricsAggregator.staticTargets"
  "APP_METRICS_SCRAPE_INTERVAL_SECONDS" "metricsAggregator.scrapeIntervalSeconds"
  "APP_METRICS_SCRAPE_TIMEOUT_SECONDS" "metricsAggregator.scrapeTimeoutSeconds"
  "APP_METRICS_SAMPLE_LIMIT" "metricsAggregator.sampleLimit"
  "APP_METRICS_BODY_LIMIT_BYTES" "metricsAggregator.bodyLimitBytes"
-}}
{{- range $key, $instead := $owned -}}
{{- if hasKey $.Values.env $key -}}
{{- fail (printf "env.%s is set by the chart; set %s instead" $key $instead) -}}
{{- end -}}
{{- end -}}
{{- end -}}
