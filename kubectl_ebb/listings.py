"""The listings (`queues`, `ces`, `jobs`) as kubectl prints a `get`: a table (`-o wide`
adds columns and prints reasons whole), `-o name|json|yaml|jsonpath=...`, and with
`--watch` the table first, then a row whenever an object changes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ebb import keys, kube
from kubectl_ebb.output import (
    STATES,
    Json,
    OutputFormat,
    age,
    annotations_of,
    as_list,
    render,
    row_text,
    shorten,
    table,
    widths_of,
)

Cell = Callable[[Json, bool], object]  # (object, wide) -> what the column shows


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Cell
    wide_only: bool = False


@dataclass(frozen=True, slots=True)
class Listing:
    resource: kube.Resource
    columns: tuple[Column, ...]
    sort_key: Callable[[Json], Any]

    @property
    def kind_prefix(self) -> str:
        """What `-o name` puts before the name, as kubectl: `jobqueue.ebb.dev`, `job.batch`."""
        return f"{self.resource.kind.lower()}.{self.resource.group}"

    def headers(self, wide: bool) -> list[str]:
        return [c.header for c in self.columns if wide or not c.wide_only]

    def row(self, obj: Json, wide: bool) -> list[str]:
        return [str(c.cell(obj, wide)) for c in self.columns if wide or not c.wide_only]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which objects: a namespace (None: all, or cluster-scoped), a label selector for the
    API server, and a test the API server cannot make (a job's state)."""

    namespace: str | None = None
    label_selector: str | None = None
    keep: Callable[[Json], bool] = lambda _: True


def _spec(obj: Json) -> Json:
    return dict(obj.get("spec") or {})


def _status(obj: Json) -> Json:
    return dict(obj.get("status") or {})


def _name(obj: Json, _: bool) -> str:
    return str(obj["metadata"]["name"])


def _age(obj: Json, _: bool) -> str:
    return age(obj["metadata"].get("creationTimestamp"))


def _reason_cell(read: Callable[[Json], str], width: int | None = None) -> Cell:
    """A reason column: whole with -o wide (or without a `width`), else cut at a word
    boundary to `width`."""

    def cell(obj: Json, wide: bool) -> str:
        text = read(obj) or ""
        return shorten(text, width) if width and not wide else " ".join(text.split())

    return cell


def _environments(queue: Json) -> str:
    order = sorted(_spec(queue).get("computeEnvironmentOrder") or (), key=lambda e: e["order"])
    return ",".join(e["computeEnvironment"] for e in order)


def _status_field(name: str) -> Cell:
    return lambda obj, _: _status(obj).get(name, "-")


def _state_count(state: str) -> Cell:
    return lambda q, _: (_status(q).get("jobs") or {}).get(state, "-")


QUEUES = Listing(
    kube.JOB_QUEUES,
    (
        Column("NAME", _name),
        Column("STATE", lambda q, _: _spec(q).get("state", "ENABLED")),
        Column("PRIORITY", lambda q, _: _spec(q)["priority"]),
        Column("POLICY", lambda q, _: _spec(q).get("schedulingPolicy") or "-"),
        Column("ENVS", lambda q, _: _environments(q)),
        *(Column(state, _state_count(state)) for state in STATES),
        Column("STATUS", lambda q, _: _status(q).get("status", "")),
        Column("AGE", _age, wide_only=True),
        Column("REASON", _reason_cell(lambda q: _status(q).get("statusReason", "")), True),
    ),
    sort_key=lambda q: (-int(_spec(q).get("priority", 0)), q["metadata"]["name"]),
)

CES = Listing(
    kube.COMPUTE_ENVIRONMENTS,
    (
        Column("NAME", _name),
        Column("TYPE", lambda c, _: _spec(c)["type"]),
        Column("STATE", lambda c, _: _spec(c).get("state", "ENABLED")),
        Column("STATUS", lambda c, _: _status(c).get("status", "-")),
        Column("MIN", lambda c, _: _spec(c).get("minvCpus", 0)),
        Column("MAX", lambda c, _: _spec(c)["maxvCpus"]),
        *(
            Column(header, _status_field(field))
            for header, field in (
                ("DESIRED", "desiredvCpus"),
                ("CURRENT", "currentvCpus"),
                ("NODES", "nodes"),
                ("PENDING-PODS", "pendingPods"),
            )
        ),
        Column(
            "INSTANCE-TYPES",
            lambda c, _: ",".join(_spec(c).get("instanceTypes") or ()) or "-",
            wide_only=True,
        ),
        Column("ALLOCATION", lambda c, _: _spec(c).get("allocationStrategy", "-"), wide_only=True),
        Column("AGE", _age, wide_only=True),
        Column("REASON", _reason_cell(lambda c: _status(c).get("statusReason", ""), 60)),
    ),
    sort_key=lambda c: c["metadata"]["name"],
)


def _label(job: Json, key: str, default: str) -> str:
    return str((job["metadata"].get("labels") or {}).get(key, default))


def _attempts(job: Json, _: bool) -> int:
    status = _status(job)
    return int(status.get("succeeded", 0)) + int(status.get("failed", 0))


