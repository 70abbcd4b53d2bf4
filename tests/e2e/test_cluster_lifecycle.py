"""The local cluster (local_stack.cluster) on its own: a second cluster comes up, reports
itself, and `down` leaves no process behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from local_stack import ROOT
from local_stack.harness import LocalCluster, cluster_command


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and "pytest" not in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def test_up_status_down_leaves_nothing_behind(cluster: LocalCluster) -> None:
    state_dir = ROOT / ".ebb-test-lifecycle"
    port_base = cluster.port_base + 2000
    shutil.rmtree(state_dir, ignore_errors=True)
    try:
        out = cluster_command(
            "up", state_dir, port_base, f"--bin-path={cluster.bin_path}", "--extender=none"
        )
        assert "cluster ready in" in out
        assert (state_dir / "kubeconfig").exists()
        pids = {p.stem: int(p.read_text()) for p in (state_dir / "pids").glob("*.pid")}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert len(processes_mentioning(str(state_dir))) >= 5
        status = cluster_command("status", state_dir, port_base, f"--bin-path={cluster.bin_path}")
        assert status.count("running (pid") == 5
    finally:
        out = cluster_command("down", state_dir, port_base, f"--bin-path={cluster.bin_path}")
    assert "stopped" in out
    assert processes_mentioning(str(state_dir)) == []
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or _zombie_or_other(pid, state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)


def _zombie_or_other(pid: int, state_dir: Path) -> bool:
    """A PID may be reused by an unrelated process; it must not be one of ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True
    return str(state_dir) not in cmdline
