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

{{/* The image: by digest when imageDigest is set (immutable), else by tag. */}}
{{- define "platform.image" -}}
{{- $registry := required "imageRegistry must name a registry, for example --set imageRegistry=ghcr.io/your-org" .Values.imageRegistry -}}
{{- if .Values.imageDigest -}}
{{- printf "%s/%s@%s" (trimSuffix "/" $registry) .Values.imageName .Values.imageDigest -}}
{{- else -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .Values.imageName (include "platform.tag" .) -}}
{{- end -}}
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

{{/* Fails rendering on observability settings the services would refuse, and on variables set twice. */}}
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
  "APP_HTTP_ADDR" "services.<name>.port"
  "APP_SSH_PORT" "sshPort"
  "APP_EMBEDDED_STORE_ALLOWED" "nothing: it follows app's replicas and autoscaling"
  "APP_SHUTDOWN_GRACE_SECONDS" "services.<name>.terminationGracePeriodSeconds or shutdown.*"
  "APP_SSH_PUBLIC_HOST" "ssh.publicHost"
  "APP_SSH_PUBLIC_PORT" "ssh.publicPort"
  "APP_TRUSTED_PROXIES" "trustedProxies"
  "APP_DATABASE_CA_FILE" "tls.caSecret.name"
  "APP_REDIS_CA_FILE" "tls.caSecret.name"
-}}
{{- range $key, $instead := $owned -}}
{{- if hasKey $.Values.env $key -}}
{{- fail (printf "env.%s is set by the chart; set %s instead" $key $instead) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A service's shutdown, from one value: the pod's terminationGracePeriodSeconds
(services.<name>.terminationGracePeriodSeconds, else shutdown.terminationGracePeriodSeconds). The
preStop pause (shutdown.preStopSeconds) comes first, so that the endpoints are gone before the
listener closes; then SIGTERM, after which the service gives in-flight requests, git operations,
SSH sessions and jobs APP_SHUTDOWN_GRACE_SECONDS, 5 seconds short of the kill. As JSON:
{"period": ..., "preStop": ..., "grace": ...}. Fails rendering when no grace would be left.
*/}}
{{- define "platform.shutdown" -}}
{{- $service := index .root.Values.services .name -}}
{{- $shutdown := .root.Values.shutdown -}}
{{- $period := int (hasKey $service "terminationGracePeriodSeconds" | ternary $service.terminationGracePeriodSeconds $shutdown.terminationGracePeriodSeconds) -}}
{{- $key := hasKey $service "terminationGracePeriodSeconds" | ternary (printf "services.%s.terminationGracePeriodSeconds" .name) "shutdown.terminationGracePeriodSeconds" -}}
{{- $preStop := int $shutdown.preStopSeconds -}}
{{- $grace := sub (sub $period $preStop) 5 -}}
{{- if lt $grace 1 -}}
{{- fail (printf "%s (%d) leaves %s no time to finish its work after SIGTERM: it must be at least shutdown.preStopSeconds (%d) + 5 + 1 = %d seconds (APP_SHUTDOWN_GRACE_SECONDS = terminationGracePeriodSeconds - preStopSeconds - 5 would be %d)" $key $period .name $preStop (add $preStop 6) $grace) -}}
{{- end -}}
{{- toJson (dict "period" $period "preStop" $preStop "grace" $grace) -}}
{{- end -}}

{{/*
The HPA's bounds of a service: minReplicas is autoscaling.minReplicas when set, else replicas (so
that --set services.app.replicas=3 keeps at least 3 under the HPA). As JSON: {"min": .., "max": ..}.
*/}}
{{- define "platform.hpaBounds" -}}
{{- $service := index .root.Values.services .name -}}
{{- $autoscaling := $service.autoscaling -}}
{{- $min := int (hasKey $autoscaling "minReplicas" | ternary $autoscaling.minReplicas (max 1 (int $service.replicas))) -}}
{{- $max := int $autoscaling.maxReplicas -}}
{{- if gt $min $max -}}
{{- fail (printf "services.%s: the HPA's minimum (%d, from %s) exceeds services.%s.autoscaling.maxReplicas (%d)" .name $min (hasKey $autoscaling "minReplicas" | ternary "autoscaling.minReplicas" "replicas") .name $max) -}}
{{- end -}}
{{- toJson (dict "min" $min "max" $max) -}}
{{- end -}}

{{/* The most replicas a service may run: the HPA's maximum, else replicas. */}}
{{- define "platform.maxReplicas" -}}
{{- $service := index .root.Values.services .name -}}
{{- if $service.autoscaling.enabled -}}
{{- (include "platform.hpaBounds" . | fromJson).max -}}
{{- else -}}
{{- int $service.replicas -}}
{{- end -}}
{{- end -}}

{{/*
The port users reach gitserver's SSH on (APP_SSH_PUBLIC_PORT): ssh.publicPort when set, else the
SSH Service's (its nodePort for a NodePort Service), else gitserver's own Service's (sshPort).
*/}}
{{- define "platform.sshPublicPort" -}}
{{- $ssh := .Values.ssh -}}
{{- if $ssh.publicPort -}}
{{- int $ssh.publicPort -}}
{{- else if and $ssh.service.enabled (eq $ssh.service.type "NodePort") -}}
{{- int (required "ssh.service.type NodePort needs ssh.service.nodePort (or ssh.publicPort): the clone URLs must name the port users connect to" $ssh.service.nodePort) -}}
{{- else if $ssh.service.enabled -}}
{{- int $ssh.service.port -}}
{{- else -}}
{{- int .Values.sshPort -}}
{{- end -}}
{{- end -}}

{{/* The SSH-only Service of gitserver. */}}
{{- define "platform.sshServiceName" -}}
{{- printf "%s-ssh" (include "platform.fullname" (dict "root" . "name" "gitserver") | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{/* Where the CA certificate of tls.caSecret is mounted (APP_DATABASE_CA_FILE, APP_REDIS_CA_FILE). */}}
{{- define "platform.caFile" -}}
/etc/platform/tls/ca.crt
{{- end -}}

{{/* Fails rendering on SSH Service settings its type does not have. */}}
{{- define "platform.checkSsh" -}}
{{- $service := .Values.ssh.service -}}
{{- if and $service.enabled (ne $service.type "LoadBalancer") -}}
{{- if $service.loadBalancerSourceRanges -}}
{{- fail "ssh.service.loadBalancerSourceRanges needs ssh.service.type=LoadBalancer: a NodePort Service takes connections from anywhere (restrict them with networkPolicy.sshSourceRanges)" -}}
{{- end -}}
{{- if $service.loadBalancerClass -}}
{{- fail "ssh.service.loadBalancerClass needs ssh.service.type=LoadBalancer" -}}
{{- end -}}
{{- end -}}
{{- end -}}
