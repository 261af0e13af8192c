{{/* Names, labels and image references shared by the templates. */}}

{{- define "streamotion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamotion.operatorName" -}}
{{- printf "%s-operator" (include "streamotion.fullname" .) -}}
{{- end -}}

{{- define "streamotion.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "streamotion.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "streamotion.labels" -}}
app.kubernetes.io/name: streamotion
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamotion
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "streamotion.operatorSelector" -}}
app.kubernetes.io/name: streamotion
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* image "operator" | "producer" | "job" | "model" -> registry/repository:tag */}}
{{- define "streamotion.image" -}}
{{- $root := index . 0 -}}
{{- $repo := index $root.Values.images (index . 1) -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when a CRD-backed kind can be created: its operator chart is enabled here, or the API is served. */}}
{{- define "streamotion.hasApi" -}}
{{- $root := index . 0 -}}
{{- if or (index . 2) ($root.Capabilities.APIVersions.Has (index . 1)) -}}true{{- end -}}
{{- end -}}

{{/* Replication factor of the Kafka's internal topics, its default.replication.factor, and the operator's
default for pipeline topics (STREAMOTION_KAFKA_REPLICAS); topics then get min.insync.replicas min(2, it). */}}
{{- define "streamotion.kafkaReplicationFactor" -}}
{{- min 3 .Values.kafka.replicas -}}
{{- end -}}

{{/* The ClusterRole the operator binds to each pipeline's Spark driver ServiceAccount (its config default). */}}
{{- define "streamotion.sparkDriverRole" -}}
streamotion-spark-driver
{{- end -}}
