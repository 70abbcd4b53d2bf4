"""The daemons' count of their own API requests names them as the API server does."""

from __future__ import annotations

import pytest

from ebb import kube
from ebb.kube.client import request_kind


@pytest.mark.parametrize(
    ("method", "path", "watch", "kind"),
    [
        ("GET", kube.JOBS.path("ns", "j"), False, ("GET", "jobs")),
        ("GET", kube.JOBS.path("ns"), False, ("LIST", "jobs")),
        ("GET", kube.PODS.path(), True, ("WATCH", "pods")),
        ("PATCH", kube.JOBS.path("ns", "j", "status"), False, ("PATCH", "jobs/status")),
        ("POST", kube.PODS.path("ns", "p", "binding"), False, ("POST", "pods/binding")),
        ("PATCH", kube.JOB_QUEUES.path(None, "q", "status"), False, ("PATCH", "jobqueues/status")),
        ("GET", kube.NAMESPACES.path(), False, ("LIST", "namespaces")),
        ("GET", kube.NAMESPACES.path(None, "ns"), False, ("GET", "namespaces")),
        (
            "PUT",
            kube.NAMESPACES.path(None, "ns", "finalize"),
            False,
            ("PUT", "namespaces/finalize"),
        ),
        ("GET", "/metrics", False, ("GET", "(none)")),
        ("GET", "/apis", False, ("GET", "(none)")),
    ],
)
def test_request_kind(method: str, path: str, watch: bool, kind: tuple[str, str]) -> None:
    assert request_kind(method, path, watch=watch) == kind
