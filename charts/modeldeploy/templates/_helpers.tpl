{{/* Names, labels and the pieces of the operator's command line shared by the templates. */}}

{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects are named after the release ("modeldeploy" stays as is). */}}
{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldeploy
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "modeldeploy.serverImage" -}}
{{- default (printf "ghcr.io/modeldeploy/modeldeploy-server:%s" .Chart.AppVersion) .Values.operator.serverImage }}
{{- end }}

{{/* The rules of the operator's role, one place for the ClusterRole and the Roles.
Each rule is what the operator's code does; see docs/operations.md ("RBAC"). */}}
{{- define "modeldeploy.rules" -}}
# Watch ModelDeployments (kopf lists, then watches; the resync lists), read the latest one
# before acting on a burst of events, patch them (the operator removes the promote/abort
# annotations once it has acted on them).
- apiGroups: ["serving.modeldeploy.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Write the status through the status subresource.
- apiGroups: ["serving.modeldeploy.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion: clusters running the
# OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift) require this.
- apiGroups: ["serving.modeldeploy.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# The children: watched (a changed or deleted child is restored), read, server-side applied
# (an apply that creates needs "create" as well as "patch"). The operator deletes only what
# a canary rollout leaves behind: the canary Deployment once promoted or rolled back, the
# per-track Services <name>-stable and <name>-canary once no longer needed (the rollout
# ended, or trafficRouting was removed). Children go with their owner otherwise (garbage
# collector).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The shadow config <name>-shadow the stable pods mount (where they mirror requests to during
# a shadow step): applied like the other children, watched so an edited one is restored.
# Only ConfigMaps labelled managed-by modeldeploy are watched; the operator reads no other
# and deletes none (they go with their ModelDeployment).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Canary traffic with spec.rollout.trafficRouting.gatewayAPI: the weighted HTTPRoute, like
# the other children (and deleted when trafficRouting is removed).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# An autoscaler or disruption budget is deleted when the spec drops it.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Serving pods are listed, then watched, into a store: it says why pods are not ready (e.g.
# unschedulable) and when a canary's pods are ready to take traffic.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# An Event for every condition transition (the operator posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The leader election's rules, in the release namespace where the Lease lives. The client
reads the Lease (get), creates it when absent (create: cannot be narrowed by name, the object
does not exist yet), renews or takes it over (update, a read-modify-replace) and, on a clean
stop, hands it back (patch). */}}
{{- define "modeldeploy.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "modeldeploy.fullname" . | quote }}]
  verbs: ["get", "update", "patch"]
{{- end }}
