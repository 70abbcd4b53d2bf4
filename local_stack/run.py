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
   a summary: a table of the jobs (queue, state, attempts, why) and the story checked
   against what the README says happens (which failures are intended). It writes
   out/ebb-run.json and out/ebb-run.png (vCPUs requested vs provisioned over time by
   capacity type, job starts and ends, the Spot reclaim marked).
4. Stops everything it started, unless --keep (`make run KEEP=1`).

Every run starts from an empty cluster (`local_stack.cluster up --fresh`): one left up by
`make run KEEP=1`, or by a run that was killed, is stopped and its data deleted first.
A failure ends the run with a sentence saying what failed and what to do, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ebb import keys, kube
from ebb.catalog import shipped_catalog
from ebb.resources import pod_requests
from kubectl_ebb.output import STATES, table
from local_stack import ROOT, interrupt
from local_stack.cluster import binaries_path

CLUSTER = [sys.executable, "-m", "local_stack.cluster"]
EXAMPLES = ROOT / "manifests" / "examples"
TERMINAL = ("SUCCEEDED", "FAILED")
WAITING = tuple(s for s in STATES if s not in TERMINAL)  # all zero once every job is done
CATALOG = shipped_catalog()
VICTIM = "spot-victim"
NOTICE_SECONDS = 10  # EC2 gives two minutes; the demo has no time to wait that long
# The failures the workload is written to have (manifests/examples/workload, README):
# every other job must SUCCEED.
INTENDED_FAILURES = {
    "flaky": "it exits with code 2, which its retry strategy says not to retry",
    "publish": "it depends on flaky succeeding (afterok), so it fails without starting",
}
# After capacity is back at zero, the seconds allowed for the queues' and compute
# environments' published counts to follow.
SETTLE_SECONDS = 30


class DemoFailed(Exception):
    """The demo could not go on or did not go as the README says: a sentence for the user."""


