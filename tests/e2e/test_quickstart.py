"""The README's main command, `make run`, as a new user runs it: it brings everything
up, runs the example workload from zero capacity back to zero, prints the summary,
writes the plot, and stops everything it started."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.cluster import ROOT, LocalCluster
from tests.e2e.test_cluster_lifecycle import processes_mentioning


def test_make_run_as_the_readme_says(cluster: LocalCluster, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    state = ROOT / ".ebb-quickstart"
    env = {
        **os.environ,
        "EBB_STATE_DIR": str(state),
        "EBB_PORT_BASE": str(cluster.port_base + 11000),
        "EBB_RUN_OUT": str(tmp_path),
    }
    proc = subprocess.run(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "workload submitted with kubectl create -f manifests/examples/workload/: 8 jobs" in out
    assert "Summary" in out and "back to zero:" in out
    result = json.loads((tmp_path / "ebb-run.json").read_text())
    assert result["job_states"] == {
        "render": "SUCCEEDED",
        "merge": "SUCCEEDED",
        "train": "SUCCEEDED",
        "report": "SUCCEEDED",
        "sweep": "SUCCEEDED",
        "spot-victim": "SUCCEEDED",
        "flaky": "FAILED",
        "publish": "FAILED",
    }
    assert result["spot_interruption"] and "spot-victim" in result["spot_interruption"]
    assert result["peak_nodes"] > 0
    assert result["back_to_zero_s"] is not None
    assert any(key.startswith("g4dn") or key.startswith("g5") for key in result["instance_hours"])
    assert (tmp_path / "ebb-run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # It stopped everything it started.
    assert processes_mentioning(str(state)) == []
