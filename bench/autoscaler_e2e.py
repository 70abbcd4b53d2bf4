"""The autoscaler end to end on the local stack, from zero nodes: N pending pods until
all have started, then until every node is gone after the last one ended.
Run: python -m bench.autoscaler_e2e [--pods 1000]

Brings up its own local stack (local_stack/cluster.py up --ebb: the real control plane,
Ebb's scheduler and autoscaler, moto and the instance-boot bridge, with a 2 s boot
delay) in .ebb-bench on ports from EBB_BENCH_PORT_BASE (26000), creates a Spot compute
environment (optimal types, scaleDownDelaySeconds 10) and one Job of N pods (0.5 vCPU,
1 GiB, 20 s each), measures, and stops the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.admission_e2e import PORT_BASE, fresh_cluster
from ebb import keys, kube
from local_stack import builders

DELAY = 10


async def measure(kubeconfig: Path, info: dict[str, Any], pods: int) -> dict[str, float]:
    access = kube.load_access(str(kubeconfig), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench") as client:
        await client.create(
            kube.COMPUTE_ENVIRONMENTS,
            builders.compute_environment(
                "bench",
                max_vcpus=100_000,
                instance_types=("optimal",),
                scaleDownDelaySeconds=DELAY,
                **builders.ec2_networking(info),
            ),
        )
        await client.create(kube.JOB_QUEUES, builders.job_queue("bench", "bench"))
        job = builders.job(
            "bench",
            pod_labels={keys.QUEUE_LABEL: "bench"},
            run_seconds=20,
            parallelism=pods,
            completions=pods,
            indexed=True,
            cpu="500m",
            memory="1Gi",
            tolerations=[keys.BATCH_TOLERATION],
            nodeSelector={keys.COMPUTE_ENVIRONMENT_LABEL: "bench"},
        )
        start = time.monotonic()
        await client.create(kube.JOBS, job, "default")
        started = await _until(lambda: _count_started(client, pods), 600)
        all_running = started - start
        ended = await _until(lambda: _job_done(client), 600)
        last_end = ended - start
        gone = await _until(lambda: _no_nodes(client), 600)
        nodes_gone = gone - ended
        return {"all_running": all_running, "last_pod_end": last_end, "zero_after": nodes_gone}


async def _until(check: Any, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(1)
    raise TimeoutError("benchmark step did not finish")


async def _count_started(client: kube.KubeClient, pods: int) -> bool:
    listed = await client.list(
        kube.PODS, "default", label_selector="batch.kubernetes.io/job-name=bench"
    )
    started = sum(1 for p in listed.items if p.get("status", {}).get("startTime"))
    bound = sum(1 for p in listed.items if p.get("spec", {}).get("nodeName"))
    nodes = len((await client.list(kube.NODES)).items)
    print(
        f"  {time.strftime('%H:%M:%S')} pods {len(listed.items)}, bound {bound}, "
        f"started {started}, nodes {nodes}",
        file=sys.stderr,
        flush=True,
    )
    return started >= pods


async def _job_done(client: kube.KubeClient) -> bool:
    job = await client.get(kube.JOBS, "bench", "default")
    return any(c["type"] == "Complete" for c in job.get("status", {}).get("conditions") or ())


async def _no_nodes(client: kube.KubeClient) -> bool:
    listed = await client.list(kube.NODES, label_selector=f"{keys.COMPUTE_ENVIRONMENT_LABEL}=bench")
    return not listed.items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    args = parser.parse_args()
    with fresh_cluster(PORT_BASE, "--ebb") as state:
        info = json.loads((state / "aws.json").read_text())
        result = asyncio.run(measure(state / "kubeconfig", info, args.pods))
    print(f"{args.pods} pods from zero nodes, all started: {result['all_running']:.1f} s")
    print(f"last pod ended at: {result['last_pod_end']:.1f} s after submission")
    print(
        f"all nodes gone {result['zero_after']:.1f} s after the last pod ended "
        f"(scale-down delay {DELAY} s; goal <= {DELAY + 15} s)"
    )


if __name__ == "__main__":
    main()
