{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "aas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aas.fullname" -}}
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

{{/* Cluster-scoped objects are named after the release namespace too: two releases of the
same name in different namespaces (one per team, namespace-scoped) must not collide. */}}
{{- define "aas.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "aas.fullname" .) | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "aas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aas.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aas.peeringName" -}}
{{- default (include "aas.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------- */}}

{{- define "aas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the operator pods. The workers the operator creates share
app.kubernetes.io/name but carry component=worker, so the two never select each other. */}}
{{- define "aas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "aas.labels" -}}
{{ include "aas.selectorLabels" . }}
app.kubernetes.io/part-of: airflow-asset-sync
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "aas.chart" . }}
{{- end -}}

{{/* Images --------------------------------------------------------------------------- */}}

{{- define "aas.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "aas.workerImage" -}}
{{- default (include "aas.image" .) .Values.workerImage -}}
{{- end -}}

{{/* Mode ----------------------------------------------------------------------------- */}}

{{/* "true" when the operator watches listed namespaces only, "" when cluster-wide. */}}
{{- define "aas.namespaced" -}}
{{- if .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{- define "aas.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail "replicaCount > 1 needs peering.enabled=true: two operators without kopf peering would both act on every AirflowAssetSync" -}}
{{- end -}}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) -}}
{{- fail "watchNamespaces lists a namespace twice" -}}
{{- end -}}
{{- end -}}

{{/* RBAC rules ------------------------------------------------------------------------
Exactly `operator_rules()` in operator/airflow_asset_sync/resources/rbac.py, split by scope:
"aas.rules.namespaced" holds the rules on namespaced resources (a Role per watched namespace
in namespace-scoped mode), "aas.rules.cluster" those on cluster-scoped ones.
tests/packaging/test_chart_rbac.py renders both modes and fails if they drift from the code.
Cluster-wide mode grants both lists in one ClusterRole, in the order of operator_rules().
The kopf peering rule names both peering kinds in cluster-wide mode; a namespace-scoped
operator only uses KopfPeering objects in its namespaces. */}}

{{- define "aas.rules.syncs" -}}
- apiGroups: [airflow-asset-sync.github.io]
  resources: [airflowassetsyncs]
  verbs: [get, list, watch, patch]
- apiGroups: [airflow-asset-sync.github.io]
  resources: [airflowassetsyncs/status]
  verbs: [get, patch]
- apiGroups: [airflow-asset-sync.github.io]
  resources: [airflowassetsyncs/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end -}}

{{- define "aas.rules.namespaced" -}}
{{ include "aas.rules.syncs" . }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end -}}

{{- define "aas.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end -}}

{{- define "aas.rules.clusterwide" -}}
{{ include "aas.rules.syncs" . }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings, kopfpeerings]
  verbs: [get, list, watch, patch]
{{ include "aas.rules.cluster" . }}
{{- end -}}
