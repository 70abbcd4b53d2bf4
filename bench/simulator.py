"""The simulator at scale, and Ebb side by side with the baselines.

    python -m bench.simulator                 # the 1,000,000-job burst with Ebb
    python -m bench.simulator --compare       # also: Ebb's strategies and the baselines on
                                              # a 200,000-job burst, the Alibaba trace and
                                              # the SWF log

Scale goal: 1,000,000 jobs (array children counted) with ≥ 4,500 concurrent instances
simulated in ≤ 10 minutes of wall time on 2 cores. The traces are read from
`--traces` (default ../shared/data/traces beside the repository; see BENCHMARKS.md for
where to get them). Metrics and plots go to `--out` (default out/bench-sim), one
directory per run.
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path
from typing import Any

from sim import workloads
from sim.__main__ import compare, run_one
from sim.capacity import EbbCapacity
from sim.engine import Settings

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "data" / "traces"
GOAL_SECONDS, GOAL_INSTANCES = 600.0, 4500


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the scale run")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument(
        "--compare-jobs",
        type=int,
        default=200_000,
        help="jobs in the burst every policy runs (at 1,000,000 one pod per instance does "
        "not finish in hours: BENCHMARKS.md, Scale and simulation (b))",
    )
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-sim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = Settings(seed=args.seed)
    burst = workloads.burst(args.jobs, seed=args.seed)
    print(f"{burst.description}; {burst.pods:,} jobs counting array children", flush=True)
    report = run_one(burst, EbbCapacity, settings, args.out / "burst-ebb", "burst, ebb")
    m = report.metrics
    wall, cpu = m["run"]["wall_seconds"], m["run"]["cpu_seconds"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    met = wall <= GOAL_SECONDS and m["peak_instances"] >= GOAL_INSTANCES
    print(
        f"scale: {m['jobs']['with_array_children']:,} jobs, peak {m['peak_instances']:,} "
        f"instances, {wall:.0f} s wall ({cpu:.0f} s CPU), {rss:,.0f} MiB peak RSS — "
        f"goal ≤ {GOAL_SECONDS:.0f} s with ≥ {GOAL_INSTANCES:,} instances: "
        f"{'met' if met else 'NOT met'}",
        flush=True,
    )
    out: dict[str, Any] = {"scale": {"wall_seconds": wall, "peak_rss_mib": round(rss), **m}}
    if args.compare:
        smaller = workloads.burst(args.compare_jobs, seed=args.seed)
        print(f"\n{smaller.description}", flush=True)
        out["burst"] = compare(
            smaller, settings, args.out / f"compare-burst-{args.compare_jobs // 1000}k"
        )
        for name, loader, path in (
            ("alibaba", workloads.alibaba, args.traces / "alibaba-gpu-v2023-pods.csv"),
            ("swf", workloads.swf, args.traces / "nasa-ipsc-1993.swf"),
        ):
            if not path.exists():
                print(f"\n{name}: {path} not found; skipped (see BENCHMARKS.md)")
                continue
            trace = loader(path)
            print(f"\n{trace.description}", flush=True)
            out[name] = compare(trace, settings, args.out / f"compare-{name}")
    return out


if __name__ == "__main__":
    main()
