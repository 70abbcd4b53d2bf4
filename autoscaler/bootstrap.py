"""How a new instance joins the cluster: its node image and its user data. Pure code.

User data joins the node to the EKS cluster with the compute environment's labels and
the `ebb.dev/batch-node:NoSchedule` taint, and pins the kubelet's reservations to the
overhead model the planner used, so what the planner counted is what the node offers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ebb import keys
from ebb.catalog import ARM64, InstanceType, NodeOverhead
from ebb.resources import MIB

AL2 = "EKS_AL2"
AL2023 = "EKS_AL2023"
_BOUNDARY = "//ebb//"


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    name: str
    endpoint: str
    certificate_authority: str  # base64 PEM
    service_cidr: str
    kubernetes_version: str  # "1.35"


def image_parameter(prefix: str, version: str, image_type: str | None, t: InstanceType) -> str:
    """The SSM parameter holding the EKS-optimized AMI for this type. NVIDIA images are
    used for types with NVIDIA GPUs, whatever the image type asks for."""
    nvidia = t.nvidia_gpus > 0
    if (image_type or AL2023).startswith(AL2023):
        variant = "nvidia" if nvidia else "standard"
        return f"{prefix}/{version}/amazon-linux-2023/{t.arch}/{variant}/recommended/image_id"
    suffix = "-gpu" if nvidia else "-arm64" if t.arch == ARM64 else ""
    return f"{prefix}/{version}/amazon-linux-2{suffix}/recommended/image_id"


def node_labels(environment: str, capacity_type: str) -> dict[str, str]:
    return {
        keys.COMPUTE_ENVIRONMENT_LABEL: environment,
        keys.CAPACITY_TYPE_LABEL: capacity_type,
    }


def user_data(
    cluster: ClusterInfo,
    image_type: str | None,
    labels: Mapping[str, str],
    t: InstanceType,
    overhead: NodeOverhead,
) -> str:
    label_flag = "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    taint_flag = f"--register-with-taints={keys.BATCH_NODE_TAINT}=:NoSchedule"
    reserved = overhead.kube_reserved(t)
    cpu, memory = f"{reserved.cpu_milli}m", f"{reserved.memory // MIB}Mi"
    eviction = f"{overhead.eviction_memory_mib}Mi"
    if (image_type or AL2023).startswith(AL2023):
        return "\n".join(
            [
                "MIME-Version: 1.0",
                f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"',
                "",
                f"--{_BOUNDARY}",
                "Content-Type: application/node.eks.aws",
                "",
                "apiVersion: node.eks.aws/v1alpha1",
                "kind: NodeConfig",
                "spec:",
                "  cluster:",
                f"    name: {cluster.name}",
                f"    apiServerEndpoint: {cluster.endpoint}",
                f"    certificateAuthority: {cluster.certificate_authority}",
                f"    cidr: {cluster.service_cidr}",
                "  kubelet:",
                "    config:",
                f"      maxPods: {overhead.max_pods}",
                f"      kubeReserved: {{cpu: {cpu}, memory: {memory}}}",
                f"      evictionHard: {{memory.available: {eviction}}}",
                "    flags:",
                f"    - {label_flag}",
                f"    - {taint_flag}",
                "",
                f"--{_BOUNDARY}--",
                "",
            ]
        )
    kubelet_args = (
        f"{label_flag} {taint_flag} --max-pods={overhead.max_pods} "
        f"--kube-reserved=cpu={cpu},memory={memory} "
        f"--eviction-hard=memory.available<{eviction}"
    )
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        f"/etc/eks/bootstrap.sh {cluster.name} --apiserver-endpoint {cluster.endpoint} "
        f"--b64-cluster-ca {cluster.certificate_authority} "
        f"--use-max-pods false --kubelet-extra-args '{kubelet_args}'\n"
    )
