"""kubectl-ebb: look at Ebb's queues, compute environments and jobs, ask why a job is
not running, and cancel or terminate jobs.

    kubectl ebb queues | ces | jobs [-q QUEUE] [--state S] [-A]
    kubectl ebb why JOB | describe JOB
    kubectl ebb cancel JOB --reason R | terminate JOB --reason R
    kubectl ebb submit --job-name N --job-queue Q --job-definition D[:REV] [...]
    kubectl ebb import FILE... [--dry-run -o yaml]   (AWS Batch JSON)

Tables by default; `-o json|yaml` for machines. Honours --kubeconfig, --context, -n.
It reads only what Ebb publishes on the objects, so it works from any machine that
can reach the API server, with the user's own rights: a tenant with Ebb's roles
(manifests/rbac/ebb-user-roles.yaml) sees their namespace's jobs and the queues, and
what the API server refuses them is said in a sentence naming the role that grants it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import yaml

from ebb import awsbatch_import, keys, kube
from ebb.jobdefinition import DefinitionError, split_name
from ebb.jobspec import SpecError, parse_depends_on

Json = dict[str, Any]
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
# The roles that grant what the plugin reads and writes (docs/operations.md).
VIEW_ROLE = "ClusterRole ebb-view, bound by a ClusterRoleBinding (queues are cluster-wide)"


def _edit_role(namespace: str) -> str:
    return f"ClusterRole ebb-edit, bound by a RoleBinding in namespace {namespace}"


def _who_cannot(exc: kube.ApiError) -> str:
    """The API server's 403 message from `User "x" cannot ...` on: its start names the
    object, which the sentence around it already does."""
    _, found, rest = exc.message.partition("forbidden: ")
    return rest if found else exc.message


def _annotations(obj: Json) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _age(stamp: str | None) -> str:
    if not stamp:
        return "?"
    seconds = datetime.now(UTC) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    total = int(seconds.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            return f"{total // size}{unit}"
    return f"{total}s"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    ]
    return "\n".join(lines)


def emit(data: Any, output: str | None, text: str) -> None:
    if output == "json":
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(text)


class Cli:
    def __init__(self, client: kube.KubeClient, namespace: str, output: str | None) -> None:
        self.client = client
        self.namespace = namespace
        self.output = output

    # --- listings -------------------------------------------------------------------

    async def queues(self) -> None:
        items = (await self.client.list(kube.JOB_QUEUES)).items
        rows, data = [], []
        for q in sorted(items, key=lambda q: -int(q["spec"].get("priority", 0))):
            spec, status = q["spec"], q.get("status") or {}
            counts = status.get("jobs") or {}
            order = sorted(spec.get("computeEnvironmentOrder") or (), key=lambda e: e["order"])
            ces = ",".join(e["computeEnvironment"] for e in order)
            rows.append(
                [
                    q["metadata"]["name"],
                    spec.get("state", "ENABLED"),
                    spec["priority"],
                    spec.get("schedulingPolicy") or "-",
                    ces,
                    *(counts.get(s, "-") for s in STATES),
                    status.get("status", ""),
                ]
            )
            data.append({"name": q["metadata"]["name"], "spec": spec, "status": status})
        emit(
            data,
            self.output,
            table(rows, ["NAME", "STATE", "PRIORITY", "POLICY", "ENVS", *STATES, "STATUS"]),
        )

    async def ces(self) -> None:
        items = (await self.client.list(kube.COMPUTE_ENVIRONMENTS)).items
        rows, data = [], []
        for ce in sorted(items, key=lambda c: c["metadata"]["name"]):
            spec, status = ce["spec"], ce.get("status") or {}
            rows.append(
                [
                    ce["metadata"]["name"],
                    spec["type"],
                    spec.get("state", "ENABLED"),
                    status.get("status", "-"),
                    spec.get("minvCpus", 0),
                    spec["maxvCpus"],
                    *(
                        status.get(field, "-")
                        for field in ("desiredvCpus", "currentvCpus", "nodes", "pendingPods")
                    ),
                    (status.get("statusReason") or "")[:60],
                ]
            )
            data.append({"name": ce["metadata"]["name"], "spec": spec, "status": status})
        emit(
            data,
            self.output,
            table(
                rows,
                [
                    "NAME",
                    "TYPE",
                    "STATE",
                    "STATUS",
                    "MIN",
                    "MAX",
                    "DESIRED",
                    "CURRENT",
                    "NODES",
                    "PENDING-PODS",
                    "REASON",
                ],
            ),
        )

    async def jobs(self, queue: str | None, state: str | None, all_namespaces: bool) -> None:
        selector = f"{keys.QUEUE_LABEL}={queue}" if queue else keys.QUEUE_LABEL
        namespace = None if all_namespaces else self.namespace
        items = (await self.client.list(kube.JOBS, namespace, label_selector=selector)).items
        rows, data = [], []
        for job in sorted(items, key=lambda j: j["metadata"].get("creationTimestamp", "")):
            ann, meta = _annotations(job), job["metadata"]
            if state and ann.get(keys.STATE) != state.upper():
                continue
            labels = meta.get("labels") or {}
            rows.append(
                [
                    meta["namespace"],
                    meta["name"],
                    labels.get(keys.QUEUE_LABEL, ""),
                    labels.get(keys.SHARE_LABEL, "-"),
                    ann.get(keys.STATE, "?"),
                    _age(meta.get("creationTimestamp")),
                    ann.get(keys.REASON, "")[:80],
                ]
            )
            data.append(
                {
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "queue": labels.get(keys.QUEUE_LABEL),
                    "state": ann.get(keys.STATE),
                    "reason": ann.get(keys.REASON),
                    "reasonCode": ann.get(keys.REASON_CODE),
                }
            )
        emit(
            data,
            self.output,
            table(rows, ["NAMESPACE", "NAME", "QUEUE", "SHARE", "STATE", "AGE", "REASON"]),
        )

    # --- one job --------------------------------------------------------------------

    async def _job(self, name: str) -> Json:
        job = await self.client.get_or_none(kube.JOBS, name, self.namespace)
        if job is None:
            raise SystemExit(f"error: job {self.namespace}/{name} not found")
        if keys.QUEUE_LABEL not in (job["metadata"].get("labels") or {}):
            raise SystemExit(
                f"error: job {self.namespace}/{name} is not in an Ebb queue "
                f"(no {keys.QUEUE_LABEL} label)"
            )
        return job

    async def why(self, name: str) -> None:
        job = await self._job(name)
        chain = await self.reason_chain(job)
        emit(
            {"job": f"{self.namespace}/{name}", "why": chain},
            self.output,
            "\n".join(
                f"{'  ' * depth}{line}" for depth, line in ((c["depth"], c["text"]) for c in chain)
            ),
        )

    async def reason_chain(self, job: Json) -> list[Json]:
        """Why the job is where it is, from its own reason down to what blocks it."""
        ann = _annotations(job)
        state = ann.get(keys.STATE, "SUBMITTED")
        queue_name = job["metadata"]["labels"][keys.QUEUE_LABEL]
        out = [{"depth": 0, "text": f"{state}: {ann.get(keys.REASON, 'no reason published yet')}"}]

        def add(depth: int, text: str) -> None:
            out.append({"depth": depth, "text": text})

        if state == "PENDING":
            await self._dependencies(ann, add)
        queue = await self._visible_queue(queue_name, add)
        # A job RUNNABLE between attempts keeps its admission: what it waits for is the
        # Job controller's next pod, not its queue.
        retrying = ann.get(keys.REASON_CODE) == keys.RETRY_WAIT_CODE
        if queue and state in ("RUNNABLE", "STARTING", "SUBMITTED") and not retrying:
            await self._queue(queue, job, add)
        if ann.get(keys.NODES) and state in ("RUNNABLE", "STARTING"):
            await self._gang(job, queue, add)
        if state in ("STARTING", "RUNNING", "FAILED") or retrying:
            await self._pods(job, add)
        if queue and state == "STARTING":
            for ce in self._environments(queue):
                await self._autoscaler(ce, add)
        return out

    async def _visible_queue(self, name: str, add: Any) -> Json | None:
        """The job's queue, or None and a line saying it is gone or not the user's to read
        (a tenant without ebb-view still learns about their own job and its pods)."""
        try:
            queue = await self.client.get_or_none(kube.JOB_QUEUES, name)
        except kube.ApiError as exc:
            if not exc.forbidden:
                raise
            add(1, f"queue {name}: not visible to you; reading it takes {VIEW_ROLE}")
            return None
        if queue is None:
            add(1, f"queue {name} does not exist")
        return queue

    async def _dependencies(self, ann: dict[str, str], add: Any) -> None:
        try:
            deps = parse_depends_on(ann.get(keys.DEPENDS_ON))
        except SpecError as exc:
            add(1, f"invalid dependency annotation: {exc}")
            return
        for dep in deps:
            other = await self.client.get_or_none(kube.JOBS, dep.job, self.namespace)
            if other is None:
                add(1, f"{dep.type.value} {dep.job}: not created yet")
                continue
            other_ann = _annotations(other)
            add(
                1,
                f"{dep.type.value} {dep.job}: {other_ann.get(keys.STATE, '?')} — "
                f"{other_ann.get(keys.REASON, '')}",
            )

    @staticmethod
    def _environments(queue: Json) -> list[str]:
        order = sorted(queue["spec"].get("computeEnvironmentOrder") or (), key=lambda e: e["order"])
        return [e["computeEnvironment"] for e in order]

    async def _queue(self, queue: Json, job: Json, add: Any) -> None:
        spec, status = queue["spec"], queue.get("status") or {}
        add(
            1,
            f"queue {queue['metadata']['name']}: priority {spec['priority']}, "
            f"{spec.get('state', 'ENABLED')}, {status.get('status', 'VALID')} "
            f"{status.get('statusReason', '')}".rstrip(),
        )
        counts = status.get("jobs") or {}
        if counts:
            add(2, "jobs: " + ", ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s)))
        if spec.get("schedulingPolicy"):
            share = (job["metadata"].get("labels") or {}).get(keys.SHARE_LABEL, "")
            policy = await self.client.get_or_none(
                kube.SCHEDULING_POLICIES, spec["schedulingPolicy"]
            )
            weight = 1.0
            for entry in (policy or {}).get("spec", {}).get("fairsharePolicy", {}).get(
                "shareDistribution"
            ) or ():
                if entry["shareIdentifier"] == share:
                    weight = float(entry.get("weightFactor", 1.0))
            usage = (status.get("shareUsage") or {}).get("vcpuSeconds") or {}
            add(
                2,
                f"fair share {spec['schedulingPolicy']}: share {share or '(none)'} weight "
                f"{weight:g}, decayed usage {usage.get(share, 0):.0f} vCPU-s",
            )
        for ce in self._environments(queue):
            raw = await self.client.get_or_none(kube.COMPUTE_ENVIRONMENTS, ce)
            if raw is None:
                add(2, f"compute environment {ce}: does not exist")
                continue
            ce_spec, ce_status = raw["spec"], raw.get("status") or {}
            add(
                2,
                f"compute environment {ce}: {ce_spec.get('state', 'ENABLED')}, "
                f"{ce_status.get('status', 'not validated yet')}, maxvCpus "
                f"{ce_spec['maxvCpus']}, {ce_status.get('currentvCpus', 0)} vCPUs running",
            )

    async def _pods(self, job: Json, add: Any) -> None:
        for pod in (await self._job_pods(job["metadata"]["name"]))[-10:]:
            status = pod.get("status") or {}
            line = f"pod {pod['metadata']['name']}: {status.get('phase', '?')}"
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                line += f" on {node}"
            for cond in status.get("conditions") or ():
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    line += f" — not scheduled: {cond.get('message', cond.get('reason', ''))}"
            if (pod.get("spec") or {}).get("schedulingGates"):
                line += " — gated until its n_to_n dependency index succeeds"
            add(1, line)

    async def _gang(self, job: Json, queue: Json | None, add: Any) -> None:
        """What a multi-node job waits for: every pod of its attempt bound, one per node,
        together; the launches for it (the autoscaler names the job in its events) and
        the extender's holds released (Events on the Job)."""
        ann, name = _annotations(job), job["metadata"]["name"]
        nodes = int(ann[keys.NODES])
        add(
            1,
            f"multi-node job: {nodes} nodes, one pod each (main node index "
            f"{ann.get(keys.MAIN_NODE_INDEX, '0')}), all or nothing; attempt "
            f"{ann.get(keys.GANG_ATTEMPT, '1')}",
        )
        pods = [
            p
            for p in await self._job_pods(name)
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        bound = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))
        running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
        line = f"{len(pods)} of {nodes} pods created, {bound} bound to a node, {running} running"
        if pods and bound < nodes:
            line += f"; none is bound until all {nodes} have a node, then all together"
        add(2, line)
        gang = f"multi-node job {self.namespace}/{name}"
        for ce in self._environments(queue) if queue else ():
            events = await self._events("default", ce)
            if events is None:
                add(2, f"launches for it in {ce}: not visible to you (events of namespace default)")
                continue
            for event in [e for e in events if gang in e.get("message", "")][-3:]:
                add(2, f"{ce}: {event.get('reason')}: {event.get('message')}")
        holds = [
            e
            for e in await self._events(self.namespace, name) or ()
            if (e.get("involvedObject") or {}).get("kind") == "Job"
            and e.get("reason", "").startswith("GangHold")
        ]
        for event in holds[-3:]:
            add(2, f"{event.get('reason')}: {event.get('message')}")

    async def _job_pods(self, name: str) -> list[Json]:
        return (
            await self.client.list(
                kube.PODS, self.namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
            )
        ).items

    async def _events(self, namespace: str, name: str) -> list[Json] | None:
        """The Events about object `name` in `namespace`, oldest first; None if the user
        may not read them."""
        try:
            listed = await self.client.list(
                kube.EVENTS, namespace, field_selector=f"involvedObject.name={name}"
            )
        except kube.ApiError as exc:
            if not exc.forbidden:
                raise
            return None
        return sorted(listed.items, key=lambda e: e.get("lastTimestamp") or "")

    async def _autoscaler(self, ce: str, add: Any) -> None:
        raw = await self.client.get_or_none(kube.COMPUTE_ENVIRONMENTS, ce)
        if raw is None:
            return
        status = raw.get("status") or {}
        if "desiredvCpus" not in status:
            unmanaged = raw["spec"].get("type") == "UNMANAGED"
            add(1, f"autoscaler, {ce}: " + ("UNMANAGED" if unmanaged else "nothing published yet"))
            return
        add(
            1,
            f"autoscaler, {ce}: desired {status.get('desiredvCpus', 0)} / current "
            f"{status.get('currentvCpus', 0)} vCPUs, {status.get('nodes', 0)} nodes, "
            f"{status.get('pendingPods', 0)} pods pending",
        )
        if status.get("statusReason"):
            add(2, status["statusReason"])
        for offering in status.get("unavailableOfferings") or ():
            add(2, f"unavailable for now: {offering}")
        if status.get("lastLaunchError"):
            add(2, f"last launch failed: {status['lastLaunchError']}")
        events = await self._events("default", ce)
        if events is None:
            # A cluster-scoped object's Events are in namespace default, not a tenant's.
            add(2, f"events of {ce}: not visible to you (they are in namespace default)")
            return
        for event in events[-3:]:
            add(2, f"event {event.get('reason')}: {event.get('message')}")

    async def describe(self, name: str) -> None:
        job = await self._job(name)
        ann = _annotations(job)
        attempts = orjson.loads(ann.get(keys.ATTEMPTS) or "[]")
        status = job.get("status") or {}
        header = [
            f"Job:      {self.namespace}/{name}",
            f"Queue:    {job['metadata']['labels'][keys.QUEUE_LABEL]}",
            f"Definition: {ann.get(keys.JOB_DEFINITION, '-')}",
            f"State:    {ann.get(keys.STATE, '?')} ({ann.get(keys.REASON_CODE, '')})",
            f"Reason:   {ann.get(keys.REASON, '')}",
        ]
        gang = ann.get(keys.NODES)
        if gang:
            # A multi-node job's attempts are Ebb's (the Job controller counts none of its
            # failures): each is every node's pod, one row per node.
            header.append(f"Attempts: {ann.get(keys.GANG_ATTEMPT, '1')}")
            header.append(
                f"Nodes:    {gang} (main node index {ann.get(keys.MAIN_NODE_INDEX, '0')})"
            )
        else:
            header.append(
                f"Attempts: {int(status.get('succeeded', 0)) + int(status.get('failed', 0))}"
            )
        if ann.get(keys.ARRAY_STATUS):
            header.append(f"Children: {ann[keys.ARRAY_STATUS]}")
        by_attempt = any("attempt" in a for a in attempts)
        rows = [
            [
                *([a.get("attempt", "-")] if by_attempt else []),
                a.get("pod"),
                a.get("index", "-") if a.get("index") is not None else "-",
                a.get("node") or "-",
                a.get("exitCode") if a.get("exitCode") is not None else "-",
                a.get("reason") or "-",
                a.get("statusReason") or "-",
                a.get("startedAt") or "-",
                a.get("stoppedAt") or "-",
            ]
            for a in attempts
        ]
        text = (
            "\n".join(header)
            + "\n\n"
            + table(
                rows,
                [
                    *(["ATTEMPT"] if by_attempt else []),
                    *("POD", "INDEX", "NODE", "EXIT", "REASON", "STATUS-REASON"),
                    *("STARTED", "STOPPED"),
                ],
            )
        )
        emit(
            {
                "job": f"{self.namespace}/{name}",
                "state": ann.get(keys.STATE),
                "reason": ann.get(keys.REASON),
                "attempts": attempts,
            },
            self.output,
            text,
        )

    async def submit(self, job: Json) -> None:
        created = await self.client.create(kube.JOBS, job, self.namespace)
        meta = created["metadata"]
        ann = meta.get("annotations") or {}
        emit(
            {
                "jobName": meta["name"],
                "jobId": meta.get("uid"),
                "namespace": meta["namespace"],
                "jobDefinition": ann.get(keys.JOB_DEFINITION),
                "state": ann.get(keys.STATE),
            },
            self.output,
            f"job {meta['namespace']}/{meta['name']} submitted (definition "
            f"{ann.get(keys.JOB_DEFINITION)}, {ann.get(keys.STATE)}); "
            f"kubectl ebb describe {meta['name']} -n {meta['namespace']}",
        )

    async def stop(self, name: str, annotation: str, reason: str, verb: str) -> None:
        await self._job(name)
        await self.client.patch(
            kube.JOBS, name, {"metadata": {"annotations": {annotation: reason}}}, self.namespace
        )
        print(f"job {self.namespace}/{name} {verb} requested: {reason}")

    async def import_objects(self, files: Sequence[str]) -> None:
        """Create or update (server-side apply, as `kubectl apply --server-side`) what the
        AWS Batch files describe; definitions get the next revision unless unchanged."""
        listing = await self.client.list(kube.JOB_DEFINITIONS, namespace=self.namespace)
        latest: dict[str, tuple[int, Json]] = {}
        for item in listing.items:
            try:
                name, revision = split_name(item["metadata"]["name"])
            except DefinitionError:
                continue
            if revision > latest.get(name, (0, {}))[0]:
                latest[name] = (revision, item.get("spec") or {})
        translation = translate_files(files, self.namespace, latest)
        for obj in translation.objects:
            res = _IMPORTED[obj["kind"]]
            await self.client.apply(res, obj, field_manager="kubectl-ebb-import")
            print(f"{res.plural}.{keys.GROUP}/{obj['metadata']['name']} imported")


