"""Workloads for the simulator: jobs as AWS Batch users submit them, and the compute
environments, queues and scheduling policies they run on.

Three sources:

- `alibaba(path)`: Alibaba's GPU cluster trace v2023 (`openb_pod_list_*.csv` from
  github.com/alibaba/clusterdata, folder cluster-trace-gpu-v2023; cite Weng et al.,
  USENIX ATC 2023). One job per pod.
- `swf(path)`: a Standard Workload Format log of the Parallel Workloads Archive
  (www.cs.huji.ac.il/labs/parallel/workload/), e.g. the NASA Ames iPSC/860 log. One job
  per line.
- `burst(...)`: a synthetic AWS-Batch-style burst: arrays of up to 10,000 children,
  dependency chains, CPU and GPU jobs arriving over an hour, then nothing.
- `gangs(...)`: a synthetic GPU training mix: multi-node jobs (gangs) of 4, 16 and 64
  nodes among single GPU jobs.

The traces are not shipped with Ebb (no licence lets it redistribute them): the loaders
take a path. How each trace's fields become a job is written on each loader.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ebb.jobspec import Dependency, DependencyType, ExitRule, RetryAction, RetryStrategy
from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy, ShareWeight
from ebb.resources import MIB, Resources

GIB = 1024 * MIB

# The zones of the simulated region and the subnets (one per zone) every environment uses.
SUBNET_ZONES = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-c": "us-east-1c"}

# Retry as AWS Batch users do on Spot: a lost host is retried (up to 3 attempts), a job
# that failed on its own is not.
SPOT_RETRY = RetryStrategy(
    3,
    (
        ExitRule(RetryAction.RETRY, on_status_reason="Host EC2*"),
        ExitRule(RetryAction.EXIT, on_exit_code="*"),
    ),
)


@dataclass(frozen=True, slots=True)
class SimJob:
    """One submitted job: a single job, an array job of `array_size` children, or a
    multi-node job (a gang, `ebb.dev/nodes`) of `nodes` pods, one per node."""

    name: str
    queue: str
    submit: float  # seconds from the start of the workload
    duration: float  # seconds one attempt of one pod runs
    request: Resources  # per pod
    array_size: int = 0  # 0: a single job; N >= 2: an array of N children
    nodes: int = 0  # 0: not a multi-node job; N >= 1: a gang of N pods (index 0 the main)
    share: str = ""
    priority: int = 0  # ebb.dev/scheduling-priority
    depends_on: tuple[Dependency, ...] = ()
    retry: RetryStrategy | None = None  # None: one attempt
    exit_code: int = 0  # how every attempt ends (0: it succeeds)
    spread: float = 0.0  # array children run duration × (1 ± spread/2), uniformly

    @property
    def pods(self) -> int:
        return self.array_size or self.nodes or 1


@dataclass(frozen=True)
class Scenario:
    """What the jobs run on: as a platform team would declare it."""

    environments: tuple[ComputeEnvironment, ...]
    queues: tuple[JobQueue, ...]
    policies: tuple[SchedulingPolicy, ...] = ()
    subnet_zones: dict[str, str] = field(default_factory=lambda: dict(SUBNET_ZONES))


@dataclass(frozen=True)
class Workload:
    name: str
    jobs: Sequence[SimJob]  # ordered by submit time
    scenario: Scenario
    description: str = ""

    @property
    def pods(self) -> int:
        """Jobs as AWS Batch counts them: every array child is one."""
        return sum(j.pods for j in self.jobs)


def environment(
    name: str,
    kind: str,
    max_vcpus: int,
    instance_types: Sequence[str],
    *,
    strategy: str = "BEST_FIT_PROGRESSIVE",
    scale_down_delay: int = 60,
) -> ComputeEnvironment:
    """A VALID compute environment in the simulated region (`kind`: EC2 or SPOT)."""
    return ComputeEnvironment(
        name=name,
        type=kind,
        max_vcpus=max_vcpus,
        instance_types=tuple(instance_types),
        allocation_strategy=strategy,
        subnets=tuple(SUBNET_ZONES),
        security_group_ids=("sg-sim",),
        instance_role="ebb-node",
        scale_down_delay_seconds=scale_down_delay,
    )


def _sorted(jobs: list[SimJob]) -> list[SimJob]:
    jobs.sort(key=lambda j: j.submit)  # stable: equal times keep their order
    return jobs


# --- Alibaba GPU trace v2023 --------------------------------------------------------------

ALIBABA_QUEUES = {"LS": "ls", "Guaranteed": "ls", "Burstable": "burstable", "BE": "be"}


def alibaba_scenario() -> Scenario:
    gpu_types = ("g4dn", "g5", "g6", "p3", "p4d", "p5")
    cpu_types = ("c6i", "m6i", "r6i")
    return Scenario(
        environments=(
            environment("gpu-ondemand", "EC2", 60_000, gpu_types),
            environment("gpu-spot", "SPOT", 60_000, gpu_types),
            environment("cpu-ondemand", "EC2", 20_000, cpu_types),
            environment("cpu-spot", "SPOT", 20_000, cpu_types),
        ),
        queues=(
            JobQueue("ls", 100, ("gpu-ondemand", "cpu-ondemand")),
            JobQueue("burstable", 50, ("gpu-spot", "gpu-ondemand", "cpu-spot", "cpu-ondemand")),
            JobQueue("be", 10, ("gpu-spot", "cpu-spot")),
        ),
    )


def alibaba(path: str | Path) -> Workload:
    """Alibaba's GPU cluster trace v2023, one job per pod:

    - submitted at `creation_time`; runs `deletion_time - scheduled_time` seconds (pods
      that were never scheduled: `deletion_time - creation_time`, as long as they lived);
    - requests `cpu_milli`, `memory_mib` and `num_gpu` whole NVIDIA GPUs; a pod that
      shared a GPU (`gpu_milli` < 1000) gets a whole one, as Kubernetes' nvidia.com/gpu
      is an integer;
    - queue by QoS class: LS and Guaranteed → `ls` (On-Demand, priority 100),
      Burstable → `burstable` (Spot, then On-Demand, 50), BE → `be` (Spot only, 10);
    - a pod whose phase was Failed fails (exit code 1, not retried); every job retries
      a lost Spot host up to 3 attempts.
    """
    jobs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            created = float(row["creation_time"])
            started = float(row["scheduled_time"]) if row["scheduled_time"] else created
            jobs.append(
                SimJob(
                    name=row["name"],
                    queue=ALIBABA_QUEUES[row["qos"]],
                    submit=created,
                    duration=max(float(row["deletion_time"]) - started, 1.0),
                    request=Resources(
                        int(row["cpu_milli"]), int(row["memory_mib"]) * MIB, int(row["num_gpu"])
                    ),
                    retry=SPOT_RETRY,
                    exit_code=1 if row["pod_phase"] == "Failed" else 0,
                )
            )
    return Workload(
        "alibaba",
        _sorted(jobs),
        alibaba_scenario(),
        f"Alibaba GPU trace v2023 ({Path(path).name}): {len(jobs):,} pods",
    )


# --- Standard Workload Format --------------------------------------------------------------


def swf_scenario(users: Sequence[str]) -> Scenario:
    fair = SchedulingPolicy(
        "users-fair",
        share_decay_seconds=3600,
        shares=tuple(ShareWeight(u, 1.0) for u in users),
    )
    return Scenario(
        environments=(
            environment("ondemand", "EC2", 256, ("optimal",)),
            environment("spot", "SPOT", 1024, ("optimal",)),
        ),
        queues=(
            JobQueue("system", 100, ("ondemand", "spot")),
            JobQueue("users", 10, ("spot", "ondemand"), scheduling_policy=fair.name),
        ),
        policies=(fair,),
    )


def swf(path: str | Path, *, memory_per_processor: int = 2 * GIB) -> Workload:
    """A Standard Workload Format log, one job per line:

    - submitted at field 2 (the NASA iPSC log's are really start times: its own
      scheduler's waits are already in the arrival pattern); runs field 4 seconds;
    - requests one vCPU and `memory_per_processor` per allocated processor (field 5),
      as one pod: the machine's processors were single-CPU nodes;
    - queue `system` (priority 100, On-Demand first) for group 2 (system personnel),
      else `users` (priority 10, Spot first) with fair share between user ids (field 12);
    - status 0 (failed) or 5 (cancelled) fails with exit code 1; a lost Spot host is
      retried up to 3 attempts.
    """
    jobs = []
    users: dict[str, None] = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if not fields or line.startswith(";"):
                continue
            number, submit, run, procs = fields[0], fields[1], fields[3], fields[4]
            status, user, group = fields[10], fields[11], fields[12]
            if int(procs) <= 0:
                continue  # nothing was allocated: not a job we can replay
            system = group == "2"
            share = "" if system else f"user-{user}"
            if share:
                users[share] = None
            jobs.append(
                SimJob(
                    name=f"swf-{number}",
                    queue="system" if system else "users",
                    submit=float(submit),
                    duration=max(float(run), 1.0),
                    request=Resources(int(procs) * 1000, int(procs) * memory_per_processor),
                    share=share,
                    retry=SPOT_RETRY,
                    exit_code=1 if status in ("0", "5") else 0,
                )
            )
    return Workload(
        "swf",
        _sorted(jobs),
        swf_scenario(sorted(users)),
        f"SWF log {Path(path).name}: {len(jobs):,} jobs",
    )


# --- synthetic AWS-Batch-style burst -------------------------------------------------------

TEAMS = ("team-a", "team-b", "team-c", "team-d", "team-e")
# (vCPUs, GiB, weight): the single CPU jobs' sizes.
_CPU_SHAPES = ((0.5, 1, 2), (1, 2, 4), (2, 4, 4), (2, 8, 2), (4, 8, 2), (4, 16, 1), (8, 32, 1))


def burst_scenario(strategy: str = "BEST_FIT_PROGRESSIVE") -> Scenario:
    research = SchedulingPolicy(
        "research-fair",
        share_decay_seconds=1800,
        # AWS Batch: a lower weightFactor buys a larger share.
        shares=tuple(ShareWeight(t, w) for t, w in zip(TEAMS, (1, 1, 2, 2, 4), strict=True)),
    )
    cpu = ("c6i", "m6i", "r6i", "c7i", "m7i")
    return Scenario(
        environments=(
            environment("ondemand-cpu", "EC2", 60_000, cpu),
            environment("spot-cpu", "SPOT", 400_000, cpu, strategy=strategy),
            environment("ondemand-gpu", "EC2", 10_000, ("g5", "g6")),
            environment("spot-gpu", "SPOT", 30_000, ("g5", "g6"), strategy=strategy),
        ),
        queues=(
            JobQueue("prod", 100, ("ondemand-cpu", "spot-cpu")),
            JobQueue("research", 50, ("spot-cpu",), scheduling_policy=research.name),
            JobQueue("gpu", 50, ("spot-gpu", "ondemand-gpu")),
        ),
        policies=(research,),
    )


def burst(
    jobs: int = 1_000_000,
    *,
    seed: int = 0,
    arrival_seconds: float = 3600.0,
    array_size: int = 10_000,
    array_fraction: float = 0.6,
    chain_fraction: float = 0.1,
    gpu_fraction: float = 0.02,
    failure_rate: float = 0.005,
    median_seconds: float = 600.0,
    strategy: str = "BEST_FIT_PROGRESSIVE",
) -> Workload:
    """`jobs` jobs (array children counted one by one) arriving over `arrival_seconds`:

    - `array_fraction` of them in arrays of `array_size` children (1 vCPU / 2 GiB or
      2 vCPU / 4 GiB, all children of one array alike), in the `research` (fair share
      among 5 teams) and `prod` queues;
    - `chain_fraction` in dependency chains of four: prep → two trainers (afterok) →
      a report (afterany of both), in `research`;
    - `gpu_fraction` single GPU jobs (1 GPU, 6 vCPU, 24 GiB: a g6.2xlarge each) in `gpu`;
    - the rest single CPU jobs of 0.5-8 vCPUs, a fifth of them in `prod` (On-Demand
      first, priority 100), the others in `research`.

    Run times are log-normal around `median_seconds` (σ 0.8, 30 s to 4 h; an array's
    children each vary ±25 % around the array's); `failure_rate` of the jobs fail
    with exit code 1 (an array: every child). Arrivals are a Poisson process. Every job
    retries a lost Spot host up to 3 attempts. Deterministic given `seed`.
    """
    rng = random.Random(seed)
    n_arrays = int(jobs * array_fraction) // array_size
    n_chains = int(jobs * chain_fraction) // 4
    n_gpu = int(jobs * gpu_fraction)
    n_single = jobs - n_arrays * array_size - n_chains * 4 - n_gpu
    # One entry per submission (an array or a chain is one): what it is, then when.
    kinds = ["array"] * n_arrays + ["chain"] * n_chains + ["gpu"] * n_gpu + ["cpu"] * n_single
    rng.shuffle(kinds)
    rate = len(kinds) / arrival_seconds
    shapes = [Resources(int(c * 1000), g * GIB) for c, g, _ in _CPU_SHAPES]
    weights = [w for _, _, w in _CPU_SHAPES]
    out: list[SimJob] = []
    clock = 0.0

    def runtime() -> float:
        return min(max(rng.lognormvariate(math.log(median_seconds), 0.8), 30.0), 14_400.0)

    def exit_code() -> int:
        return 1 if rng.random() < failure_rate else 0

    for i, kind in enumerate(kinds):
        clock += rng.expovariate(rate)
        team = TEAMS[rng.randrange(len(TEAMS))]
        if kind == "array":
            big = rng.random() < 0.5
            prod = rng.random() < 1 / 3
            out.append(
                SimJob(
                    f"array-{i}",
                    "prod" if prod else "research",
                    clock,
                    runtime(),
                    Resources(2000, 4 * GIB) if big else Resources(1000, 2 * GIB),
                    array_size=array_size,
                    share="" if prod else team,
                    spread=0.5,
                    retry=SPOT_RETRY,
                    exit_code=exit_code(),
                )
            )
        elif kind == "chain":
            out.extend(
                _chain(f"chain-{i}", clock, team, rng=rng, runtime=runtime, exit_code=exit_code)
            )
        elif kind == "gpu":
            out.append(
                SimJob(
                    f"gpu-{i}",
                    "gpu",
                    clock,
                    runtime(),
                    Resources(6000, 24 * GIB, 1),
                    retry=SPOT_RETRY,
                    exit_code=exit_code(),
                )
            )
        else:
            prod = rng.random() < 0.2
            out.append(
                SimJob(
                    f"job-{i}",
                    "prod" if prod else "research",
                    clock,
                    runtime(),
                    rng.choices(shapes, weights)[0],
                    share="" if prod else team,
                    priority=rng.randrange(10),
                    retry=SPOT_RETRY,
                    exit_code=exit_code(),
                )
            )
    return Workload(
        "burst",
        out,
        burst_scenario(strategy),
        f"synthetic burst: {jobs:,} jobs ({n_arrays} arrays of {array_size:,}, {n_chains:,} "
        f"chains of 4, {n_gpu:,} GPU jobs, {n_single:,} single CPU jobs) "
        f"over {arrival_seconds:.0f} s, seed {seed}",
    )


def _chain(
    prefix: str,
    clock: float,
    team: str,
    *,
    rng: random.Random,
    runtime: Callable[[], float],
    exit_code: Callable[[], int],
) -> list[SimJob]:
    """prep → train-a, train-b (afterok) → report (afterany of both), submitted together."""
    shape = Resources(2000, 8 * GIB)

    def job(name: str, deps: tuple[Dependency, ...]) -> SimJob:
        return SimJob(
            f"{prefix}-{name}",
            "research",
            clock,
            runtime(),
            shape,
            share=team,
            priority=rng.randrange(10),
            depends_on=deps,
            retry=SPOT_RETRY,
            exit_code=exit_code(),
        )

    prep = job("prep", ())
    ok = (Dependency(prep.name, DependencyType.AFTER_OK),)
    train_a, train_b = job("train-a", ok), job("train-b", ok)
    done = tuple(Dependency(t.name, DependencyType.AFTER_ANY) for t in (train_a, train_b))
    return [prep, train_a, train_b, job("report", done)]


# --- synthetic GPU training with multi-node jobs -------------------------------------------

GANG_SIZES = (4, 16, 64)
# One training pod per node: a 4-GPU node's GPUs and most of its CPU and memory (a
# g6.12xlarge or g5.12xlarge holds one).
TRAINING_POD = Resources(44_000, 160 * GIB, 4)


def gangs_scenario(max_vcpus: int = 4_800) -> Scenario:
    """One GPU Spot environment (then On-Demand) for the `train` queue; `max_vcpus` each
    (the default: 100 nodes of 48 vCPUs, so that gangs of 64 nodes contend)."""
    gpu = ("g5", "g6")
    return Scenario(
        environments=(
            environment("gpu-spot", "SPOT", max_vcpus, gpu),
            environment("gpu-ondemand", "EC2", max_vcpus, gpu),
        ),
        queues=(JobQueue("train", 100, ("gpu-spot", "gpu-ondemand")),),
    )


def gangs(
    jobs: int = 150,
    *,
    seed: int = 0,
    arrival_seconds: float = 6 * 3600.0,
    gang_fraction: float = 0.3,
    sizes: Sequence[int] = GANG_SIZES,
    median_seconds: float = 1800.0,
    max_vcpus: int = 4_800,
) -> Workload:
    """`jobs` jobs in the `train` queue arriving over `arrival_seconds` (Poisson):

    - `gang_fraction` of them multi-node training jobs, of `sizes` nodes (uniformly), one
      pod of `TRAINING_POD` per node;
    - the others single GPU jobs (1 GPU, 6 vCPU, 24 GiB);

    run times log-normal around `median_seconds` (σ 0.8, 60 s to 8 h). Every job retries
    a lost Spot host up to 3 attempts (a gang as a whole). Deterministic given `seed`.
    """
    rng = random.Random(seed)
    rate = jobs / arrival_seconds
    out: list[SimJob] = []
    clock = 0.0
    n_gangs = 0
    for i in range(jobs):
        clock += rng.expovariate(rate)
        duration = min(max(rng.lognormvariate(math.log(median_seconds), 0.8), 60.0), 28_800.0)
        if rng.random() < gang_fraction:
            n_gangs += 1
            size = sizes[rng.randrange(len(sizes))]
            out.append(
                SimJob(
                    f"train-{i}",
                    "train",
                    clock,
                    duration,
                    TRAINING_POD,
                    nodes=size,
                    retry=SPOT_RETRY,
                )
            )
        else:
            out.append(
                SimJob(
                    f"gpu-{i}",
                    "train",
                    clock,
                    duration,
                    Resources(6000, 24 * GIB, 1),
                    retry=SPOT_RETRY,
                )
            )
    return Workload(
        "gangs",
        out,
        gangs_scenario(max_vcpus),
        f"synthetic GPU training: {jobs:,} jobs ({n_gangs} multi-node jobs of "
        f"{', '.join(map(str, sizes))} nodes, {jobs - n_gangs} single GPU jobs) over "
        f"{arrival_seconds:.0f} s, maxvCpus {max_vcpus:,} per environment, seed {seed}",
    )
