"""Run the simulator from the command line.

    python -m sim --workload alibaba --trace ../shared/data/traces/alibaba-gpu-v2023-pods.csv \\
        --out out/sim-alibaba
    python -m sim --workload swf --trace ../shared/data/traces/nasa-ipsc-1993.swf --compare
    python -m sim --workload burst --jobs 1000000 --out out/sim-burst
    python -m sim --workload gangs --capacity pod-by-pod-gangs --out out/sim-gangs

Writes, per run, `metrics.json` and the plots `capacity.png`, `waits.png` and
`shares.png` into the output directory (with --compare: one directory per policy, and
`comparison.json` with the ratios Ebb ÷ each alternative).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoscaler.planner import (
    BEST_FIT_PROGRESSIVE,
    SPOT_CAPACITY_OPTIMIZED,
    SPOT_PRICE_CAPACITY_OPTIMIZED,
)
from sim import plots, workloads
from sim.baselines import EbbWithoutGangs, NodeGroups, OnePodPerInstance, PodByPodGangs
from sim.capacity import CapacityPolicy, EbbCapacity
from sim.cloud import CloudSettings
from sim.engine import Settings, Simulation
from sim.metrics import Report

POLICIES: dict[str, Callable[..., CapacityPolicy]] = {
    "ebb": EbbCapacity,
    "cluster-autoscaler": NodeGroups,
    "one-pod-per-instance": OnePodPerInstance,
    "pod-by-pod-gangs": PodByPodGangs,
    "ebb-without-gangs": EbbWithoutGangs,
}
STRATEGIES = (BEST_FIT_PROGRESSIVE, SPOT_CAPACITY_OPTIMIZED, SPOT_PRICE_CAPACITY_OPTIMIZED)


def with_strategy(workload: workloads.Workload, strategy: str) -> workloads.Workload:
    """The workload with `strategy` as the allocation strategy of its Spot environments."""
    scenario = workload.scenario
    envs = tuple(
        replace(e, allocation_strategy=strategy) if e.type == "SPOT" else e
        for e in scenario.environments
    )
    return replace(workload, scenario=replace(scenario, environments=envs))


def load(args: argparse.Namespace) -> workloads.Workload:
    jobs = {} if args.jobs is None else {"jobs": args.jobs}  # else the generator's default
    if args.workload == "burst":
        return workloads.burst(**jobs, seed=args.seed)
    if args.workload == "gangs":
        return workloads.gangs(**jobs, seed=args.seed)
    if not args.trace:
        raise SystemExit(f"--workload {args.workload} needs --trace PATH (see BENCHMARKS.md)")
    if args.workload == "alibaba":
        return workloads.alibaba(args.trace)
    return workloads.swf(args.trace)


def run_one(
    workload: workloads.Workload,
    policy: Callable[..., CapacityPolicy],
    settings: Settings,
    out: Path | None,
    label: str,
) -> Report:
    # Wall and CPU time of the whole run, measured outside the engine (on a shared
    # machine the CPU time is what the run itself cost).
    started, cpu_started = time.perf_counter(), time.process_time()
    report = Simulation(workload, policy, settings).run()
    wall = time.perf_counter() - started
    report.metrics["run"] = {
        "label": label,
        "seed": settings.seed,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    m = report.metrics
    waits = m["wait_seconds"]["all"]
    print(
        f"{label:44} ${m['cost_usd']:>12,.0f}  wait p50 {waits.get('p50', 0):>8.0f} s  "
        f"p95 {waits.get('p95', 0):>8.0f} s  util {m['vcpu_hours']['utilisation']:.2f}  "
        f"peak {m['peak_instances']:,} instances  ({wall:.0f} s wall)",
        flush=True,
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
        plots.write_all(report, out)
    return report


def ratios(ebb: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """Ebb ÷ the other run: below 1 is better for Ebb."""

    def div(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    ew, ow = ebb["wait_seconds"]["all"], other["wait_seconds"]["all"]
    return {
        "cost": div(ebb["cost_usd"], other["cost_usd"]),
        **{f"wait_{p}": div(ew.get(p, 0.0), ow.get(p, 0.0)) for p in ("mean", "p50", "p95", "p99")},
        "makespan": div(ebb["makespan_seconds"], other["makespan_seconds"]),
    }


def compare(workload: workloads.Workload, settings: Settings, out: Path | None) -> dict[str, Any]:
    runs: dict[str, Report] = {}
    for strategy in STRATEGIES:
        label = f"ebb-{strategy.lower().replace('_', '-')}"
        runs[label] = run_one(
            with_strategy(workload, strategy),
            EbbCapacity,
            settings,
            out / label if out else None,
            label,
        )
    for name in ("cluster-autoscaler", "one-pod-per-instance"):
        runs[name] = run_one(workload, POLICIES[name], settings, out / name if out else None, name)
    reference = f"ebb-{BEST_FIT_PROGRESSIVE.lower().replace('_', '-')}"
    ebb = runs[reference].metrics
    summary: dict[str, Any] = {
        "workload": workload.description,
        "reference": reference,
        "runs": {
            label: {
                "policy": r.metrics["policy_description"],
                "cost_usd": r.metrics["cost_usd"],
                "wait_seconds": r.metrics["wait_seconds"]["all"],
                "utilisation": r.metrics["vcpu_hours"]["utilisation"],
                "makespan_seconds": r.metrics["makespan_seconds"],
                "peak_instances": r.metrics["peak_instances"],
            }
            for label, r in runs.items()
        },
        "ebb_over": {
            label: ratios(ebb, r.metrics) for label, r in runs.items() if label != reference
        },
    }
    if out is not None:
        (out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    for label, r in summary["ebb_over"].items():
        print(f"{reference} ÷ {label}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workload", choices=("alibaba", "swf", "burst", "gangs"), required=True)
    parser.add_argument("--trace", help="the trace file (alibaba: a pod list CSV; swf: a log)")
    parser.add_argument(
        "--jobs", type=int, help="burst, gangs: jobs to submit (defaults 1,000,000 and 150)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capacity", choices=sorted(POLICIES), default="ebb")
    parser.add_argument("--strategy", choices=STRATEGIES, help="for the Spot environments")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run Ebb with each Spot strategy, cluster-autoscaler and one-pod-per-instance",
    )
    parser.add_argument(
        "--interruption-scale",
        type=float,
        default=1.0,
        help="multiply every type's Spot interruption rate (0: none)",
    )
    parser.add_argument(
        "--insufficient-capacity",
        type=float,
        default=CloudSettings.insufficient_capacity_spot,
        help="chance that EC2 refuses a Spot launch request (On-Demand: a tenth of it)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: none written)")
    args = parser.parse_args(argv)
    workload = load(args)
    if args.strategy:
        workload = with_strategy(workload, args.strategy)
    cloud = CloudSettings(
        interruption_scale=args.interruption_scale,
        insufficient_capacity_spot=args.insufficient_capacity,
        insufficient_capacity_on_demand=args.insufficient_capacity / 10,
    )
    settings = Settings(seed=args.seed, cloud=cloud)
    print(f"{workload.description}; {workload.pods:,} jobs counting array children", flush=True)
    if args.compare:
        compare(workload, settings, args.out)
    else:
        run_one(workload, POLICIES[args.capacity], settings, args.out, args.capacity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
