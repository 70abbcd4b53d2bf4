"""`make run`: Ebb end to end on one machine, from zero capacity and back to zero.

1. Brings up the real control plane (etcd, kube-apiserver, kube-controller-manager,
   kube-scheduler with Ebb's extender, KWOK) and Ebb: the scheduler daemon, the
   autoscaler against a local EC2/SQS (moto), and the bridge that boots its instances
   into KWOK nodes.
2. Applies the example compute environments and queues
   (manifests/examples/environments.yaml) and submits the example workload with plain
   `kubectl create -f manifests/examples/workload/`: a 200-task array job, a job that
   depends on it, a GPU job, an afterany report, a job that fails and fails its
   afterok dependent, a competing team's sweep, and a job whose Spot instance is
   reclaimed mid-run (injected here) and which is retried.
3. Shows a live view until every job has finished and capacity is back to zero, then
   a summary, and writes out/ebb-run.json and out/ebb-run.png (vCPUs requested vs
   provisioned over time by capacity type, job starts and ends marked).
4. Stops everything it started, unless --keep (`make run KEEP=1`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ebb import keys, kube  # noqa: E402
from ebb.catalog import shipped_catalog  # noqa: E402
from ebb.resources import pod_requests  # noqa: E402

CLUSTER = [sys.executable, str(ROOT / "hack" / "cluster.py")]
EXAMPLES = ROOT / "manifests" / "examples"
TERMINAL = ("SUCCEEDED", "FAILED")
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
CATALOG = shipped_catalog()
VICTIM = "spot-victim"


@dataclass
class Sample:
    t: float
    requested: dict[str, float]  # capacity type (or "pending") → vCPUs requested by pods
    provisioned: dict[str, float]  # capacity type → vCPUs of nodes
    nodes: int
    cost: float


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    job_starts: dict[str, float] = field(default_factory=dict)
    job_ends: dict[str, float] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    node_first_seen: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    node_gone: dict[str, float] = field(default_factory=dict)
    interrupted: str | None = None
    all_done_at: float | None = None
    zero_at: float | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def render_environments(info: dict[str, Any]) -> str:
    text = (EXAMPLES / "environments.yaml").read_text()
    return (
        text.replace("${SUBNETS}", json.dumps(info["subnets"]))
        .replace("${SECURITY_GROUP}", info["securityGroup"])
        .replace("${INSTANCE_ROLE}", info["instanceRole"])
    )


def node_price(node: dict[str, Any]) -> tuple[float, float, str]:
    """(vCPUs, USD/hour, capacity type) of a batch node, from the catalog."""
    labels = node["metadata"].get("labels") or {}
    capacity_type = labels.get(keys.CAPACITY_TYPE_LABEL, keys.CAPACITY_ON_DEMAND)
    instance = CATALOG.get(labels.get(keys.INSTANCE_TYPE_LABEL, ""))
    if instance is None:
        return 0.0, 0.0, capacity_type
    return float(instance.vcpus), instance.price(capacity_type), capacity_type


async def sample(client: kube.KubeClient, run: Run) -> tuple[dict[str, dict[str, int]], int]:
    """One look at the cluster: record it, and return jobs by queue and state."""
    now = run.elapsed()
    jobs = (await client.list(kube.JOBS, "default", label_selector=keys.QUEUE_LABEL)).items
    pods = (await client.list(kube.PODS, "default", label_selector=keys.QUEUE_LABEL)).items
    nodes = [
        n
        for n in (await client.list(kube.NODES)).items
        if keys.COMPUTE_ENVIRONMENT_LABEL in (n["metadata"].get("labels") or {})
    ]
    by_queue: dict[str, dict[str, int]] = {}
    for job in jobs:
        name = job["metadata"]["name"]
        state = (job["metadata"].get("annotations") or {}).get(keys.STATE, "SUBMITTED")
        queue = job["metadata"]["labels"][keys.QUEUE_LABEL]
        by_queue.setdefault(queue, dict.fromkeys(STATES, 0))[state] += 1
        if state in ("RUNNING", *TERMINAL) and name not in run.job_starts:
            run.job_starts[name] = now
        if state in TERMINAL and name not in run.job_ends:
            run.job_ends[name] = now
            run.final[name] = state
    node_capacity = {}
    provisioned: dict[str, float] = {}
    seen = set()
    for node in nodes:
        name = node["metadata"]["name"]
        seen.add(name)
        vcpus, _, capacity_type = node_price(node)
        node_capacity[name] = capacity_type
        provisioned[capacity_type] = provisioned.get(capacity_type, 0.0) + vcpus
        labels = node["metadata"].get("labels") or {}
        run.node_first_seen.setdefault(
            name, (now, labels.get(keys.INSTANCE_TYPE_LABEL, "?"), capacity_type)
        )
    for name in run.node_first_seen:
        if name not in seen:
            run.node_gone.setdefault(name, now)
    requested: dict[str, float] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Pending", "Running"):
            continue
        where = node_capacity.get((pod.get("spec") or {}).get("nodeName") or "", "pending")
        vcpus = pod_requests(pod.get("spec") or {}).vcpus
        requested[where] = requested.get(where, 0.0) + vcpus
    run.samples.append(Sample(now, requested, provisioned, len(nodes), cost_so_far(run, now)))
    return by_queue, len(nodes)


def cost_so_far(run: Run, now: float) -> float:
    total = 0.0
    for name, (first, instance_type, capacity_type) in run.node_first_seen.items():
        t = CATALOG.get(instance_type)
        if t is None:
            continue
        total += (run.node_gone.get(name, now) - first) / 3600 * t.price(capacity_type)
    return total


def view(run: Run, by_queue: dict[str, dict[str, int]], total_jobs: int, tty: bool) -> str:
    last = run.samples[-1]
    done = sum(s[t] for s in by_queue.values() for t in TERMINAL)
    width = 40
    bar = "#" * int(width * done / max(total_jobs, 1))
    lines = [f"Ebb local run — {run.elapsed():5.0f} s   [{bar:<{width}}] {done}/{total_jobs} jobs"]
    lines.append("")
    lines.append(f"{'queue':10}" + "".join(f"{s:>11}" for s in STATES))
    for queue, states in sorted(by_queue.items()):
        lines.append(f"{queue:10}" + "".join(f"{states[s]:>11}" for s in STATES))
    requested = sum(last.requested.values())
    provisioned = sum(last.provisioned.values())
    lines.append("")
    lines.append(
        f"vCPUs requested {requested:6.0f}   provisioned {provisioned:6.0f} "
        f"({', '.join(f'{k} {v:.0f}' for k, v in sorted(last.provisioned.items()))})"
    )
    by_type: dict[str, int] = {}
    gone = set(run.node_gone)
    for name, (_, instance_type, capacity_type) in run.node_first_seen.items():
        if name not in gone:
            key = f"{instance_type} ({capacity_type})"
            by_type[key] = by_type.get(key, 0) + 1
    lines.append(
        f"nodes {last.nodes}: "
        + (", ".join(f"{n}× {k}" for k, n in sorted(by_type.items())) or "none")
    )
    lines.append(f"cost so far ${last.cost:.4f}")
    if run.interrupted:
        lines.append(f"Spot interruption injected: {run.interrupted}")
    text = "\n".join(lines)
    return ("\x1b[H\x1b[J" + text) if tty else text.splitlines()[0]


async def interrupt_victim(client: kube.KubeClient, run: Run, info: dict[str, Any]) -> None:
    """Once the victim runs, reclaim its Spot instance as EC2 would (10 s notice)."""
    if run.interrupted:
        return
    pods = (
        await client.list(
            kube.PODS, "default", label_selector=f"batch.kubernetes.io/job-name={VICTIM}"
        )
    ).items
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        node = await client.get_or_none(kube.NODES, pod["spec"]["nodeName"])
        provider = ((node or {}).get("spec") or {}).get("providerID", "")
        instance = provider.rsplit("/", 1)[-1]
        if not instance.startswith("i-"):
            return
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "hack" / "interrupt.py"),
            instance,
            f"--aws-endpoint-url={info['endpoint']}",
            f"--queue-url={info['queueUrl']}",
            "--notice-seconds=10",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run.interrupted = f"{instance} (node {pod['spec']['nodeName']}, job {VICTIM})"
        return


async def watch(state: Path, info: dict[str, Any], total_jobs: int, timeout: float) -> Run:
    access = kube.load_access(str(state / "kubeconfig"), None, {})
    run = Run()
    tty = sys.stdout.isatty()
    async with kube.KubeClient(access, user_agent="ebb-run") as client:
        last_line = 0.0
        while run.elapsed() < timeout:
            by_queue, nodes = await sample(client, run)
            await interrupt_victim(client, run, info)
            text = view(run, by_queue, total_jobs, tty)
            if tty or run.elapsed() - last_line >= 10:
                print(text, flush=True)
                last_line = run.elapsed()
            finished = sum(s[t] for s in by_queue.values() for t in TERMINAL) >= total_jobs
            if finished and run.all_done_at is None:
                run.all_done_at = run.elapsed()
            if finished and nodes == 0:
                run.zero_at = run.elapsed()
                break
            await asyncio.sleep(2)
    return run


def summary(run: Run, out: Path) -> dict[str, Any]:
    hours: dict[str, float] = {}
    for name, (first, instance_type, capacity_type) in run.node_first_seen.items():
        key = f"{instance_type} ({capacity_type})"
        hours[key] = hours.get(key, 0.0) + (run.node_gone.get(name, run.elapsed()) - first) / 3600
    finals: dict[str, int] = {}
    for state in run.final.values():
        finals[state] = finals.get(state, 0) + 1
    result = {
        "jobs": finals,
        "job_states": run.final,
        "instance_hours": {k: round(v, 4) for k, v in sorted(hours.items())},
        "cost_usd": round(cost_so_far(run, run.elapsed()), 4),
        "peak_nodes": max((s.nodes for s in run.samples), default=0),
        "peak_provisioned_vcpus": max(
            (sum(s.provisioned.values()) for s in run.samples), default=0
        ),
        "all_jobs_done_s": run.all_done_at,
        "back_to_zero_s": run.zero_at,
        "scale_to_zero_after_last_job_s": (run.zero_at - run.all_done_at)
        if run.zero_at is not None and run.all_done_at is not None
        else None,
        "spot_interruption": run.interrupted,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ebb-run.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in run.samples]
    fig, (ax, jobs_ax) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    kinds = sorted({k for s in run.samples for k in s.provisioned} | {"spot", "on-demand"})
    colors = {"spot": "tab:blue", "on-demand": "tab:orange", "pending": "tab:gray"}
    for kind in kinds:
        ax.step(
            t,
            [s.provisioned.get(kind, 0) for s in run.samples],
            where="post",
            color=colors.get(kind),
            linewidth=2,
            label=f"provisioned ({kind})",
        )
        ax.step(
            t,
            [s.requested.get(kind, 0) for s in run.samples],
            where="post",
            color=colors.get(kind),
            linestyle="--",
            label=f"requested on {kind}",
        )
    ax.step(
        t,
        [s.requested.get("pending", 0) for s in run.samples],
        where="post",
        color=colors["pending"],
        linestyle=":",
        label="requested, not yet placed",
    )
    ax.set_ylabel("vCPUs")
    ax.set_title("Ebb local run: capacity rises from zero with the work and ebbs back")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    names = sorted(run.job_starts, key=lambda n: run.job_starts[n])
    for row, name in enumerate(names):
        start, end = run.job_starts[name], run.job_ends.get(name, run.elapsed())
        color = "tab:red" if run.final.get(name) == "FAILED" else "tab:green"
        jobs_ax.plot([start, end], [row, row], color=color, linewidth=3)
        jobs_ax.text(start, row + 0.3, name, fontsize=6)
    jobs_ax.set_yticks([])
    jobs_ax.set_ylabel("jobs")
    jobs_ax.set_xlabel("seconds since the workload was submitted")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def kubectl(env: dict[str, str], *args: str, text: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args], input=text, env=env, check=True, capture_output=True, text=True
    ).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--state-dir", default=os.environ.get("EBB_STATE_DIR", str(ROOT / ".ebb")))
    parser.add_argument("--port-base", default=os.environ.get("EBB_PORT_BASE", "16000"))
    parser.add_argument("--out", default=os.environ.get("EBB_RUN_OUT", str(ROOT / "out")))
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    flags = [f"--state-dir={state}", f"--port-base={args.port_base}"]
    subprocess.run([*CLUSTER, "up", "--ebb", *flags], check=True)
    try:
        return _demo(state, Path(args.out), args.timeout, args.keep)
    finally:
        if not args.keep:
            subprocess.run([*CLUSTER, "down", *flags], check=False)


def _demo(state: Path, out: Path, timeout: float, keep: bool) -> int:
    path = subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh"), "--print-path"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    env = {
        **os.environ,
        "KUBECONFIG": str(state / "kubeconfig"),
        "PATH": path + os.pathsep + os.environ.get("PATH", ""),
    }
    info = json.loads((state / "aws.json").read_text())
    kubectl(env, "apply", "-f", "-", text=render_environments(info))
    print("compute environments and queues applied (manifests/examples/environments.yaml)")
    created = kubectl(env, "create", "-f", str(EXAMPLES / "workload"))
    total = created.count("created")
    print(f"workload submitted with kubectl create -f manifests/examples/workload/: {total} jobs")
    run = asyncio.run(watch(state, info, total, timeout))
    result = summary(run, out)
    plot(run, out / "ebb-run.png")
    print("\nSummary")
    print(f"  jobs:              {result['jobs']}")
    print(f"  instance-hours:    {result['instance_hours']}")
    print(f"  cost:              ${result['cost_usd']:.4f}")
    print(
        f"  peak nodes:        {result['peak_nodes']} "
        f"({result['peak_provisioned_vcpus']:.0f} vCPUs)"
    )
    print(
        f"  all jobs done at:  {result['all_jobs_done_s']:.0f} s"
        if result["all_jobs_done_s"]
        else "  all jobs done:     not within the timeout"
    )
    if result["scale_to_zero_after_last_job_s"] is not None:
        print(
            f"  back to zero:      {result['scale_to_zero_after_last_job_s']:.0f} s after the "
            "last job ended"
        )
    print(f"  spot interruption: {result['spot_interruption']}")
    print(f"  written: {out / 'ebb-run.json'}, {out / 'ebb-run.png'}")
    if keep:
        print(
            f"\nThe cluster keeps running:\n  export KUBECONFIG={state / 'kubeconfig'}\n"
            f"  export PATH={Path(sys.executable).parent}:{path}:$PATH\n"
            "  kubectl ebb queues; kubectl ebb jobs; kubectl ebb why <job>\n"
            "Stop it with: make down"
        )
    return 0 if result["back_to_zero_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
