"""PNG plots of a run: capacity against demand over time, the distribution of waits,
and each fair-share identifier's share of the running capacity over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from sim.metrics import Report, percentiles

_MAX_SERIES = 12  # shares drawn one by one; the rest are summed as "others"


def _hours(report: Report) -> tuple[list[float], str]:
    t = report.timeline.seconds
    start = t[0] if t else 0.0
    span = (t[-1] - start) if t else 0.0
    if span > 4 * 86400:
        return [(x - start) / 86400 for x in t], "days"
    return [(x - start) / 3600 for x in t], "hours"


def capacity(report: Report, path: Path) -> None:
    t, unit = _hours(report)
    tl = report.timeline
    demand = [
        r + p + q
        for r, p, q in zip(tl.running_vcpus, tl.pending_vcpus, tl.queued_vcpus, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(t, tl.provisioned_vcpus, label="provisioned vCPUs (instances, booting included)")
    ax.plot(t, demand, label="demand: running + admitted + queued pods' vCPU requests")
    ax.plot(t, tl.running_vcpus, label="running pods' vCPU requests")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("vCPUs")
    ax.grid(alpha=0.3)
    side = ax.twinx()
    side.plot(t, tl.instances, color="grey", linewidth=0.8, linestyle=":", label="instances")
    side.set_ylabel("instances")
    lines = ax.get_legend_handles_labels()
    extra = side.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)
    ax.set_title(f"{report.metrics['workload']} / {report.metrics['policy']}: capacity and demand")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def waits(report: Report, path: Path) -> None:
    """Cumulative distribution of waits per queue (log time axis)."""
    by_queue: dict[str, list[float]] = {}
    for label, samples in report.waits.items():
        by_queue.setdefault(label.split("/", 1)[0], []).extend(samples)
    fig, ax = plt.subplots(figsize=(8, 5))
    for queue, values in sorted(by_queue.items()):
        ordered = sorted(max(s, 0.1) for s in values)
        if not ordered:
            continue
        n = len(ordered)
        step = max(n // 2000, 1)  # a few thousand points draw the same curve
        xs = [*ordered[::step], ordered[-1]]
        ys = [*(i / n for i in range(0, n, step)), 1.0]
        p = percentiles(values)
        label = f"{queue}: p50 {p['p50']:.0f} s, p95 {p['p95']:.0f} s, p99 {p['p99']:.0f} s"
        ax.step(xs, ys, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("wait from RUNNABLE to first start (s, log scale; 0 drawn at 0.1)")
    ax.set_ylabel("fraction of jobs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{report.metrics['workload']} / {report.metrics['policy']}: waits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shares(report: Report, path: Path) -> None:
    """Running vCPUs per queue/share identifier, stacked."""
    t, unit = _hours(report)
    series = report.timeline.shares
    totals: dict[str, float] = {}
    for sample in series:
        for label, v in sample.items():
            totals[label] = totals.get(label, 0.0) + v
    named = sorted(totals, key=lambda k: -totals[k])[:_MAX_SERIES]
    rows = [[sample.get(label, 0.0) for sample in series] for label in sorted(named)]
    labels = sorted(named)
    if len(totals) > len(named):
        kept = set(named)
        rows.append([sum(v for k, v in s.items() if k not in kept) for s in series])
        labels.append("others")
    fig, ax = plt.subplots(figsize=(10, 5))
    if rows:
        ax.stackplot(t, rows, labels=labels)
        ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("running vCPUs")
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{report.metrics['workload']} / {report.metrics['policy']}: "
        "capacity per queue / share identifier"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "capacity.png", out / "waits.png", out / "shares.png"]
    for draw, path in zip((capacity, waits, shares), paths, strict=True):
        draw(report, path)
    return paths
