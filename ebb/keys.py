"""The names Ebb writes into Kubernetes: API group, labels, annotations, taints.

Kept in one place because they are a public contract with users' manifests.
"""

from typing import Final

GROUP: Final = "ebb.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Job (and pod template) labels.
QUEUE_LABEL: Final = "ebb.dev/queue"
SHARE_LABEL: Final = "ebb.dev/share"
JOB_ID_LABEL: Final = "ebb.dev/job-id"  # the Job's name, stamped on its pods

# Pod annotations Ebb's extender sets when it binds a pod (with the Binding, so they land
# with spec.nodeName); the pod's AWS_BATCH_JOB_ATTEMPT and AWS_BATCH_CE_NAME read them.
POD_ATTEMPT: Final = "ebb.dev/attempt"
POD_COMPUTE_ENVIRONMENT: Final = "ebb.dev/compute-environment"

# Job annotations set by users.
DEPENDS_ON: Final = "ebb.dev/depends-on"
SCHEDULING_PRIORITY: Final = "ebb.dev/scheduling-priority"
RETRY_STRATEGY: Final = "ebb.dev/retry-strategy"
TIMEOUT_SECONDS: Final = "ebb.dev/timeout-seconds"
CANCEL: Final = "ebb.dev/cancel"
TERMINATE: Final = "ebb.dev/terminate"
CAPACITY_TYPE_PREFERENCE: Final = "ebb.dev/capacity-type"
ARRAY_DEPENDENCY: Final = "ebb.dev/array-dependency"
# A multi-node parallel job (a gang): its node count, equal to completions and parallelism;
# also stamped on its pod template as a label, so placement knows the gang's size.
NODES: Final = "ebb.dev/nodes"
MAIN_NODE_INDEX: Final = "ebb.dev/main-node-index"
# The JobDefinition the Job's pod template comes from (NAME or NAME:REV; the webhook
# rewrites it to the NAME:REV it used), and the values of its Ref:: parameters (JSON).
JOB_DEFINITION: Final = "ebb.dev/job-definition"
PARAMETERS: Final = "ebb.dev/parameters"

# Job annotations published by Ebb.
STATE: Final = "ebb.dev/state"
REASON: Final = "ebb.dev/reason"
REASON_CODE: Final = "ebb.dev/reason-code"
# The reason code of a job between attempts: RUNNABLE, still holding its admission.
RETRY_WAIT_CODE: Final = "RUNNABLE:RETRY_WAIT"
STATE_SINCE: Final = "ebb.dev/since"
ADMITTED_AT: Final = "ebb.dev/admitted-at"
# An array job's own parallelism, kept while Ebb raises spec.parallelism as it admits.
REQUESTED_PARALLELISM: Final = "ebb.dev/requested-parallelism"
N_TO_N_GATE: Final = "ebb.dev/n-to-n"
ATTEMPTS: Final = "ebb.dev/attempts"
# A multi-node job's attempt (1, 2, …): Ebb retries the gang as a whole, one attempt
# after another, and counts them itself (the Job controller never fails a gang's pod).
GANG_ATTEMPT: Final = "ebb.dev/gang-attempt"
ARRAY_STATUS: Final = "ebb.dev/array-status"

# What Ebb publishes on a Job: only Ebb writes these (its webhook drops them from a new
# Job and refuses anyone else's change), so a tenant cannot forge its own history.
PUBLISHED_ANNOTATIONS: Final = frozenset(
    {
        STATE,
        REASON,
        REASON_CODE,
        STATE_SINCE,
        ADMITTED_AT,
        REQUESTED_PARALLELISM,
        ATTEMPTS,
        GANG_ATTEMPT,
        ARRAY_STATUS,
    }
)

# Every ebb.dev/ key a Job may carry (the webhook warns about any other: a misspelt key
# would otherwise be ignored without a word).
JOB_LABELS: Final = frozenset({QUEUE_LABEL, SHARE_LABEL})
JOB_ANNOTATIONS: Final = frozenset(
    {
        DEPENDS_ON,
        SCHEDULING_PRIORITY,
        RETRY_STRATEGY,
        TIMEOUT_SECONDS,
        CANCEL,
        TERMINATE,
        CAPACITY_TYPE_PREFERENCE,
        ARRAY_DEPENDENCY,
        NODES,
        MAIN_NODE_INDEX,
        JOB_DEFINITION,
        PARAMETERS,
    }
    | PUBLISHED_ANNOTATIONS
)

# Nodes.
COMPUTE_ENVIRONMENT_LABEL: Final = "ebb.dev/compute-environment"
CAPACITY_TYPE_LABEL: Final = "ebb.dev/capacity-type"
INSTANCE_TYPE_LABEL: Final = "node.kubernetes.io/instance-type"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
BATCH_NODE_TAINT: Final = "ebb.dev/batch-node"
DRAINING_TAINT: Final = "ebb.dev/draining"

CAPACITY_SPOT: Final = "spot"
CAPACITY_ON_DEMAND: Final = "on-demand"

# Extended resource name for NVIDIA GPUs.
GPU_RESOURCE: Final = "nvidia.com/gpu"
# The extended resource a batch pod requests (one, on its first container) so that
# kube-scheduler sends it, and only it, to Ebb's extender: the stanza's managedResources,
# with ignoredByScheduler (no node advertises it; kubelet ignores what its node lacks).
BATCH_POD_RESOURCE: Final = "ebb.dev/batch-pod"

# EC2 tags the autoscaler writes on every instance it launches.
TAG_CLUSTER: Final = "ebb.dev/cluster"
TAG_COMPUTE_ENVIRONMENT: Final = "ebb.dev/compute-environment"
TAG_LAUNCH: Final = "ebb.dev/launch"  # the launch's EC2 client token

BATCH_TOLERATION: Final = {
    "key": BATCH_NODE_TAINT,
    "operator": "Exists",
    "effect": "NoSchedule",
}
