"""The autoscaler's Prometheus metrics. Labels are bounded: compute environments and
instance types come from the cluster's configuration, reasons from fixed sets."""

from prometheus_client import Counter, Gauge, Histogram

PENDING_PODS = Gauge(
    "ebb_autoscaler_pending_pods",
    "Batch pods waiting for capacity, by the compute environment they are routed to.",
    ["compute_environment"],
)
DESIRED_VCPUS = Gauge(
    "ebb_autoscaler_desired_vcpus",
    "vCPUs the compute environment should have: its instances plus launches in flight.",
    ["compute_environment"],
)
PROVISIONED_VCPUS = Gauge(
    "ebb_autoscaler_provisioned_vcpus",
    "vCPUs of the compute environment's nodes (its status.currentvCpus).",
    ["compute_environment"],
)
PROVISIONED_MEMORY = Gauge(
    "ebb_autoscaler_provisioned_memory_bytes",
    "Memory of the compute environment's nodes.",
    ["compute_environment"],
)
PROVISIONED_GPUS = Gauge(
    "ebb_autoscaler_provisioned_gpus",
    "GPUs of the compute environment's nodes.",
    ["compute_environment"],
)
REQUESTED_VCPUS = Gauge(
    "ebb_autoscaler_requested_vcpus",
    "vCPUs requested by the batch pods on the compute environment's nodes.",
    ["compute_environment"],
)
REQUESTED_MEMORY = Gauge(
    "ebb_autoscaler_requested_memory_bytes",
    "Memory requested by the batch pods on the compute environment's nodes.",
    ["compute_environment"],
)
REQUESTED_GPUS = Gauge(
    "ebb_autoscaler_requested_gpus",
    "GPUs requested by the batch pods on the compute environment's nodes.",
    ["compute_environment"],
)
INSTANCES = Gauge(
    "ebb_autoscaler_instances",
    "Live instances (pending or running), by type and capacity type.",
    ["instance_type", "capacity_type"],
)
COST = Gauge(
    "ebb_autoscaler_cost_usd_per_hour",
    "Estimated cost of the compute environment's live instances, in USD per hour.",
    ["compute_environment"],
)
NODES = Gauge("ebb_autoscaler_nodes", "Nodes per compute environment.", ["compute_environment"])
# The environment's limits, so a dashboard or an alert can set provisioned vCPUs against them.
MAX_VCPUS = Gauge(
    "ebb_compute_environment_max_vcpus",
    "The compute environment's maxvCpus: the most vCPUs it may have.",
    ["compute_environment"],
)
MIN_VCPUS = Gauge(
    "ebb_compute_environment_min_vcpus",
    "The compute environment's minvCpus: the vCPUs it keeps even when idle.",
    ["compute_environment"],
)
# Its status as the autoscaler publishes it, so an alert can name an INVALID environment.
INVALID = Gauge(
    "ebb_compute_environment_invalid",
    "1 while the compute environment is INVALID (its status.statusReason says why), else 0.",
    ["compute_environment"],
)
# The gauges labelled by compute environment alone: a deleted environment's are removed.
PER_ENVIRONMENT = (
    PENDING_PODS,
    DESIRED_VCPUS,
    PROVISIONED_VCPUS,
    PROVISIONED_MEMORY,
    PROVISIONED_GPUS,
    REQUESTED_VCPUS,
    REQUESTED_MEMORY,
    REQUESTED_GPUS,
    COST,
    NODES,
    MAX_VCPUS,
    MIN_VCPUS,
    INVALID,
)
LAUNCHES = Counter(
    "ebb_autoscaler_launches_total",
    "Instances launched, by why.",
    ["compute_environment", "capacity_type", "reason"],
)
LAUNCH_FAILURES = Counter(
    "ebb_autoscaler_launch_failures_total",
    "Launch requests EC2 refused or left unanswered, by error class "
    "(insufficient-capacity, error, outcome-unknown).",
    ["compute_environment", "reason"],
)
TERMINATIONS = Counter(
    "ebb_autoscaler_terminations_total",
    "Instances terminated (and nodes removed), by why.",
    ["compute_environment", "reason"],
)
INSTANCE_SECONDS = Counter(
    "ebb_autoscaler_instance_seconds_total",
    "Instance time (divide by 3600 for instance-hours), by type and capacity type.",
    ["instance_type", "capacity_type"],
)
PLANNER_SECONDS = Histogram(
    "ebb_autoscaler_planner_seconds",
    "Time to make one capacity plan.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INTERRUPTIONS = Counter(
    "ebb_autoscaler_interruptions_total",
    "EC2 notices received (Spot interruption warnings, rebalance recommendations, state changes).",
    ["kind"],
)
EC2_RETRIES = Counter(
    "ebb_autoscaler_ec2_retries_total",
    "EC2 calls retried after throttling or a transient error.",
    ["operation"],
)
NOTICES_DROPPED = Counter(
    "ebb_autoscaler_notices_dropped_total",
    "SQS messages dropped because they are not EC2 notices Ebb reads (each is logged).",
)
LOST_PODS = Counter(
    "ebb_autoscaler_lost_pods_total",
    "Pods failed (DisruptionTarget) and deleted because their node's instance went away.",
    ["compute_environment"],
)
