"""Ebb's Helm chart (charts/ebb), rendered with the helm hack/build-binaries.sh builds, and
the release manifest rendered from it (manifests/install.yaml, `make manifests`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from local_stack import ROOT

CHART = ROOT / "charts" / "ebb"
INSTALL = ROOT / "manifests" / "install.yaml"
NAMESPACE = "ebb-system"
# What Ebb's daemons need to run against a cluster from outside it: its resources, its
# namespace, and who may do what (not the workloads: the local stack runs the daemons).
ACCESS_KINDS = frozenset(
    {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
)


def helm(bin_path: str, *args: str) -> str:
    """Runs helm (from `bin_path`, a PATH fragment) in the checkout; its output."""
    binary = next(
        (Path(d) / "helm" for d in bin_path.split(":") if (Path(d) / "helm").exists()), None
    )
    if binary is None:
        raise SystemExit(f"helm not found in {bin_path}: run hack/build-binaries.sh")
    done = subprocess.run(
        [str(binary), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def template(bin_path: str, *args: str) -> list[dict[str, Any]]:
    """The objects `helm template ebb charts/ebb -n ebb-system ARGS` renders."""
    out = helm(bin_path, "template", "ebb", str(CHART), f"--namespace={NAMESPACE}", *args)
    return [o for o in yaml.safe_load_all(out) if o]


def release_objects() -> list[dict[str, Any]]:
    """The objects of the committed release manifest."""
    return [o for o in yaml.safe_load_all(INSTALL.read_text()) if o]
