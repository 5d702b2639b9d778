{{/* Names. */}}
{{- define "bal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "bal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bal
{{- end -}}

{{/* The BAL replicas' selector; the Mosquitto and PostgreSQL pods have their own component. */}}
{{- define "bal.selector" -}}
app.kubernetes.io/name: {{ include "bal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: bal
{{- end -}}

{{- define "bal.mosquittoSelector" -}}
app.kubernetes.io/name: {{ include "bal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mosquitto
{{- end -}}

{{- define "bal.postgresSelector" -}}
app.kubernetes.io/name: {{ include "bal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end -}}

{{- define "bal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Secret names: the operator's, or the chart's generated ones. */}}
{{- define "bal.keysSecret" -}}
{{- default (printf "%s-keys" (include "bal.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{- define "bal.tlsSecret" -}}
{{- default (printf "%s-tls" (include "bal.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "bal.mosquittoTlsSecret" -}}
{{- default (printf "%s-mosquitto-tls" (include "bal.fullname" .)) .Values.mosquitto.tls.existingSecret -}}
{{- end -}}

{{- define "bal.databaseSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s-postgresql" (include "bal.fullname" .) -}}
{{- else -}}
{{- default (printf "%s-database" (include "bal.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "bal.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled -}}url{{- else -}}{{ .Values.database.secretKey }}{{- end -}}
{{- end -}}

{{- define "bal.chainSecret" -}}
{{- default (printf "%s-chain" (include "bal.fullname" .)) .Values.chain.existingSecret -}}
{{- end -}}

{{- define "bal.mosquittoHost" -}}
{{- printf "%s-mosquitto" (include "bal.fullname" .) -}}
{{- end -}}

{{/* "true" when the replicas are the nodes of an embedded MQTT cluster, "" with Mosquitto. */}}
{{- define "bal.embeddedCluster" -}}
{{- if eq .Values.broker.mode "embedded-cluster" -}}true{{- end -}}
{{- end -}}

{{/*
mqtt.cluster.peers: every replica, itself included, as ID@HOST:PORT with ID its pod index + 1
and HOST its name under the headless service (published before the pod is ready, so nodes
find one another while they start). The same list on every replica.
*/}}
{{- define "bal.clusterPeers" -}}
{{- $fullname := include "bal.fullname" . -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.replicaCount) -}}
{{- $host := printf "%s-%d.%s-headless.%s.svc.%s" $fullname $i $fullname $.Release.Namespace $.Values.clusterDomain -}}
{{- $peers = append $peers (printf "%d@%s:%d" (add1 $i) $host (int $.Values.mqtt.cluster.port)) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{/*
The environment every BAL container gets: the secrets, each from its Secret, never from a
ConfigMap. `bal config check` reads exactly these names.
*/}}
{{- define "bal.secretEnv" -}}
- name: BAL_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.databaseSecret" . }}
      key: {{ include "bal.databaseSecretKey" . }}
- name: BAL_KEYS__MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.keysSecret" . }}
      key: master-key
- name: BAL_CHAIN__OPERATOR_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.keysSecret" . }}
      key: operator-key
- name: BAL_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.keysSecret" . }}
      key: admin-password
{{- if not (include "bal.embeddedCluster" .) }}
- name: BAL_BROKER__ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.keysSecret" . }}
      key: broker-admin-password
{{- end }}
{{- if not .Values.chain.embedded }}
- name: BAL_CHAIN__RPC_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bal.chainSecret" . }}
      key: {{ .Values.chain.secretKey }}
{{- end }}
{{- end -}}

{{/* Hook annotations of what must exist before the migration job and the first pod. */}}
{{- define "bal.keptHook" -}}
helm.sh/hook: pre-install
helm.sh/hook-weight: "-10"
helm.sh/resource-policy: keep
{{- end -}}
