"""`kubectl ebb why` for a user who may read less than an operator: what the API server
refuses (403) becomes a line of the chain, never an error. (The plugin run by real users
against the real API server: tests/e2e/test_tenant_roles.py.)"""

from __future__ import annotations

from typing import Any, cast

import pytest

from ebb import keys, kube
from kubectl_ebb.main import main
from kubectl_ebb.views import Cli

FORBIDDEN = kube.ApiError(
    403, "Forbidden", 'events is forbidden: User "alice" cannot list resource "events"'
)


class TenantClient:
    """Answers like the API server for alice: her Job and its pods; the queue and the
    environment only if `may_view` (ebb-view); never the Events in namespace default."""

    def __init__(self, *, may_view: bool) -> None:
        self.may_view = may_view

    async def get_or_none(self, res: kube.Resource, name: str, namespace: str | None = None) -> Any:
        if res is kube.JOBS:
            return job()
        if not self.may_view:
            raise FORBIDDEN
        if res is kube.JOB_QUEUES:
            spec = {
                "priority": 1,
                "computeEnvironmentOrder": [{"order": 0, "computeEnvironment": "ce"}],
            }
            return {"metadata": {"name": "q"}, "spec": spec}
        return {"spec": {"maxvCpus": 4}, "status": {"desiredvCpus": 4, "currentvCpus": 0}}

    async def list(self, res: kube.Resource, namespace: str | None = None, **_: str) -> Any:
        if res is kube.EVENTS:
            raise FORBIDDEN
        return kube.ListResult([], "1")


def job() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "j",
            "namespace": "team-a",
            "labels": {keys.QUEUE_LABEL: "q"},
            "annotations": {keys.STATE: "STARTING", keys.REASON: "admitted"},
        }
    }


async def why(*, may_view: bool) -> list[str]:
    client = cast(kube.KubeClient, TenantClient(may_view=may_view))
    chain = await Cli(client, "team-a", None).reason_chain(job())
    return [line["text"] for line in chain]


async def test_events_of_a_compute_environment_not_visible_to_a_tenant_are_said_so() -> None:
    lines = await why(may_view=True)
    assert "autoscaler, ce: desired 4 / current 0 vCPUs, 0 nodes, 0 pods pending" in lines
    assert lines[-1] == "events of ce: not visible to you (they are in namespace default)"


async def test_a_queue_not_visible_to_a_tenant_is_said_so_and_the_job_still_explained() -> None:
    assert await why(may_view=False) == [
        "STARTING: admitted",
        "queue q: not visible to you; reading it takes ClusterRole ebb-view, bound by a"
        " ClusterRoleBinding (queues are cluster-wide)",
    ]


@pytest.mark.parametrize(
    ("argv", "environ", "error"),
    [
        (["--refresh-seconds=0"], {}, "--refresh-seconds: 0.0 must be above 0"),
        ([], {"EBB_UI_PORT": "http"}, "EBB_UI_PORT: 'http' is not a int"),
        (["--port=70000"], {}, "--port: 70000 is not a port (0 to 65535; 0: any free)"),
    ],
)
def test_kubectl_ebb_ui_names_a_bad_setting_before_anything_else(
    argv: list[str],
    environ: dict[str, str],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # No kubeconfig is read (none exists here): the setting is refused first.
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert main(["ui", *argv]) == 1
    assert capsys.readouterr().err == f"error: {error}\n"