JOBS = Listing(
    kube.JOBS,
    (
        Column("NAMESPACE", lambda j, _: j["metadata"]["namespace"]),
        Column("NAME", _name),
        Column("QUEUE", lambda j, _: _label(j, keys.QUEUE_LABEL, "")),
        Column("SHARE", lambda j, _: _label(j, keys.SHARE_LABEL, "-")),
        Column("STATE", lambda j, _: annotations_of(j).get(keys.STATE, "?")),
        Column("AGE", _age),
        Column("REASON-CODE", lambda j, _: annotations_of(j).get(keys.REASON_CODE, "-"), True),
        Column("PODS-ENDED", _attempts, wide_only=True),
        Column("REASON", _reason_cell(lambda j: annotations_of(j).get(keys.REASON, ""), 80)),
    ),
    sort_key=lambda j: (j["metadata"].get("creationTimestamp", ""), j["metadata"]["name"]),
)


def job_selection(
    namespace: str | None, queue: str | None, state: str | None, selector: str | None
) -> Selection:
    """Ebb's jobs (labelled with a queue, `queue` if given) matching `selector`, in
    `state` if given; `namespace` None: all."""
    labelled = f"{keys.QUEUE_LABEL}={queue}" if queue else keys.QUEUE_LABEL
    wanted = state.upper() if state else None
    return Selection(
        namespace=namespace,
        label_selector=",".join(s for s in (labelled, selector) if s),
        keep=lambda job: not wanted or annotations_of(job).get(keys.STATE) == wanted,
    )


async def fetch(
    client: kube.KubeClient, listing: Listing, selection: Selection
) -> tuple[list[Json], str]:
    """The objects selected, in the listing's order, and the list's resourceVersion."""
    listed = await client.list(
        listing.resource, selection.namespace, label_selector=selection.label_selector
    )
    return sorted(
        filter(selection.keep, listed.items), key=listing.sort_key
    ), listed.resource_version


def print_objects(listing: Listing, objects: Sequence[Json], output: OutputFormat | None) -> None:
    """One listing, printed once."""
    wide = output is not None and output.kind == "wide"
    if output is None or wide:
        print(table([listing.row(o, wide) for o in objects], listing.headers(wide)))
    elif output.kind == "name":
        for obj in objects:
            print(f"{listing.kind_prefix}/{obj['metadata']['name']}")
    else:
        print(render(as_list(list(objects)), output), end="" if output.kind == "jsonpath" else "\n")


class Watcher:
    """`--watch`: what changes, as kubectl prints it: a table row (only when the row
    changed: status updates that change no column print nothing), a name, or the whole
    object (json, yaml with `---`, a jsonpath template applied to it)."""

    def __init__(self, listing: Listing, output: OutputFormat | None) -> None:
        self.listing = listing
        self.output = output
        self.wide = output is not None and output.kind == "wide"
        self.table = output is None or self.wide
        self.widths = [len(h) for h in listing.headers(self.wide)]
        self.printed: dict[str, str] = {}  # key -> the last row printed (cells)

    @staticmethod
    def key(obj: Json) -> str:
        return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    def has_shown(self, obj: Json) -> bool:
        return self.key(obj) in self.printed

    def start(self, objects: Sequence[Json]) -> None:
        if self.table:
            rows = [self.listing.row(o, self.wide) for o in objects]
            self.widths = widths_of(rows, self.listing.headers(self.wide))
            print(row_text(self.listing.headers(self.wide), self.widths), flush=True)
        for obj in objects:
            self.show(obj)

    def show(self, obj: Json) -> None:
        cells = self.listing.row(obj, self.wide)
        if self.printed.get(self.key(obj)) == "\0".join(cells) and self.table:
            return
        self.printed[self.key(obj)] = "\0".join(cells)
        if self.table:
            self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells, strict=True)]
            text = row_text(cells, self.widths)
        elif self.output is not None and self.output.kind == "name":
            text = f"{self.listing.kind_prefix}/{obj['metadata']['name']}"
        elif self.output is not None and self.output.kind == "yaml":
            text = "---\n" + render(obj, self.output)
        else:
            assert self.output is not None
            text = render(obj, self.output)
        print(text, end="" if self.output and self.output.kind == "jsonpath" else "\n", flush=True)


async def show(
    client: kube.KubeClient,
    listing: Listing,
    selection: Selection,
    output: OutputFormat | None,
    watch: bool,
) -> None:
    """List (and with `watch`, keep printing changes until interrupted)."""
    objects, version = await fetch(client, listing, selection)
    if not watch:
        print_objects(listing, objects, output)
        return
    watcher = Watcher(listing, output)
    watcher.start(objects)
    reflector: kube.Reflector[Json] = kube.Reflector(
        client,
        listing.resource,
        lambda raw: raw,
        namespace=selection.namespace,
        label_selector=selection.label_selector,
        name=f"watch-{listing.resource.plural}",
    )
    # Watch from the version listed: every event is a change since the table (the store
    # holds what was listed, so a deletion still has its object to print).
    reflector.resource_version = version
    for obj in objects:
        reflector.store.put(Watcher.key(obj).lstrip("/"), obj)

    def changed(event: kube.Event[Json]) -> None:
        # A job that leaves the state asked for (--state) is shown once more, leaving.
        obj = event.new or event.old
        if obj is not None and (selection.keep(obj) or watcher.has_shown(obj)):
            watcher.show(obj)

    reflector.subscribe(changed)
    await reflector.run()
