"""Restart safety: the scheduler daemon killed (-9) mid-workload loses nothing and
admits nothing twice."""

from __future__ import annotations

import asyncio

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import annotation, batch_env, unique
from local_stack.harness import Process, wait_for


async def test_kill_minus_9_mid_workload_loses_nothing(
    kube_client: kube.KubeClient, namespace: str, scheduler_daemon: Process
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=4, node_cpu="8")
        q = await env.queue(unique("q"), [ce])
        bodies = [builders.job(f"j{i}", q, run_seconds=1.5) for i in range(30)]
        bodies += [
            builders.job(f"d{i}", q, run_seconds=1, annotations={keys.DEPENDS_ON: f"j{i}"})
            for i in range(10)
        ]
        bodies.append(
            builders.job("arr", q, completions=8, parallelism=8, indexed=True, run_seconds=1)
        )
        await asyncio.gather(*(kube_client.create(kube.JOBS, b, namespace) for b in bodies))

        async def some_running() -> bool:
            jobs = await kube_client.list(kube.JOBS, namespace)
            return sum(annotation(j, keys.STATE) == "SUCCEEDED" for j in jobs.items) >= 5

        await wait_for(some_running, 60, message="a few jobs done before the kill")
        for _ in range(2):
            scheduler_daemon.kill()
            await asyncio.sleep(2)
            scheduler_daemon.start()
            await asyncio.sleep(3)

        async def all_succeeded() -> bool:
            jobs = await kube_client.list(kube.JOBS, namespace)
            return all(annotation(j, keys.STATE) == "SUCCEEDED" for j in jobs.items)

        await wait_for(all_succeeded, 180, interval=1, message="every job SUCCEEDED")
        jobs = await kube_client.list(kube.JOBS, namespace)
        assert len(jobs.items) == len(bodies)
        pods = await kube_client.list(kube.PODS, namespace)
        per_job: dict[str, int] = {}
        for pod in pods.items:
            name = pod["metadata"]["labels"]["job-name"]
            per_job[name] = per_job.get(name, 0) + 1
        # Exactly one pod per job (and per array child): nothing ran twice.
        assert {k: v for k, v in per_job.items() if k != "arr"} == dict.fromkeys(
            [b["metadata"]["name"] for b in bodies if b["metadata"]["name"] != "arr"], 1
        )
        assert per_job["arr"] == 8
