{{/* The chart name, or nameOverride. */}}
{{- define "bookmarket.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-qualified name every object is named after. */}}
{{- define "bookmarket.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (dict "root" $ "component" "api"). */}}
{{- define "bookmarket.componentName" -}}
{{- printf "%s-%s" (include "bookmarket.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "bookmarket.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: (dict "root" $ "component" "api"). */}}
{{- define "bookmarket.labels" -}}
helm.sh/chart: {{ include "bookmarket.chart" .root }}
{{ include "bookmarket.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: bookmarket
{{- end -}}

{{/* The labels a component's Service and Deployment select on: (dict "root" $ "component" "api"). */}}
{{- define "bookmarket.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bookmarket.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bookmarket.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{- define "bookmarket.configMapName" -}}
{{- include "bookmarket.fullname" . -}}
{{- end -}}

{{/* The Secret with DATABASE_URL and REDIS_URL: the existing one, or the chart's. */}}
{{- define "bookmarket.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "bookmarket.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* SANDBOX_URL: config.sandboxUrl, else the chart's sandbox Service, else empty. */}}
{{- define "bookmarket.sandboxUrl" -}}
{{- if .Values.config.sandboxUrl -}}
{{- .Values.config.sandboxUrl | trimSuffix "/" -}}
{{- else if .Values.sandbox.enabled -}}
{{- printf "http://%s:%v" (include "bookmarket.componentName" (dict "root" . "component" "sandbox")) .Values.sandbox.service.port -}}
{{- end -}}
{{- end -}}

{{/* One provider's URL: (dict "root" $ "key" "paymentUrl" "path" "payment"). Explicit, else under SANDBOX_URL. */}}
{{- define "bookmarket.providerUrl" -}}
{{- $explicit := index .root.Values.config .key -}}
{{- if $explicit -}}
{{- $explicit -}}
{{- else -}}
{{- $sandbox := include "bookmarket.sandboxUrl" .root -}}
{{- if not $sandbox -}}
{{- fail (printf "config.%s is required when sandbox.enabled is false and config.sandboxUrl is empty" .key) -}}
{{- end -}}
{{- printf "%s/%s" $sandbox .path -}}
{{- end -}}
{{- end -}}

{{/* Pod template annotations: roll the pods when the settings change. */}}
{{- define "bookmarket.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod spec fields every component shares. */}}
{{- define "bookmarket.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container fields every component shares: image, security context, the settings. */}}
{{- define "bookmarket.containerCommon" -}}
image: {{ include "bookmarket.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "bookmarket.configMapName" . }}
  - secretRef:
      name: {{ include "bookmarket.secretName" . }}
{{- end -}}

{{/* The worker pods' terminationGracePeriodSeconds: WORKER_SHUTDOWN_GRACE_S (rounded up) plus the margin. */}}
{{- define "bookmarket.workerGracePeriod" -}}
{{- add (ceil .Values.config.workerShutdownGraceS | int64) .Values.worker.terminationGraceMarginS -}}
{{- end -}}

{{/* host:port of the broker's Redis for KEDA: worker.autoscaling.keda.redisAddress, else from secrets.redisUrl. */}}
{{- define "bookmarket.kedaRedisAddress" -}}
{{- $keda := .Values.worker.autoscaling.keda -}}
{{- if $keda.redisAddress -}}
{{- $keda.redisAddress -}}
{{- else if .Values.secrets.existingSecret -}}
{{- fail "worker.autoscaling.keda.redisAddress is required with secrets.existingSecret (KEDA reads host:port, not REDIS_URL)" -}}
{{- else -}}
{{- $url := urlParse .Values.secrets.redisUrl -}}
{{- if contains ":" $url.host -}}{{ $url.host }}{{- else -}}{{ printf "%s:6379" $url.host }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The broker KEDA reads the queue of: worker.autoscaling.keda.broker, else from secrets.brokerUrl's scheme. */}}
{{- define "bookmarket.kedaBroker" -}}
{{- $broker := .Values.worker.autoscaling.keda.broker -}}
{{- if $broker -}}
{{- $broker -}}
{{- else if and (not .Values.secrets.existingSecret) (regexMatch "^(amqps?|pyamqp)://" (default "" .Values.secrets.brokerUrl)) -}}
rabbitmq
{{- else -}}
redis
{{- end -}}
{{- end -}}

{{/* The broker's Redis database index for KEDA: the path of secrets.redisUrl, else the value. */}}
{{- define "bookmarket.kedaRedisDatabase" -}}
{{- $path := "" -}}
{{- if and (not .Values.worker.autoscaling.keda.redisAddress) (not .Values.secrets.existingSecret) -}}
{{- $path = (urlParse .Values.secrets.redisUrl).path | trimPrefix "/" -}}
{{- end -}}
{{- default (.Values.worker.autoscaling.keda.redisDatabaseIndex | toString) $path -}}
{{- end -}}

{{/* Flower behind the Ingress needs its login: the chart's secrets.flowerBasicAuth or the existing Secret's. */}}
{{- define "bookmarket.flowerExposed" -}}
{{- if and .Values.ingress.enabled .Values.ingress.flower.enabled .Values.flower.enabled -}}
{{- if not (or .Values.secrets.flowerBasicAuth .Values.secrets.existingSecret) -}}
{{- fail "ingress.flower.enabled needs Flower's login: set secrets.flowerBasicAuth (user:password), or FLOWER_BASIC_AUTH in secrets.existingSecret" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}
