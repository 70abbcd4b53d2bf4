"""The autoscaler's planner: how long a plan takes, and what it costs against a lower
bound. Run: python -m bench.autoscaler_planner

Time: 10,000 pending pods over the whole catalog (every x86_64 type, CPU and GPU),
median of 7 plans, for pods of 40 distinct shapes and of 1,000 distinct shapes.

Cost: for three mixes, the plan's On-Demand $/hour against the LP relaxation of the
packing's assignment formulation (see `lp_bound`): fractional instances and fractional
assignments of pods to them, over the usable capacity of the node overhead model
(kube-reserved, eviction threshold, DaemonSet requests, pod slots), each pod only on
types it fits whole (GPU pods on NVIDIA types, CPU pods on types without GPUs). No
real packing can cost less, so `plan / bound - 1` bounds how far a plan is from optimal.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from autoscaler.environments import environment
from autoscaler.planner import Environment, Offering, PendingPod, plan_launches
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment
from ebb.resources import MIB, Resources

CATALOG = shipped_catalog()
OVERHEAD = NodeOverheadSettings().node_overhead()  # the daemons' defaults
GI = 1024 * MIB


def whole_catalog(**spec: object) -> Environment:
    families = tuple(sorted({t.family for t in CATALOG if t.arch == "x86_64"}))
    fields: dict[str, object] = {
        "type": "EC2",
        "max_vcpus": 10_000_000,
        "instance_types": families,
        "subnets": ("subnet-a",),
        "security_group_ids": ("sg-1",),
        "instance_role": "ebb-node",
        **spec,
    }
    ce = ComputeEnvironment(name="ce", **fields)  # type: ignore[arg-type]
    return environment(
        ce,
        CATALOG,
        OVERHEAD,
        {"subnet-a": "us-east-1a"},
        (),
        vcpus=0,
        gpus=0,
    )


def pods_of(shapes: Sequence[tuple[Resources, int]]) -> list[PendingPod]:
    return [
        PendingPod(f"ns/s{j}-{i}", size, ("ce",))
        for j, (size, n) in enumerate(shapes)
        for i in range(n)
    ]


def random_shapes(count: int, pods: int, seed: int) -> list[tuple[Resources, int]]:
    rng = random.Random(seed)
    shapes = []
    for _ in range(count):
        gpu = rng.random() < 0.1
        cpu = rng.choice([250, 500, 1000, 2000, 4000, 8000, 16000])
        mem = rng.choice([512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]) * MIB
        shapes.append(Resources(cpu, mem, rng.choice([1, 1, 1, 2, 4]) if gpu else 0))
    counts = [pods // count + (1 if i < pods % count else 0) for i in range(count)]
    return list(zip(shapes, counts, strict=True))


def median_seconds(env: Environment, pods: list[PendingPod], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        plan_launches({"ce": env}, pods)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def lp_bound(offerings: Sequence[Offering], pods: list[PendingPod]) -> float:
    """Minimum of sum(price[t] * x[t]) over fractional instances x[t] >= 0 and fractional
    assignments y[t, s] >= 0 of pods of shape s to type t, such that every pod is
    assigned (sum_t y[t, s] >= n[s]); only to types it fits alone and of its class;
    each type's usable CPU, memory, GPUs and pod slots cover what is assigned to it
    (sum_s r[s] * y[t, s] <= cap[t] * x[t]); and at most k[t, s] * x[t] pods of a shape,
    k being how many whole pods of it one instance holds."""
    shapes: dict[Resources, int] = {}
    for p in pods:
        shapes[p.requests] = shapes.get(p.requests, 0) + 1
    sizes = list(shapes)
    n_types = len(offerings)
    pairs = []  # (type index, shape index, whole pods of the shape one instance holds)
    for t, o in enumerate(offerings):
        eligible_gpu = o.instance_type.nvidia_gpus > 0
        for s, r in enumerate(sizes):
            if (r.gpu > 0) != eligible_gpu or (r.gpu == 0 and o.instance_type.gpus):
                continue
            k = min(
                o.pod_slots,
                *(free // need for free, need in _dims(o.usable, r) if need),
            )
            if k > 0:
                pairs.append((t, s, k))
    n_vars = n_types + len(pairs)
    rows, cols, vals, bounds = [], [], [], []
    row = 0
    for s in range(len(sizes)):  # -sum_t y[t, s] <= -n[s]
        for v, (_, ps, _) in enumerate(pairs):
            if ps == s:
                rows.append(row)
                cols.append(n_types + v)
                vals.append(-1.0)
        bounds.append(-float(shapes[sizes[s]]))
        row += 1
    for t, o in enumerate(offerings):
        mine = [(v, ps, k) for v, (pt, ps, k) in enumerate(pairs) if pt == t]
        if not mine:
            continue
        caps = (o.usable.cpu_milli, o.usable.memory / GI, o.usable.gpu, o.pod_slots)
        for d, cap in enumerate(caps):  # sum_s r[s, d] y[t, s] - cap[t, d] x[t] <= 0
            for v, ps, _ in mine:
                need = (sizes[ps].cpu_milli, sizes[ps].memory / GI, sizes[ps].gpu, 1)[d]
                if need:
                    rows.append(row)
                    cols.append(n_types + v)
                    vals.append(float(need))
            rows.append(row)
            cols.append(t)
            vals.append(-float(cap))
            bounds.append(0.0)
            row += 1
        for v, _, k in mine:  # y[t, s] - k[t, s] x[t] <= 0
            rows += [row, row]
            cols += [n_types + v, t]
            vals += [1.0, -float(k)]
            bounds.append(0.0)
            row += 1
    a_ub = sparse.csr_matrix((vals, (rows, cols)), shape=(row, n_vars))
    costs = np.concatenate([[o.price for o in offerings], np.zeros(len(pairs))])
    result = linprog(costs, A_ub=a_ub, b_ub=np.array(bounds), bounds=(0, None), method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


def _dims(usable: Resources, need: Resources) -> list[tuple[int, int]]:
    return [
        (usable.cpu_milli, need.cpu_milli),
        (usable.memory, need.memory),
        (usable.gpu, need.gpu),
    ]


def plan_cost(env: Environment, pods: list[PendingPod]) -> tuple[float, int]:
    plan = plan_launches({"ce": env}, pods)
    assert not plan.waiting, sorted(set(plan.waiting.values()))[:3]
    prices = {o.name: o.price for o in env.offerings}
    cost = sum(prices[x.instance_type] * x.count for x in plan.launches)
    return cost, sum(x.count for x in plan.launches)


MIXES: dict[str, list[tuple[Resources, int]]] = {
    "uniform small (10,000 x 0.5 vCPU / 1 GiB)": [(Resources(500, GI), 10_000)],
    "mixed CPU- and memory-heavy (5,000 x 4 vCPU / 2 GiB + 5,000 x 0.5 vCPU / 12 GiB)": [
        (Resources(4000, 2 * GI), 5_000),
        (Resources(500, 12 * GI), 5_000),
    ],
    "GPU (1,500 x 1 GPU / 4 vCPU / 16 GiB + 100 x 4 GPU / 32 vCPU / 128 GiB)": [
        (Resources(4000, 16 * GI, 1), 1_500),
        (Resources(32000, 128 * GI, 4), 100),
    ],
}


def main() -> None:
    env = whole_catalog()
    print(f"catalog: {len(env.offerings)} x86_64 instance types offered")
    print("\n## planner time, 10,000 pending pods, whole catalog (median of 7)")
    for shapes in (40, 1000):
        pods = pods_of(random_shapes(shapes, 10_000, seed=shapes))
        print(f"{shapes:>5} distinct shapes: {median_seconds(env, pods) * 1000:8.1f} ms")
    print("\n## plan cost against the LP lower bound (On-Demand $/h)")
    print("| mix | plan $/h | instances | LP bound $/h | above bound |")
    print("|---|---:|---:|---:|---:|")
    for label, mix in MIXES.items():
        pods = pods_of(mix)
        cost, count = plan_cost(env, pods)
        bound = lp_bound(env.offerings, pods)
        print(
            f"| {label} | {cost:.2f} | {count} | {bound:.2f} | {100 * (cost / bound - 1):.2f} % |"
        )


if __name__ == "__main__":
    main()
