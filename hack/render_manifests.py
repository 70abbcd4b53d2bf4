"""Write what is rendered from a source kept elsewhere in the repository:

- manifests/install.yaml, the versioned release manifest (`kubectl apply --server-side -f`,
  and the kustomize base manifests/ points at it), from the chart charts/ebb with its
  default values (`helm template`, the helm hack/build-binaries.sh builds);
- deploy/aws/*.json, the IAM documents for use without CloudFormation, from
  deploy/aws/ebb-iam.yaml.

    python hack/render_manifests.py          # (make manifests) rewrite them
    python hack/render_manifests.py --check  # fail if a committed one is stale

tests/unit/test_chart.py runs the check.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local_stack import chart  # noqa: E402
from local_stack.cluster import binaries_path  # noqa: E402

IAM_TEMPLATE = ROOT / "deploy" / "aws" / "ebb-iam.yaml"


def versions() -> dict[str, str]:
    text = (ROOT / "hack" / "versions.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.MULTILINE))


def install_yaml() -> str:
    kubernetes = versions()["KUBERNETES_VERSION"]
    app_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"]
    command = [
        "template",
        "ebb",
        "charts/ebb",
        f"--namespace={chart.NAMESPACE}",
        f"--kube-version={kubernetes}",
        "--include-crds",
        "--set=namespace.create=true",
    ]
    header = (
        f"# Ebb {app_version}: the release manifest, for Kubernetes {kubernetes}"
        " (its kube-scheduler image).\n"
        "# Rendered from charts/ebb by `make manifests`; do not edit, change the chart:\n"
        f"#   helm {' '.join(command)}\n"
        "# Install: kubectl apply --server-side -f manifests/install.yaml (with the image"
        " ebb:<version>),\n"
        "# or a kustomize overlay of manifests/ that sets `images:`. helm install gives"
        " you the values.\n"
    )
    return header + chart.helm(binaries_path(), *command)


def policy_document(value: Any) -> Any:
    """A CloudFormation policy document as plain IAM JSON: each Fn::Sub becomes its
    string, whose ${...} placeholders the reader replaces."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            return value["Fn::Sub"]
        return {k: policy_document(v) for k, v in value.items()}
    if isinstance(value, list):
        return [policy_document(v) for v in value]
    return value


def iam_documents() -> dict[Path, str]:
    resources = yaml.safe_load(IAM_TEMPLATE.read_text())["Resources"]
    documents = {
        "autoscaler-policy.json": resources["EbbAutoscalerPolicy"]["Properties"]["PolicyDocument"],
        "node-role-trust-policy.json": resources["NodeRole"]["Properties"][
            "AssumeRolePolicyDocument"
        ],
    }
    return {
        IAM_TEMPLATE.parent / name: json.dumps(policy_document(doc), indent=2) + "\n"
        for name, doc in documents.items()
    }


def rendered() -> dict[Path, str]:
    return {chart.INSTALL: install_yaml(), **iam_documents()}


def stale() -> list[Path]:
    """The rendered files whose committed text is not what their source renders."""
    return [
        path for path, text in rendered().items() if not path.exists() or path.read_text() != text
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        paths = stale()
        for path in paths:
            print(f"{path.relative_to(ROOT)} is stale: run make manifests", file=sys.stderr)
        return 1 if paths else 0
    for path, text in rendered().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
