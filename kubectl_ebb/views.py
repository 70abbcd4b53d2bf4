"""The commands that read and write the cluster: listings, `why`, `describe`, `submit`,
`cancel`/`terminate` and `import`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ebb import keys, kube
from ebb.jobdefinition import DefinitionError, split_name
from ebb.jobspec import SpecError, parse_depends_on
from kubectl_ebb import listings
from kubectl_ebb.objects import translate_files
from kubectl_ebb.output import (
    STATES,
    Json,
    OutputFormat,
    annotations_of,
    emit,
    last_of,
    table,
)
from kubectl_ebb.refusals import VIEW_ROLE


class NotAnEbbJob(Exception):
    """The job named does not exist, or Ebb does not manage it."""


@dataclass(frozen=True)
class Description:
    """What `describe` shows of a job: header lines, and its attempts as table rows."""

    header: list[tuple[str, str]]
    columns: list[str]
    rows: list[list[Any]]
    attempts: list[Json]


class Cli:
    def __init__(
        self, client: kube.KubeClient, namespace: str, output: OutputFormat | None
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.output = output

    # --- listings, as the web view (kubectl_ebb/ui.py) reads them ---------------------

    async def queue_items(self) -> list[Json]:
        """The job queues, highest priority first."""
        return await self._items(listings.QUEUES, listings.Selection())

    async def ce_items(self) -> list[Json]:
        """The compute environments, by name."""
        return await self._items(listings.CES, listings.Selection())

    async def job_items(
        self, queue: str | None, state: str | None, all_namespaces: bool
    ) -> list[Json]:
        """Ebb's jobs (of `queue`, in `state`), oldest first."""
        selection = listings.job_selection(
            None if all_namespaces else self.namespace, queue, state, None
        )
        return await self._items(listings.JOBS, selection)

    async def _items(self, listing: listings.Listing, selection: listings.Selection) -> list[Json]:
        return (await listings.fetch(self.client, listing, selection))[0]

    # --- one job --------------------------------------------------------------------

    async def job(self, name: str) -> Json:
        """Job `name` of this namespace, if Ebb manages it; else NotAnEbbJob."""
        job = await self.client.get_or_none(kube.JOBS, name, self.namespace)
        if job is None:
            raise NotAnEbbJob(f"job {self.namespace}/{name} not found")
        if keys.QUEUE_LABEL not in (job["metadata"].get("labels") or {}):
            raise NotAnEbbJob(
                f"job {self.namespace}/{name} is not in an Ebb queue (no {keys.QUEUE_LABEL} label)"
            )
        return job

    async def why(self, name: str) -> None:
        job = await self.job(name)
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
        ann = annotations_of(job)
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
            for ce in self.environments(queue):
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
            other_ann = annotations_of(other)
            add(
                1,
                f"{dep.type.value} {dep.job}: {other_ann.get(keys.STATE, '?')} — "
                f"{other_ann.get(keys.REASON, '')}",
            )

    @staticmethod
    def environments(queue: Json) -> list[str]:
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
        for ce in self.environments(queue):
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
        pods = await self._job_pods(job["metadata"]["name"])
        if len(pods) > _PODS_SHOWN:
            add(1, last_of(_PODS_SHOWN, len(pods), "pods") + ":")
        for pod in pods[-_PODS_SHOWN:]:
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
        ann, name = annotations_of(job), job["metadata"]["name"]
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
        for ce in self.environments(queue) if queue else ():
            events = await self._events("default", ce)
            if events is None:
                add(2, f"launches for it in {ce}: not visible to you (events of namespace default)")
                continue
            launches = [e for e in events if gang in e.get("message", "")]
            _add_last(add, 2, launches, f"events of {ce} about it")
            for event in launches[-_EVENTS_SHOWN:]:
                add(2, f"{ce}: {event.get('reason')}: {event.get('message')}")
        holds = [
            e
            for e in await self._events(self.namespace, name) or ()
            if (e.get("involvedObject") or {}).get("kind") == "Job"
            and e.get("reason", "").startswith("GangHold")
        ]
        _add_last(add, 2, holds, "holds released")
        for event in holds[-_EVENTS_SHOWN:]:
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
        _add_last(add, 2, events, f"events of {ce}")
        for event in events[-_EVENTS_SHOWN:]:
            add(2, f"event {event.get('reason')}: {event.get('message')}")

    async def describe(self, name: str) -> None:
        job = await self.job(name)
        description = self.description(job)
        text = (
            "\n".join(f"{label + ':':<9} {value}" for label, value in description.header)
            + "\n\n"
            + table(description.rows, description.columns)
        )
        ann = annotations_of(job)
        emit(
            {
                "job": f"{self.namespace}/{name}",
                "state": ann.get(keys.STATE),
                "reason": ann.get(keys.REASON),
                "attempts": description.attempts,
            },
            self.output,
            text,
        )

    @staticmethod
    def description(job: Json) -> Description:
        """A job's header lines and its attempts, one row per pod."""
        ann, meta = annotations_of(job), job["metadata"]
        attempts = orjson.loads(ann.get(keys.ATTEMPTS) or "[]")
        status = job.get("status") or {}
        header = [
            ("Job", f"{meta['namespace']}/{meta['name']}"),
            ("Queue", meta["labels"][keys.QUEUE_LABEL]),
            ("Definition", ann.get(keys.JOB_DEFINITION, "-")),
            ("State", f"{ann.get(keys.STATE, '?')} ({ann.get(keys.REASON_CODE, '')})"),
            ("Reason", ann.get(keys.REASON, "")),
        ]
        gang = ann.get(keys.NODES)
        if gang:
            # A multi-node job's attempts are Ebb's (the Job controller counts none of its
            # failures): each is every node's pod, one row per node.
            header.append(("Attempts", ann.get(keys.GANG_ATTEMPT, "1")))
            header.append(
                ("Nodes", f"{gang} (main node index {ann.get(keys.MAIN_NODE_INDEX, '0')})")
            )
        else:
            header.append(
                ("Attempts", str(int(status.get("succeeded", 0)) + int(status.get("failed", 0))))
            )
        if ann.get(keys.ARRAY_STATUS):
            header.append(("Children", ann[keys.ARRAY_STATUS]))
        gang_attempt = int(ann.get(keys.GANG_ATTEMPT, "1")) if gang else None
        shortened = _shortened(attempts, gang_attempt, status)
        if shortened:
            header.append(("Shown", shortened))
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
        columns = [
            *(["ATTEMPT"] if by_attempt else []),
            *("POD", "INDEX", "NODE", "EXIT", "REASON", "STATUS-REASON"),
            *("STARTED", "STOPPED"),
        ]
        return Description(header, columns, rows, attempts)

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
        await self.job(name)
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


