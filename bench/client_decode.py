"""How long each Kubernetes client takes to turn one Pod watch event (JSON bytes) into
something the daemon can use. Run: python -m bench.client_decode

Ebb decodes with orjson and projects into a compact PodInfo; the alternatives build
their model objects. Reports the median of 7 runs of N decodes each, in microseconds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from ebb.model import pod_from_raw

INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "train-7-x8k2p",
        "namespace": "research",
        "uid": "2f1c9a7e-7b8a-4c8e-9d2a-1f0e3c4b5a69",
        "resourceVersion": "123456",
        "creationTimestamp": "2026-11-28T10:00:00Z",
        "labels": {
            "ebb.dev/queue": "high",
            "ebb.dev/share": "team-a",
            "job-name": "train-7",
            "batch.kubernetes.io/job-name": "train-7",
            "controller-uid": "7b8a",
        },
        "annotations": {"batch.kubernetes.io/job-completion-index": "7"},
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "train-7",
                "uid": "7b8a",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "finalizers": ["batch.kubernetes.io/job-tracking"],
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-28T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}},
            }
        ],
    },
    "spec": {
        "restartPolicy": "Never",
        "schedulerName": "default-scheduler",
        "nodeName": "ip-10-0-1-23.ec2.internal",
        "serviceAccountName": "default",
        "tolerations": [
            {"key": "ebb.dev/batch-node", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "containers": [
            {
                "name": "main",
                "image": "public.ecr.aws/amazonlinux/amazonlinux:2",
                "command": ["python", "train.py", "--epochs", "10"],
                "env": [
                    {"name": "AWS_BATCH_JOB_ARRAY_INDEX", "value": "7"},
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {"fieldRef": {"fieldPath": INDEX}},
                    },
                ],
                "resources": {
                    "requests": {"cpu": "2", "memory": "4Gi"},
                    "limits": {"cpu": "2", "memory": "4Gi"},
                },
                "volumeMounts": [
                    {
                        "name": "kube-api-access",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": True,
                    }
                ],
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ]
                },
            }
        ],
    },
    "status": {
        "phase": "Running",
        "hostIP": "10.0.1.23",
        "podIP": "10.1.2.3",
        "startTime": "2026-11-28T10:00:05Z",
        "qosClass": "Guaranteed",
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": "2026-11-28T10:00:05Z"}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
        "containerStatuses": [
            {
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "image": "public.ecr.aws/amazonlinux/amazonlinux:2",
                "imageID": "",
                "containerID": "containerd://abc",
                "state": {"running": {"startedAt": "2026-11-28T10:00:06Z"}},
            }
        ],
    },
}
LINE = json.dumps({"type": "MODIFIED", "object": POD}).encode()


def _ebb() -> Callable[[bytes], object]:
    def decode(line: bytes) -> object:
        return pod_from_raw(orjson.loads(line)["object"])

    return decode


def _official() -> Callable[[bytes], object]:
    from kubernetes.client import ApiClient

    api = ApiClient()

    def decode(line: bytes) -> object:
        return api._ApiClient__deserialize(json.loads(line)["object"], "V1Pod")  # what Watch does

    return decode


def _asyncio_client() -> Callable[[bytes], object]:
    import asyncio

    from kubernetes_asyncio.client import ApiClient

    async def make() -> ApiClient:
        return ApiClient()

    api = asyncio.run(make())  # it insists on a running loop; decoding needs none

    def decode(line: bytes) -> object:
        return api._ApiClient__deserialize(json.loads(line)["object"], "V1Pod")

    return decode


def _lightkube() -> Callable[[bytes], object]:
    from lightkube.resources.core_v1 import Pod

    def decode(line: bytes) -> object:
        return Pod.from_dict(json.loads(line)["object"])

    return decode


def _kr8s() -> Callable[[bytes], object]:
    from kr8s.objects import Pod

    def decode(line: bytes) -> object:
        return Pod(json.loads(line)["object"], api=object())

    return decode


CLIENTS = {
    "ebb (orjson + PodInfo)": _ebb,
    "kubernetes (official)": _official,
    "kubernetes_asyncio": _asyncio_client,
    "lightkube": _lightkube,
    "kr8s": _kr8s,
}


def measure(decode: Callable[[bytes], object], n: int = 2000, runs: int = 7) -> float:
    decode(LINE)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            decode(LINE)
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def retained_bytes(decode: Callable[[bytes], object], n: int = 2000) -> float:
    """Memory held per decoded object when n of them are kept (as a cache would)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [decode(LINE) for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / n


def main() -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    for name, factory in CLIENTS.items():
        try:
            decode = factory()
        except ImportError:
            print(f"{name:28} not installed (pip install -e '.[bench-clients]')")
            continue
        results[name] = (measure(decode), retained_bytes(decode))
    base = results.get("ebb (orjson + PodInfo)")
    print(f"{'client':28} {'decode us/event':>16} {'ratio':>7} {'bytes kept/pod':>15}")
    for name, (micros, size) in results.items():
        ratio = f"{micros / base[0]:6.1f}x" if base else ""
        print(f"{name:28} {micros:16.1f} {ratio:>7} {size:15,.0f}")
    return results


if __name__ == "__main__":
    main()
