"""The README's main command, `make run`, as a user runs it: twice in a row. The first
run keeps its cluster up (`make run KEEP=1`) and is looked at with kubectl as a user
would; the second follows at once, with that cluster still up, and must start afresh.
Each tells the README's story: capacity from zero and back, flaky and publish FAILED as
intended, spot-victim's Spot instance reclaimed and the job retried to success."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from local_stack import ROOT
from local_stack.harness import LocalCluster
from tests.e2e.test_cluster_lifecycle import processes_mentioning

JOBS = ("render", "merge", "train", "report", "flaky", "publish", "spot-victim", "sweep")
INTENDED_FAILURES = ("flaky", "publish")
RECLAIMED = re.compile(r"Host EC2 \(instance (i-[0-9a-f]+)\) terminated\.")


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def summary_rows(out: str) -> dict[str, list[str]]:
    """The summary's job table, as printed: JOB, QUEUE, STATE, ATTEMPTS, WHY (empty if
    there is none)."""
    lines = out.split("\nSummary\n", 1)[-1].strip("\n").splitlines()
    if not lines or lines[0].split() != ["JOB", "QUEUE", "STATE", "ATTEMPTS", "WHY"]:
        return {}
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = re.split(r" {3,}", line.strip())
        rows[cells[0]] = cells
    return rows


# One function: a flat checklist of the README's story, read in the story's order.
def story_problems(  # noqa: C901
    proc: subprocess.CompletedProcess[str], out_dir: Path
) -> list[str]:
    """What in one run's printed summary (and files) differs from the README's story."""
    out = proc.stdout
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}")
    if "workload submitted with kubectl create -f manifests/examples/workload/: 8 jobs" not in out:
        problems.append("the workload was not submitted as 8 jobs")
    if "Traceback" in out + proc.stderr:
        problems.append(f"a traceback was printed: {proc.stderr[-1500:]}")
    # Quiet by default: cached binaries in one line, no build output, no warnings.
    build_lines = [line for line in proc.stderr.splitlines() if "[build-binaries]" in line]
    cached = "[build-binaries] control-plane binaries: all cached in "
    if len(build_lines) != 1 or not build_lines[0].startswith(cached):
        problems.append(f"the binaries were not reported cached in one line: {build_lines}")
    noise = [line for line in proc.stderr.splitlines() if re.search(r"[Ww]arning|^go: ", line)]
    if noise:
        problems.append(f"make run printed warnings or build output: {noise[:5]}")
    rows = summary_rows(out)
    if not rows:
        return [*problems, f"no job table in the summary: {out[-1500:]}"]
    states = {name: cells[2] for name, cells in rows.items()}
    expected = {n: "FAILED" if n in INTENDED_FAILURES else "SUCCEEDED" for n in JOBS}
    if states != expected:
        problems.append(f"final states {states}")
    victim = rows.get("spot-victim", [""] * 5)
    if victim[3] != "2":
        problems.append(f"spot-victim took {victim[3]} attempts, not 2: {victim}")
    reclaimed = RECLAIMED.search(victim[-1])
    if not reclaimed or "attempt 1: " not in victim[-1]:
        problems.append(f"spot-victim's attempt 1 does not say its host was reclaimed: {victim}")
    flaky, publish = rows.get("flaky", [""] * 5), rows.get("publish", [""] * 5)
    if flaky[3] != "1" or "(intended)" not in flaky[-1]:
        problems.append(f"flaky should fail after 1 attempt, as intended: {flaky}")
    if publish[3] != "0" or "flaky" not in publish[-1] or "(intended)" not in publish[-1]:
        problems.append(f"publish should fail without starting, naming flaky: {publish}")
    intended = out.split("\nAs intended:\n", 1)[-1]
    for line in ("flaky FAILED after 1 attempt, as intended", "publish FAILED without starting"):
        if line not in intended:
            problems.append(f"the summary does not say: {line}")
    if "NOT as intended" in out:
        problems.append(out.split("NOT as intended:", 1)[1].strip())
    if "back to zero:" not in out or "every queue and compute environment counts 0" not in out:
        problems.append("the summary does not say everything is back to zero")
    result = json.loads((out_dir / "ebb-run.json").read_text())
    interruption = result["spot_interruption"] or {}
    if reclaimed and interruption.get("instance") != reclaimed.group(1):
        problems.append(f"reclaimed {interruption} but attempt 1 names {reclaimed.group(1)}")
    if interruption.get("reclaimed_at") is None:
        problems.append(f"no reclaim recorded: {interruption}")
    if not any(k.startswith(("g4dn", "g5")) for k in result["instance_hours"]):
        problems.append(f"train ran on no GPU instance: {result['instance_hours']}")
    if (out_dir / "ebb-run.png").read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        problems.append("no PNG")
    return problems


def kept_cluster_problems(state: Path, cluster: LocalCluster) -> list[str]:
    """The cluster `make run KEEP=1` left, read with kubectl and `kubectl ebb`."""
    env = {
        **os.environ,
        "KUBECONFIG": str(state / "kubeconfig"),
        "PATH": os.pathsep.join(
            [str(ROOT / ".venv" / "bin"), cluster.bin_path, os.environ["PATH"]]
        ),
    }

    def kubectl(*args: str) -> Any:
        out = subprocess.run(
            ["kubectl", *args], env=env, capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out) if "json" in args else out

    if not (state / "pids" / "kube-apiserver.pid").exists():
        return ["make run KEEP=1 left no cluster up"]
    problems = []
    for queue in kubectl("get", "jq", "-o", "json")["items"]:
        jobs = (queue.get("status") or {}).get("jobs") or {}
        busy = {s: n for s, n in jobs.items() if s not in ("SUCCEEDED", "FAILED") and n}
        if busy:
            problems.append(f"queue {queue['metadata']['name']} still counts {busy}")
    table = kubectl("get", "jq").splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", table[0])]
    for column in ("RUNNABLE", "RUNNING"):  # printer columns; a count not published is blank
        at = table[0].index(column)
        end = starts[starts.index(at) + 1]
        problems += [
            f"kubectl get jq: {row}" for row in table[1:] if row[at:end].strip() not in ("", "0")
        ]
    for ce in kubectl("ebb", "ces", "-o", "json")["items"]:
        status = ce.get("status") or {}
        busy = {f: status.get(f) for f in ("pendingPods", "nodes", "desiredvCpus") if status.get(f)}
        if busy:
            problems.append(f"compute environment {ce['metadata']['name']} still has {busy}")
    victim = kubectl("ebb", "describe", "spot-victim", "-o", "json")
    reasons = [a["statusReason"] for a in victim["attempts"]]
    if victim["state"] != "SUCCEEDED" or len(reasons) != 2 or not RECLAIMED.fullmatch(reasons[0]):
        problems.append(f"kubectl ebb describe spot-victim: {victim['state']}, {reasons}")
    for name, failed, reason in (("flaky", 1, "exit"), ("publish", 0, "dependency flaky failed")):
        job = kubectl("get", "job", name, "-o", "json")
        annotations, status = job["metadata"]["annotations"], job.get("status") or {}
        pods = int(status.get("failed", 0)) + int(status.get("succeeded", 0))
        if annotations.get("ebb.dev/state") != "FAILED" or pods != failed:
            problems.append(f"job {name}: {annotations.get('ebb.dev/state')} after {pods} pods")
        if reason not in annotations.get("ebb.dev/reason", "").lower():
            problems.append(f"job {name}'s reason: {annotations.get('ebb.dev/reason')}")
    return problems


def test_make_run_twice_tells_the_readme_story(cluster: LocalCluster, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme and "make down" in readme
    state = ROOT / ".ebb-quickstart"
    env = {
        **os.environ,
        "EBB_STATE_DIR": str(state),
        "EBB_PORT_BASE": str(cluster.port_base + 11000),
    }
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    problems = []
    try:
        started = time.monotonic()
        first = make({**env, "EBB_RUN_OUT": str(first_out)}, "run", "KEEP=1")
        took = [time.monotonic() - started]
        problems += [f"first run: {p}" for p in story_problems(first, first_out)]
        problems += [f"kept cluster: {p}" for p in kept_cluster_problems(state, cluster)]
        # Straight away, the kept cluster still up (and the first run's Jobs in it).
        started = time.monotonic()
        second = make({**env, "EBB_RUN_OUT": str(second_out)}, "run")
        took.append(time.monotonic() - started)
        problems += [f"second run: {p}" for p in story_problems(second, second_out)]
        if "stopping the cluster still running" not in second.stderr:
            problems.append("the second run did not stop the kept cluster")
    finally:
        down = make(env, "down")
    print(f"make run KEEP=1 took {took[0]:.0f} s, then make run {took[-1]:.0f} s")
    if down.returncode != 0 or "nothing (no cluster running)" not in down.stderr:
        problems.append(f"make down after the runs: {down.stderr}")
    # It stopped everything it started.
    problems += [f"left running: {p}" for p in processes_mentioning(str(state))]
    assert not problems, "\n".join(problems)
