"""Multi-node jobs (gangs) in the simulator: the idle node-hours all-or-nothing saves.

    python -m bench.simulator_gangs            # 150 jobs, seed 0 (--jobs, --seed)

One workload (`sim.workloads.gangs`: GPU training gangs of 4, 16 and 64 nodes among
single GPU jobs, on a GPU Spot environment then an On-Demand one), one seed, four runs
(`sim.baselines` describes each policy):

- `ebb`: Ebb's admission, placement and autoscaler, gangs all or nothing;
- `ebb-without-gangs`: Ebb's autoscaler, no gang awareness (plain Indexed Jobs:
  admitted, provisioned and placed pod by pod; a bound pod idles until its whole gang
  is bound);
- `cluster-autoscaler`: gang-aware admission and placement, with cluster-autoscaler's
  node groups for capacity;
- `pod-by-pod-gangs`: no gang awareness and cluster-autoscaler (plain Kubernetes Jobs).

Ebb against `pod-by-pod-gangs` is what a user moving from plain Jobs gets; the pairs
with the same autoscaler separate what gang awareness does from the capacity strategy.

Prints, per run, the gang-held node-hours (nodes held by a gang pod that cannot start
because its gang is incomplete), the cost, the waits and the makespan, then the
ratios; writes each run's metrics.json and plots under `--out`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sim import workloads
from sim.__main__ import POLICIES, run_one
from sim.engine import Settings

ROOT = Path(__file__).resolve().parent.parent
RUNS = ("ebb", "ebb-without-gangs", "cluster-autoscaler", "pod-by-pod-gangs")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-sim-gangs")
    args = parser.parse_args(argv)
    workload = workloads.gangs(args.jobs, seed=args.seed)
    settings = Settings(seed=args.seed)
    print(f"{workload.description}; {workload.pods:,} pods", flush=True)
    metrics = {
        name: run_one(workload, POLICIES[name], settings, args.out / name, name).metrics
        for name in RUNS
    }
    print(
        f"\n{'run':20} {'gang-held node-h':>16} {'cost $':>9} {'wait mean s':>11} "
        f"{'p95 s':>7} {'makespan h':>10} {'util':>5}"
    )
    for name, m in metrics.items():
        waits = m["wait_seconds"]["all"]
        print(
            f"{name:20} {m['gang_held_node_hours']:>16,.1f} {m['cost_usd']:>9,.0f} "
            f"{waits['mean']:>11,.0f} {waits['p95']:>7,.0f} "
            f"{m['makespan_seconds'] / 3600:>10.2f} {m['vcpu_hours']['utilisation']:>5.2f}"
        )
    print()
    for gangs, without in (
        ("ebb", "pod-by-pod-gangs"),
        ("ebb", "ebb-without-gangs"),
        ("cluster-autoscaler", "pod-by-pod-gangs"),
    ):
        a, b = metrics[gangs], metrics[without]
        saved = b["gang_held_node_hours"] - a["gang_held_node_hours"]
        print(
            f"{gangs} against {without}: {saved:,.1f} gang-held node-hours saved; cost "
            f"${a['cost_usd']:,.0f} / ${b['cost_usd']:,.0f} = {a['cost_usd'] / b['cost_usd']:.2f}"
        )
    for name, m in metrics.items():
        unfinished = m["jobs"]["unfinished"]
        if unfinished:
            print(f"{name}: jobs left unfinished {unfinished}")
    return metrics


if __name__ == "__main__":
    main()
