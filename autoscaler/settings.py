"""Every setting of the autoscaler daemon: a flag and an EBB_* environment variable."""

from __future__ import annotations

from dataclasses import dataclass

from ebb.catalog import NodeOverheadSettings
from ebb.settings import setting


@dataclass(frozen=True)
class AutoscalerSettings(NodeOverheadSettings):
    """Ebb autoscaler daemon: launches and terminates EC2 capacity for batch pods."""

    kubeconfig: str = setting("", "Kubeconfig to use; empty: in-cluster service account.")
    context: str = setting("", "Kubeconfig context (default: current).")
    listen_host: str = setting("0.0.0.0", "Address to serve /healthz, /readyz and /metrics on.")
    port: int = setting(8081, "Plain-HTTP port of /healthz, /readyz and /metrics.")
    leader_elect: bool = setting(
        True, "Elect a leader among replicas; only the leader launches and terminates."
    )
    leader_election_namespace: str = setting("ebb-system", "Namespace of the leader Lease.")
    identity: str = setting("", "This replica's name in the Lease (default: host name and PID).")
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_json: bool = setting(True, "Log one JSON object per line (false: human-readable).")
    watch_silence_timeout: float = setting(
        150.0, "Seconds a watch may stay silent before it is reopened."
    )
    cluster_name: str = setting(
        "ebb", "Cluster id: tagged on every instance (ebb.dev/cluster); the EKS cluster name."
    )
    cluster_endpoint: str = setting("", "API server URL new nodes join (user data).")
    cluster_ca: str = setting("", "Base64 cluster CA certificate new nodes trust (user data).")
    service_cidr: str = setting("10.100.0.0/16", "The cluster's service CIDR (user data).")
    kubernetes_version: str = setting(
        "", "Kubernetes minor version for node images, e.g. 1.35 (empty: ask the API server)."
    )
    region: str = setting("us-east-1", "AWS region.")
    aws_endpoint_url: str = setting(
        "", "Endpoint for EC2, SSM and SQS (empty: AWS; a local moto server in tests)."
    )
    aws_timeout_seconds: float = setting(
        30.0,
        "Seconds an EC2, SSM or SQS call may take to connect, and then to answer; a launch "
        "that times out has an unknown outcome, settled later through its client token.",
    )
    image_parameter_prefix: str = setting(
        "/aws/service/eks/optimized-ami", "SSM path under which EKS-optimized AMI ids are found."
    )
    interruption_queue_url: str = setting(
        "", "SQS queue receiving EC2 EventBridge notices (empty: none are consumed)."
    )
    batch_idle_seconds: float = setting(
        1.0, "Plan once no new pending pod has arrived for this long..."
    )
    batch_max_seconds: float = setting(10.0, "...or this long after the first one arrived.")
    resync_seconds: float = setting(10.0, "How often to re-list this cluster's EC2 instances.")
    registration_timeout_seconds: float = setting(
        900.0, "An instance that has not become a node after this long is terminated."
    )
    drain_grace_seconds: float = setting(
        5.0, "How long a cordoned idle node stays before it is terminated (a pod may race in)."
    )
    node_grace_seconds: float = setting(
        30.0, "How long a node whose instance EC2 reports gone stays before it is deleted."
    )
    orphan_scale_down_delay_seconds: float = setting(
        300.0, "Scale-down delay for nodes of compute environments that were deleted."
    )
    unavailable_offering_seconds: float = setting(
        180.0, "How long an instance type and zone without capacity is avoided."
    )
    catalog_refresh_seconds: float = setting(
        21600.0,
        "How often to refresh instance specs and prices from EC2 and the Price List API "
        "(0: never; use the shipped snapshot, as with moto, whose prices are placeholders).",
    )
