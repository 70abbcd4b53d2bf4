"""The kustomize base for a real cluster (manifests/, over the release manifest rendered
from the chart) builds, and the API server accepts every object in it (server-side dry
run): CRDs, RBAC, Deployments, the second kube-scheduler."""

from __future__ import annotations

import yaml

from local_stack import ROOT
from local_stack.harness import LocalCluster


def test_kustomize_base_is_accepted_by_the_api_server(cluster: LocalCluster) -> None:
    built = cluster.kubectl("kustomize", str(ROOT / "manifests"))
    objects = [o for o in yaml.safe_load_all(built) if o]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "ebb-scheduler") in kinds
    assert ("Deployment", "ebb-autoscaler") in kinds
    assert ("Deployment", "ebb-kube-scheduler") in kinds
    assert ("CustomResourceDefinition", "jobqueues.ebb.dev") in kinds
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "-k",
        str(ROOT / "manifests"),
    )
    assert "deployment.apps/ebb-scheduler serverside-applied (server dry run)" in out


def test_daemons_run_non_root_with_a_read_only_root(cluster: LocalCluster) -> None:
    built = cluster.kubectl("kustomize", str(ROOT / "manifests"))
    deployments = [o for o in yaml.safe_load_all(built) if o and o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
