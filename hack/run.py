"""`make run`: the local stack, ready to use.

Brings up the real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler with Ebb's extender, kwok) with Ebb's CRDs and scheduler daemon, adds
one KWOK node, and says what to do next. Everything it starts is stopped by
`make down`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = [sys.executable, str(ROOT / "hack" / "cluster.py")]
NODE = """
apiVersion: v1
kind: Node
metadata:
  name: local-node-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: local-node-0}
status:
  capacity: {cpu: "8", memory: 32Gi, pods: "110"}
  allocatable: {cpu: "8", memory: 32Gi, pods: "110"}
"""


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    state = Path(os.environ.get("EBB_STATE_DIR", ROOT / ".ebb")).resolve()
    subprocess.run([*CLUSTER, "up", "--ebb", f"--state-dir={state}"], check=True)
    path = (
        subprocess.run(
            [str(ROOT / "hack" / "build-binaries.sh"), "--print-path"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(state / "kubeconfig"),
        "PATH": path + os.pathsep + os.environ.get("PATH", ""),
    }
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=NODE,
        text=True,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"""
Ebb's local stack is up (state in {state}).

  export KUBECONFIG={state / "kubeconfig"}
  export PATH={path}:$PATH
  kubectl get computeenvironments,jobqueues,schedulingpolicies
  kubectl create -f manifests/examples/hello-job.yaml
  kubectl get jobs,pods -w

Logs of every component: {state / "logs"}/
Stop everything with: make down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