_IMPORTED = {
    res.kind: res
    for res in (
        kube.COMPUTE_ENVIRONMENTS,
        kube.SCHEDULING_POLICIES,
        kube.JOB_QUEUES,
        kube.JOB_DEFINITIONS,
    )
}


def translate_files(
    files: Sequence[str], namespace: str, latest: dict[str, tuple[int, Json]]
) -> awsbatch_import.Translation:
    """The files' AWS Batch JSON as Ebb objects, the warnings printed to stderr; a file
    that cannot be imported stops everything before anything is written."""
    documents = []
    try:
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            stem = os.path.splitext(os.path.basename(path))[0]
            documents.append((path, awsbatch_import.parse_json(text, path), stem))
        translation = awsbatch_import.translate(documents, namespace=namespace, latest=latest)
    except (awsbatch_import.ImportRefused, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for warning in translation.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return translation


def import_dry_run(args: argparse.Namespace) -> None:
    """`--dry-run`: the objects as YAML (or JSON), what they cannot carry as comments;
    nothing is read from or written to the cluster (definitions are revision 1)."""
    translation = translate_files(args.files, args.namespace or "default", {})
    if args.output == "json":
        emit(translation.objects, "json", "")
        return
    comments = "".join(f"# warning: {w}\n" for w in translation.warnings)
    docs = "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in translation.objects)
    print(comments + docs, end="")


def _json_arg(value: str, flag: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"error: {flag}: not valid JSON ({exc})") from None


def submit_job(args: argparse.Namespace) -> Json:
    """The Job `kubectl ebb submit` creates: AWS Batch's SubmitJob as a Job that names its
    definition; the webhook builds the pod template from it (ebb/jobdefinition.py)."""
    annotations = {keys.JOB_DEFINITION: args.job_definition}
    parameters = {}
    for item in args.parameters or ():
        key, found, value = item.partition("=")
        if not found or not key:
            raise SystemExit(f"error: --parameters: {item!r} is not KEY=VALUE")
        parameters[key] = value
    if parameters:
        annotations[keys.PARAMETERS] = orjson.dumps(parameters).decode()
    if args.depends_on:
        annotations[keys.DEPENDS_ON] = ",".join(args.depends_on)
    for key, value in (
        (keys.SCHEDULING_PRIORITY, args.scheduling_priority),
        (keys.RETRY_STRATEGY, args.retry_strategy),
        (keys.TIMEOUT_SECONDS, args.timeout),
    ):
        if value is not None:
            annotations[key] = str(value)
    labels = {keys.QUEUE_LABEL: args.job_queue}
    if args.share:
        labels[keys.SHARE_LABEL] = args.share
    overrides = (
        _json_arg(args.container_overrides, "--container-overrides")
        if args.container_overrides
        else []
    )
    if isinstance(overrides, dict):  # AWS Batch's eksPropertiesOverride.podProperties shape
        overrides = overrides.get("containers") or []
    if not isinstance(overrides, list):
        raise SystemExit(
            "error: --container-overrides: a JSON list of {name, image, command, args, env, "
            "resources}, or an object with such a list under containers"
        )
    spec: Json = {"template": {"spec": {"containers": overrides}}}
    if args.array_size is not None:
        spec.update(
            completionMode="Indexed", completions=args.array_size, parallelism=args.array_size
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": args.job_name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def _connection_flags(defaults: bool) -> argparse.ArgumentParser:
    """The flags kubectl users expect, accepted before and after the subcommand."""
    flags = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    flags.add_argument("--kubeconfig", default=default)
    flags.add_argument("--context", default=default)
    flags.add_argument("-n", "--namespace", default=default)
    flags.add_argument("-o", "--output", choices=("json", "yaml"), default=default)
    return flags


def parser() -> argparse.ArgumentParser:
    common = _connection_flags(defaults=False)
    top = argparse.ArgumentParser(
        prog="kubectl ebb",
        description=__doc__.split("\n\n")[0],
        parents=[_connection_flags(defaults=True)],
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("queues", parents=[common], help="job queues and their jobs by state")
    sub.add_parser("ces", parents=[common], help="compute environments and their capacity")
    jobs = sub.add_parser("jobs", parents=[common], help="jobs managed by Ebb")
    jobs.add_argument("-q", "--queue")
    jobs.add_argument("--state", choices=[s.lower() for s in STATES] + list(STATES))
    jobs.add_argument("-A", "--all-namespaces", action="store_true")
    for name, text in (("why", "why a job is where it is"), ("describe", "a job's attempts")):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("job")
    for name, text in (
        ("cancel", "cancel a job not admitted (SUBMITTED, PENDING, RUNNABLE)"),
        ("terminate", "stop a job, running or not"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("job")
        cmd.add_argument("--reason", required=True)
    submit = sub.add_parser(
        "submit", parents=[common], help="submit a job from a job definition (AWS Batch SubmitJob)"
    )
    submit.add_argument("--job-name", required=True)
    submit.add_argument("--job-queue", required=True)
    submit.add_argument("--job-definition", required=True, help="NAME (latest) or NAME:REVISION")
    submit.add_argument("--parameters", nargs="+", metavar="KEY=VALUE")
    submit.add_argument("--array-size", type=int)
    submit.add_argument("--depends-on", nargs="+", metavar="JOB[:TYPE]")
    submit.add_argument("--share", help="share identifier (fair share)")
    submit.add_argument("--scheduling-priority", type=int)
    submit.add_argument("--retry-strategy", help='JSON, e.g. {"attempts": 3}')
    submit.add_argument("--timeout", type=int, help="attempt duration in seconds")
    submit.add_argument("--container-overrides", help="JSON list of {name, image, ...}")
    imports = sub.add_parser(
        "import",
        parents=[common],
        help="create or update Ebb objects from AWS Batch JSON (describe-* output, create-* "
        "and register-job-definition input)",
    )
    imports.add_argument("files", nargs="+", metavar="FILE")
    imports.add_argument(
        "--dry-run", action="store_true", help="print the objects (-o yaml|json); write nothing"
    )
    return top


async def _run(args: argparse.Namespace) -> None:
    access = kube.load_access(args.kubeconfig, args.context, os.environ)
    namespace = args.namespace or access.namespace
    async with kube.KubeClient(access, user_agent="kubectl-ebb") as client:
        try:
            await _command(Cli(client, namespace, args.output), args)
        except kube.ApiError as exc:
            if not exc.forbidden:
                raise
            raise SystemExit(_refusal(args, namespace, exc)) from None


def _refusal(args: argparse.Namespace, namespace: str, exc: kube.ApiError) -> str:
    """A 403 as a sentence: what the user tried, what the API server said, and which of
    Ebb's roles grants it."""
    match args.command:
        case "queues" | "ces":
            what = "job queues" if args.command == "queues" else "compute environments"
            tried, role = f"list {what}", VIEW_ROLE
        case "jobs" if args.all_namespaces:
            tried = "list jobs in all namespaces"
            role = f"ClusterRole ebb-admin (without -A: the jobs of namespace {namespace})"
        case "jobs":
            tried, role = f"list jobs in namespace {namespace}", _edit_role(namespace)
        case "submit":
            tried, role = f"create job {namespace}/{args.job_name}", _edit_role(namespace)
        case "import":
            tried = "create compute environments, queues and job definitions"
            role = "ClusterRole ebb-admin"
        case _:
            verb = "read" if args.command in ("why", "describe") else args.command
            tried, role = f"{verb} job {namespace}/{args.job}", _edit_role(namespace)
    return (
        f"error: you may not {tried} ({_who_cannot(exc)}); that takes {role} (docs/operations.md)"
    )


async def _command(cli: Cli, args: argparse.Namespace) -> None:
    match args.command:
        case "queues":
            await cli.queues()
        case "ces":
            await cli.ces()
        case "jobs":
            await cli.jobs(args.queue, args.state, args.all_namespaces)
        case "why":
            await cli.why(args.job)
        case "describe":
            await cli.describe(args.job)
        case "cancel":
            await cli.stop(args.job, keys.CANCEL, args.reason, "cancel")
        case "terminate":
            await cli.stop(args.job, keys.TERMINATE, args.reason, "termination")
        case "submit":
            await cli.submit(submit_job(args))
        case "import":
            await cli.import_objects(args.files)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "import" and args.dry_run:
        import_dry_run(args)
        return 0
    try:
        asyncio.run(_run(args))
    except kube.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except kube.ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