_PODS_SHOWN = 10
_EVENTS_SHOWN = 3


def _add_last(add: Any, depth: int, items: Sequence[object], what: str) -> None:
    """Say so where `why` shows only the last few of a longer list."""
    if len(items) > _EVENTS_SHOWN:
        add(depth, last_of(_EVENTS_SHOWN, len(items), what) + ":")


def _shortened(attempts: list[Json], gang_attempt: int | None, status: Json) -> str:
    """Where the Job's record of attempts holds fewer than there were, say which are
    shown: "last 20 of 200 attempts" (a multi-node job: which of its attempts)."""
    if gang_attempt is not None:
        first = min((int(a.get("attempt") or 1) for a in attempts), default=1)
        if first <= 1:
            return ""
        return f"attempts {first}-{gang_attempt} of {gang_attempt} (the Job keeps the latest)"
    total = int(status.get("succeeded", 0)) + int(status.get("failed", 0))
    if len(attempts) >= total:
        return ""
    return f"{last_of(len(attempts), total, 'attempts')} (the Job keeps the latest)"


_IMPORTED = {
    res.kind: res
    for res in (
        kube.COMPUTE_ENVIRONMENTS,
        kube.SCHEDULING_POLICIES,
        kube.JOB_QUEUES,
        kube.JOB_DEFINITIONS,
    )
}
