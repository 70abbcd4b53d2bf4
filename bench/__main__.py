"""Run the benchmarks (`make bench`): each is a module of its own, run as a process of
its own, in the order below; every figure in BENCHMARKS.md names the module that gives it.

    python -m bench                 # the quick ones (a few minutes)
    python -m bench --all           # every benchmark BENCHMARKS.md reports (hours on 2 cores)
    python -m bench --only kueue_compare,scheduler_memory
    python -m bench --list

The long ones bring up private local clusters (state in .ebb-bench, ports from
EBB_BENCH_PORT_BASE; placement_throughput's from its --port-base) one after another,
never two at once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"

# (module, arguments, quick?, what it measures)
BENCHMARKS: tuple[tuple[str, tuple[str, ...], bool, str], ...] = (
    (
        "scheduling_pass",
        (),
        True,
        "full and incremental scheduling passes over 100,000 queued Jobs",
    ),
    ("autoscaler_planner", (), True, "capacity plans for 10,000 pods, cost against a bound"),
    ("simulator", ("--jobs=100000",), True, "the simulator on a 100,000-job burst"),
    ("simulator", ("--compare",), False, "1,000,000 jobs; Ebb against the baselines"),
    (
        "simulator_gangs",
        (),
        True,
        "multi-node jobs: gang-held node-hours and cost, Ebb against pod by pod",
    ),
    (
        "admission_e2e",
        ("--bare",),
        False,
        "15,000 Jobs admitted on the local stack, against a bare client's unsuspends",
    ),
    (
        "kueue_compare",
        ("--jobs", "2000", "--timeout", "1500"),
        False,
        "2,000 Jobs: Ebb against a bare client and Kueue (both finish on a loaded machine)",
    ),
    ("scheduler_memory", (), False, "the scheduler daemon's memory with 100,000 Jobs"),
    (
        "kwok_scale",
        ("--timeout", "600"),
        False,
        "5,000 nodes, 20,000 pods: Ebb against kube-scheduler",
    ),
    ("autoscaler_e2e", (), False, "scale-up from zero and back on the local stack"),
    ("gang_start", (), False, "4-, 16- and 64-node gangs from zero until all pods run"),
    ("placement_extender", (), False, "the extender's latency and throughput at 5,000 nodes"),
    (
        "placement_throughput",
        (
            "--phases",
            *("without", "with", "two-calls", "no-bind", "without"),
            *("--pods", "5000", "--window", "500"),
        ),
        False,
        "kube-scheduler's throughput at 5,000 nodes with and without the extender",
    ),
    ("client_decode", (), False, "Kubernetes clients' decode time (needs .venv-clients)"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="run every benchmark")
    parser.add_argument("--only", help="comma-separated modules to run (with their defaults)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    args = parser.parse_args(argv)
    if args.list:
        for name, extra, quick, what in BENCHMARKS:
            print(f"{name:20} {' '.join(extra):16} {'quick' if quick else 'long ':6} {what}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    failed = []
    for name, extra, quick, what in BENCHMARKS:
        if only is not None:
            if name not in only:
                continue
        elif not (quick or args.all):
            continue
        python = sys.executable
        if name == "client_decode":
            if not CLIENTS_PYTHON.exists():
                print(
                    f"== {name}: skipped, make .venv-clients with: python3 -m venv .venv-clients "
                    "&& .venv-clients/bin/pip install -e '.[bench-clients]'"
                )
                continue
            python = str(CLIENTS_PYTHON)
        print(f"\n== bench.{name} {' '.join(extra)}: {what}", flush=True)
        started = time.monotonic()
        code = subprocess.run([python, "-m", f"bench.{name}", *extra], cwd=ROOT, check=False)
        print(f"== bench.{name}: exit {code.returncode} after {time.monotonic() - started:.0f} s")
        if code.returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
