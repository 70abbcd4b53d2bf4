"""`make run`: the local stack, ready to use.

Brings up the real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler with Ebb's extender, kwok) with Ebb's CRDs and daemons (scheduler;
autoscaler against a local moto server, with the instance-boot bridge), adds one KWOK
node, a Spot and a GPU compute environment with their queues, and says what to do
next. Everything it starts is stopped by `make down`.
"""

from __future__ import annotations

import argparse
import json
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


def _batch_setup(info: dict[str, object]) -> str:
    """A Spot and a GPU compute environment on the local moto VPC, and their queues."""
    common = {
        "subnets": info["subnets"],
        "securityGroupIds": [info["securityGroup"]],
        "instanceRole": info["instanceRole"],
        "scaleDownDelaySeconds": 30,
    }
    docs = [
        _ce("spot", type="SPOT", maxvCpus=256, instanceTypes=["optimal"], **common),
        _ce("gpu", type="EC2", maxvCpus=64, instanceTypes=["g4dn", "g5"], **common),
        _queue("default", "spot"),
        _queue("gpu", "gpu"),
    ]
    return "".join("---\n" + json.dumps(d) + "\n" for d in docs)


def _ce(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ComputeEnvironment",
        "metadata": {"name": name},
        "spec": spec,
    }


def _queue(name: str, environment: str) -> dict[str, object]:
    return {
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": environment}],
        },
    }


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
    info = json.loads((state / "aws.json").read_text())
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=NODE + _batch_setup(info),
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

Batch capacity from zero (moto plays EC2; hack/bridge.py boots instances into nodes):
  kubectl create -f manifests/examples/batch-job.yaml     # queue "default" -> CE "spot"
  kubectl get computeenvironments,nodes -w
  python hack/interrupt.py --aws-endpoint-url={info["endpoint"]} \\
      --queue-url={info["queueUrl"]} --notice-seconds=10 <instance-id>

Logs of every component: {state / "logs"}/
Stop everything with: make down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
