{{/* The labels every object carries; the Deployments select on name alone (immutable). */}}
{{- define "ebb.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: ebb
{{- end }}

{{/* The image of both daemons: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "ebb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The second kube-scheduler's image: the cluster's own version unless kubeScheduler.image.tag
is set. kube-scheduler may be at most one minor version older than kube-apiserver and never
newer (the Kubernetes version skew policy), so it follows the cluster: `helm upgrade` after
each control-plane upgrade re-pins it. EKS reports e.g. v1.36.3-eks-1a2b3c: the upstream
release is v1.36.3.
*/}}
{{- define "ebb.kubeSchedulerImage" -}}
{{- $tag := .Values.kubeScheduler.image.tag | default (regexReplaceAll "[-+].*$" .Capabilities.KubeVersion.Version "") -}}
{{ .Values.kubeScheduler.image.repository }}:{{ $tag }}
{{- end }}

{{/* The Service the API server and kube-scheduler reach the scheduler daemon at. */}}
{{- define "ebb.schedulerHost" -}}
ebb-scheduler.{{ .Release.Namespace }}.svc
{{- end }}

{{/*
Pod placement shared by the three Deployments: replicas spread over nodes (preferred, so
a one-node cluster still runs them), then the values' own nodeSelector and tolerations.
*/}}
{{- define "ebb.placement" -}}
{{- $name := index . 0 -}}
{{- $values := index . 1 -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {app.kubernetes.io/name: {{ $name }}}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget: drains take one replica at a time. */}}
{{- define "ebb.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ index . 0 }}
  namespace: {{ (index . 1).Release.Namespace }}
  labels:
    {{- include "ebb.labels" (index . 0) | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/name: {{ index . 0 }}}
{{- end }}

{{/* Kubernetes' hardening for every container: non-root, read-only root, no capabilities. */}}
{{- define "ebb.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  seccompProfile: {type: RuntimeDefault}
{{- end }}
{{- define "ebb.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end }}

{{/*
The second kube-scheduler's configuration: its own name and Lease, and Ebb's extender (the
same stanza as manifests/scheduler-config/kube-scheduler-config.yaml, but for the files).
*/}}
{{- define "ebb.kubeSchedulerConfig" -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
  resourceName: ebb-kube-scheduler
  resourceNamespace: {{ .Release.Namespace }}
profiles:
- schedulerName: ebb-scheduler
extenders:
- urlPrefix: https://{{ include "ebb.schedulerHost" . }}:8443/scheduler
  # filter keeps only the nodes Ebb prefers: no prioritizeVerb (docs/decisions/0011).
  filterVerb: filter
  bindVerb: bind
  # Only batch pods reach the extender: Ebb's webhook gives each one ebb.dev/batch-pod,
  # which no node advertises (ignoredByScheduler: kube-scheduler's fit check skips it).
  managedResources:
  - name: ebb.dev/batch-pod
    ignoredByScheduler: true
  enableHTTPS: true
  # Its client certificate (from Ebb's CA, in the Secret the scheduler daemon keeps
  # and renews: --scheduler-client-secret); client-go rereads files given as
  # certFile/keyFile, so renewals need no restart.
  tlsConfig:
    caFile: /etc/ebb-tls/ca.crt
    certFile: /etc/ebb-tls/tls.crt
    keyFile: /etc/ebb-tls/tls.key
  nodeCacheCapable: true
  ignorable: false
  httpTimeout: 15s
{{- end }}