@dataclass
class Interruption:
    instance: str
    node: str
    warned_at: float  # seconds into the run: the interruption warning was sent
    reclaimed_at: float | None = None  # the instance was terminated
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A job at the end of the run, as its Job shows it (annotations and status)."""

    name: str
    queue: str
    state: str
    attempts: int  # pods that ran to an end: status.succeeded + status.failed
    reason: str
    status_reasons: tuple[str, ...]  # each recorded attempt's status reason, oldest first
    children: int | None  # an array job's size


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
    interruption: Interruption | None = None
    all_done_at: float | None = None
    zero_at: float | None = None
    # What is not yet zero in the published counts (queue or CE → field → value).
    counts_left: dict[str, dict[str, int]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

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
    if run.interruption:
        i = run.interruption
        when = f"reclaimed at {i.reclaimed_at:.0f} s" if i.reclaimed_at else "notice given"
        lines.append(
            f"Spot interruption injected: {i.instance} (node {i.node}, job {VICTIM}), {when}"
        )
    text = "\n".join(lines)
    return ("\x1b[H\x1b[J" + text) if tty else text.splitlines()[0]


async def interrupt_victim(client: kube.KubeClient, run: Run, info: dict[str, Any]) -> None:
    """Once the victim runs, reclaim its Spot instance as EC2 would (10 s notice)."""
    if run.interruption:
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
        reclaim = interrupt.command(
            instance,
            endpoint=info["endpoint"],
            queue_url=info["queueUrl"],
            notice_seconds=NOTICE_SECONDS,
        )
        proc = await asyncio.create_subprocess_exec(
            *reclaim,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        run.interruption = Interruption(instance, pod["spec"]["nodeName"], run.elapsed())
        task = asyncio.create_task(reclaimed(proc, run.interruption, run))
        run.tasks.add(task)
        task.add_done_callback(run.tasks.discard)
        return


async def reclaimed(proc: asyncio.subprocess.Process, interruption: Interruption, run: Run) -> None:
    """Stamps the moment local_stack.interrupt has terminated the instance (it then exits)."""
    _, err = await proc.communicate()
    if proc.returncode == 0:
        interruption.reclaimed_at = run.elapsed()
    else:
        interruption.error = (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]


async def counts_left(client: kube.KubeClient) -> dict[str, dict[str, int]]:
    """What the queues and compute environments still count that should be zero once
    every job is done and capacity is back to zero."""
    left: dict[str, dict[str, int]] = {}
    for queue in (await client.list(kube.JOB_QUEUES)).items:
        jobs = (queue.get("status") or {}).get("jobs") or {}
        waiting = {s: int(jobs.get(s, 0)) for s in WAITING if jobs.get(s, 0)}
        if waiting:
            left[f"queue {queue['metadata']['name']}"] = waiting
    for ce in (await client.list(kube.COMPUTE_ENVIRONMENTS)).items:
        status = ce.get("status") or {}
        fields = ("desiredvCpus", "currentvCpus", "nodes", "pendingPods")
        busy = {f: int(status.get(f, 0)) for f in fields if status.get(f, 0)}
        if busy:
            left[f"compute environment {ce['metadata']['name']}"] = busy
    return left


async def watch(
    state: Path, info: dict[str, Any], names: list[str], timeout: float
) -> tuple[Run, list[Outcome]]:
    access = kube.load_access(str(state / "kubeconfig"), None, {})
    run = Run()
    tty = sys.stdout.isatty()
    async with kube.KubeClient(access, user_agent="ebb-run") as client:
        last_line = 0.0
        while run.elapsed() < timeout:
            by_queue, nodes = await sample(client, run)
            await interrupt_victim(client, run, info)
            text = view(run, by_queue, len(names), tty)
            if tty or run.elapsed() - last_line >= 10:
                print(text, flush=True)
                last_line = run.elapsed()
            finished = sum(s[t] for s in by_queue.values() for t in TERMINAL) >= len(names)
            if finished and run.all_done_at is None:
                run.all_done_at = run.elapsed()
            if finished and nodes == 0:
                run.zero_at = run.zero_at or run.elapsed()
                run.counts_left = await counts_left(client)
                if not run.counts_left or run.elapsed() - run.zero_at >= SETTLE_SECONDS:
                    break
            await asyncio.sleep(2)
        await asyncio.gather(*run.tasks)  # the interruption, long over by now
        return run, await outcomes(client, names)


async def outcomes(client: kube.KubeClient, names: list[str]) -> list[Outcome]:
    """Each job of the workload as its Job shows it, in the order it was submitted."""
    jobs = {
        j["metadata"]["name"]: j
        for j in (await client.list(kube.JOBS, "default", label_selector=keys.QUEUE_LABEL)).items
    }
    found = []
    for name in names:
        job = jobs.get(name)
        if job is None:
            continue
        annotations = job["metadata"].get("annotations") or {}
        spec, status = job["spec"], job.get("status") or {}
        records = json.loads(annotations.get(keys.ATTEMPTS) or "[]")
        found.append(
            Outcome(
                name=name,
                queue=job["metadata"]["labels"][keys.QUEUE_LABEL],
                state=annotations.get(keys.STATE, "SUBMITTED"),
                attempts=int(status.get("succeeded", 0)) + int(status.get("failed", 0)),
                reason=annotations.get(keys.REASON, ""),
                status_reasons=tuple(str(a.get("statusReason", "")) for a in records),
                children=spec.get("completions")
                if spec.get("completionMode") == "Indexed"
                else None,
            )
        )
    return found


def reclaimed_reason(instance: str) -> str:
    """The status reason AWS Batch gives an attempt whose host was reclaimed."""
    return f"Host EC2 (instance {instance}) terminated."


# One function: a flat checklist of the README's story, read in the story's order.
def story(  # noqa: C901
    run: Run, jobs: list[Outcome], names: list[str]
) -> tuple[list[str], list[str]]:
    """The README's story checked against what happened: (what went as intended, what
    did not)."""
    ok: list[str] = []
    problems: list[str] = []
    by_name = {j.name: j for j in jobs}
    problems += [f"job {n} is gone (it was submitted)" for n in names if n not in by_name]
    if run.all_done_at is None:
        busy = ", ".join(f"{j.name} {j.state}" for j in jobs if j.state not in TERMINAL)
        problems.append(f"not every job finished within the timeout ({busy})")
    for job in jobs:
        expected = "FAILED" if job.name in INTENDED_FAILURES else "SUCCEEDED"
        if job.state in TERMINAL and job.state != expected:
            problems.append(f"{job.name} ended {job.state}, not {expected}: {job.reason}")
    flaky, publish, victim = by_name.get("flaky"), by_name.get("publish"), by_name.get(VICTIM)
    if flaky and flaky.state == "FAILED":
        if flaky.attempts == 1:
            ok.append(f"flaky FAILED after 1 attempt, as intended: {INTENDED_FAILURES['flaky']}.")
        else:
            problems.append(
                f"flaky took {flaky.attempts} attempts; its EXIT rule for exit code 2 should "
                "stop it after 1"
            )
    if publish and publish.state == "FAILED":
        if "flaky" in publish.reason and publish.attempts == 0:
            ok.append(f"publish FAILED without starting, as intended: {publish.reason}.")
        else:
            problems.append(
                f"publish should fail without starting, naming flaky; it took "
                f"{publish.attempts} attempt(s) and says: {publish.reason}"
            )
    interruption = run.interruption
    if interruption is None:
        problems.append(f"no Spot interruption was injected ({VICTIM} never ran on an instance)")
    elif interruption.error or interruption.reclaimed_at is None:
        problems.append(f"reclaiming {interruption.instance} failed: {interruption.error}")
    elif victim and victim.state == "SUCCEEDED":
        expected_reason = reclaimed_reason(interruption.instance)
        first = victim.status_reasons[0] if victim.status_reasons else "(none recorded)"
        if victim.attempts == 2 and first == expected_reason:
            ok.append(
                f"{VICTIM}'s Spot instance {interruption.instance} was reclaimed at "
                f'{interruption.reclaimed_at:.0f} s; attempt 1 ended "{first}" and the retry '
                "SUCCEEDED, as intended."
            )
        else:
            problems.append(
                f'{VICTIM} took {victim.attempts} attempt(s) with attempt 1 ending "{first}"; '
                f'the story is 2: one ending "{expected_reason}", then the retry'
            )
    others = [j for j in jobs if j.name not in INTENDED_FAILURES and j.name != VICTIM]
    if others and all(j.state == "SUCCEEDED" for j in others):
        retried = [
            f"{j.name}: {j.attempts - j.children} of its {j.children} children"
            for j in others
            if j.children and j.attempts > j.children
        ]
        ok.append(
            f"The other {len(others)} jobs SUCCEEDED"
            + (
                f" (retried, as their retry strategies allow: {'; '.join(retried)}; children"
                " on the reclaimed instance end with it)"
                if retried
                else ""
            )
            + "."
        )
    if run.zero_at is None:
        problems.append("capacity did not come back to zero within the timeout")
    elif run.counts_left:
        problems += [
            f"{what} still counts "
            + ", ".join(f"{field} {n}" for field, n in counts.items())
            + f" {SETTLE_SECONDS} s after the last node went"
            for what, counts in sorted(run.counts_left.items())
        ]
    elif run.all_done_at is not None:
        ok.append(
            f"Capacity back to zero {run.zero_at - run.all_done_at:.0f} s after the last job "
            "ended; every queue and compute environment counts 0 jobs waiting or running, "
            "0 vCPUs, 0 nodes and 0 pending pods."
        )
    return ok, problems


def jobs_table(jobs: list[Outcome]) -> str:
    rows = []
    for job in jobs:
        why = job.reason
        if job.status_reasons and job.attempts > 1 and job.children is None:
            why += f"; attempt 1: {job.status_reasons[0]}"
        if job.name in INTENDED_FAILURES:
            why += "  (intended)"
        attempts = f"{job.attempts} ({job.children} children)" if job.children else job.attempts
        rows.append([job.name, job.queue, job.state, attempts, why])
    return table(rows, ["JOB", "QUEUE", "STATE", "ATTEMPTS", "WHY"])


def summary(run: Run, jobs: list[Outcome], problems: list[str], out: Path) -> dict[str, Any]:
    hours: dict[str, float] = {}
    for name, (first, instance_type, capacity_type) in run.node_first_seen.items():
        key = f"{instance_type} ({capacity_type})"
        hours[key] = hours.get(key, 0.0) + (run.node_gone.get(name, run.elapsed()) - first) / 3600
    finals: dict[str, int] = {}
    for job in jobs:
        finals[job.state] = finals.get(job.state, 0) + 1
    result = {
        "jobs": finals,
        "job_states": {j.name: j.state for j in jobs},
        "job_details": [asdict(j) for j in jobs],
        "intended_failures": INTENDED_FAILURES,
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
        "counts_left": run.counts_left,
        "spot_interruption": asdict(run.interruption) if run.interruption else None,
        "story_problems": problems,
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
    ax.grid(alpha=0.3)
    interruption = run.interruption
    if interruption is not None:
        ax.axvline(interruption.warned_at, color="tab:red", linestyle=":", linewidth=1)
        if interruption.reclaimed_at is not None:
            for axis in (ax, jobs_ax):
                axis.axvline(interruption.reclaimed_at, color="tab:red", linewidth=1.5)
            ax.annotate(
                f"Spot instance {interruption.instance} reclaimed\n"
                f"({VICTIM} was running there)\n"
                f"dotted: interruption notice, {NOTICE_SECONDS} s before",
                xy=(interruption.reclaimed_at, 0.97),
                xycoords=("data", "axes fraction"),
                xytext=(6, 0),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="tab:red",
            )
    ax.legend(loc="center right", fontsize=8)
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
    proc = subprocess.run(
        ["kubectl", *args], input=text, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise DemoFailed(f"`kubectl {' '.join(args)}` failed: {said[0]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--state-dir", default=os.environ.get("EBB_STATE_DIR", str(ROOT / ".ebb")))
    parser.add_argument("--port-base", default=os.environ.get("EBB_PORT_BASE", "16000"))
    parser.add_argument("--out", default=os.environ.get("EBB_RUN_OUT", str(ROOT / "out")))
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    flags = [f"--state-dir={state}", f"--port-base={args.port_base}"]
    logs = state / "logs"
    keep = args.keep
    failure, code, started = "", 1, False
    try:
        up = subprocess.run([*CLUSTER, "up", "--ebb", "--fresh", *flags], check=False)
        started = up.returncode == 0
        if not started:
            keep = False  # nothing worth keeping: stop whatever did start
            raise DemoFailed(
                "the local cluster did not start (local_stack.cluster says why above). "
                "If a port is taken, choose others, e.g. EBB_PORT_BASE=20000 make run"
            )
        _demo(state, Path(args.out), args.timeout, keep)
    except DemoFailed as failed:
        failure = f"{failed}."
    except KeyboardInterrupt:
        failure, code = "interrupted.", 130
    except Exception as error:  # a bug in the demo: its traceback goes to a file
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "run-error.txt").write_text(traceback.format_exc())
        failure = (
            f"it stopped on an unexpected error ({type(error).__name__}: {error}); "
            f"the traceback is in {logs / 'run-error.txt'}. Please report it."
        )
    finally:
        stopped = keep or subprocess.run([*CLUSTER, "down", *flags], check=False).returncode == 0
    if not stopped and not failure:
        failure = "stopping the cluster failed (local_stack.cluster says what is left above)."
    if not failure:
        return 0
    if not started:
        then = ""
    elif keep:
        then = f"\nThe cluster is left up to look into (make down stops it); logs: {logs}."
    else:
        then = f"\nmake run KEEP=1 leaves the cluster up to look into; logs: {logs}."
    print(f"\nmake run failed: {failure}{then}", file=sys.stderr)
    return code


def _demo(state: Path, out: Path, timeout: float, keep: bool) -> None:
    path = binaries_path()
    env = {
        **os.environ,
        "KUBECONFIG": str(state / "kubeconfig"),
        "PATH": path + os.pathsep + os.environ.get("PATH", ""),
    }
    info = json.loads((state / "aws.json").read_text())
    kubectl(env, "apply", "-f", "-", text=render_environments(info))
    print("compute environments and queues applied (manifests/examples/environments.yaml)")
    created = kubectl(env, "create", "-f", str(EXAMPLES / "workload"))
    names = [line.split()[0].split("/")[-1] for line in created.splitlines() if "created" in line]
    print(
        f"workload submitted with kubectl create -f manifests/examples/workload/: {len(names)} jobs"
    )
    run, jobs = asyncio.run(watch(state, info, names, timeout))
    ok, problems = story(run, jobs, names)
    result = summary(run, jobs, problems, out)
    plot(run, out / "ebb-run.png")
    print("\nSummary\n")
    print("\n".join(f"  {line}" for line in jobs_table(jobs).splitlines()))
    print()
    print(
        "  jobs:              " + ", ".join(f"{n} {s}" for s, n in sorted(result["jobs"].items()))
    )
    print(
        "  instance-hours:    "
        + (", ".join(f"{h:.4f} {k}" for k, h in result["instance_hours"].items()) or "none")
    )
    print(f"  cost:              ${result['cost_usd']:.4f}")
    print(
        f"  peak nodes:        {result['peak_nodes']} "
        f"({result['peak_provisioned_vcpus']:.0f} vCPUs)"
    )
    print(
        f"  all jobs done at:  {result['all_jobs_done_s']:.0f} s"
        if result["all_jobs_done_s"] is not None
        else "  all jobs done:     not within the timeout"
    )
    if result["scale_to_zero_after_last_job_s"] is not None:
        print(
            f"  back to zero:      {result['scale_to_zero_after_last_job_s']:.0f} s after the "
            "last job ended"
        )
    print(f"  written:           {out / 'ebb-run.json'}, {out / 'ebb-run.png'}")
    print("\nAs intended:")
    print("\n".join(f"  - {line}" for line in ok) or "  (nothing)")
    if problems:
        print("\nNOT as intended:\n" + "\n".join(f"  - {p}" for p in problems))
    if keep:
        print(
            f"\nThe cluster keeps running:\n  export KUBECONFIG={state / 'kubeconfig'}\n"
            f"  export PATH={Path(sys.executable).parent}:{path}:$PATH\n"
            "  kubectl ebb queues; kubectl ebb jobs; kubectl ebb why <job>\n"
            "Stop it with: make down (the next make run starts a fresh one either way)"
        )
    if problems:
        raise DemoFailed(
            f"the demo did not go as the README describes ({len(problems)} "
            f"problem{'s' if len(problems) > 1 else ''} listed above)"
        )


if __name__ == "__main__":
    sys.exit(main())
