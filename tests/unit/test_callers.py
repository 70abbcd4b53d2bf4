"""Who may call which route, and when a certificate is due for renewal."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from ebb import tls
from extender.callers import Refusal, refusal
from extender.placement.scoring import untolerated_taint

RULES = {"/scheduler/": ("kube-scheduler",), "/webhook/": ("kube-apiserver",)}
ANYONE_ON_THE_WEBHOOK = {"/scheduler/": ("kube-scheduler",), "/webhook/": None}


@pytest.mark.parametrize(
    ("path", "common_name", "rules", "expected"),
    [
        ("/scheduler/bind", "kube-scheduler", RULES, None),
        ("/scheduler/bind", None, RULES, Refusal.NO_CLIENT_CERTIFICATE),
        ("/scheduler/filter", "kube-apiserver", RULES, Refusal.CLIENT_NOT_ALLOWED),
        ("/webhook/jobs/mutate", "kube-apiserver", RULES, None),
        ("/webhook/jobs/mutate", "kube-scheduler", RULES, Refusal.CLIENT_NOT_ALLOWED),
        ("/webhook/jobs/mutate", None, RULES, Refusal.NO_CLIENT_CERTIFICATE),
        ("/webhook/jobs/mutate", None, ANYONE_ON_THE_WEBHOOK, None),
        ("/scheduler/bind", None, ANYONE_ON_THE_WEBHOOK, Refusal.NO_CLIENT_CERTIFICATE),
        ("/metrics", None, RULES, None),
        ("/healthz", None, RULES, None),
    ],
)
def test_each_route_takes_only_its_callers(
    path: str, common_name: str | None, rules: Any, expected: Refusal | None
) -> None:
    assert refusal(path, common_name, rules) == expected


def test_a_certificate_is_due_at_two_thirds_of_its_lifetime() -> None:
    ca = tls.make_ca("test-ca")
    pair = tls.issue(ca, "x", server=True, lifetime=datetime.timedelta(hours=3))
    # issue() back-dates by 5 minutes: the lifetime runs from 5 minutes ago.
    issued = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    lifetime = datetime.timedelta(hours=3, minutes=5)
    assert not tls.renewal_due(pair.cert_pem, issued + lifetime * 0.66)
    assert tls.renewal_due(pair.cert_pem, issued + lifetime * 0.67)


@pytest.mark.parametrize(
    ("tolerations", "taints", "expected"),
    [
        ((), (("a", "", "NoSchedule"),), ("a", "", "NoSchedule")),
        ((), (("a", "", "PreferNoSchedule"),), None),
        ((("a", "Exists", "", ""),), (("a", "1", "NoExecute"),), None),
        ((("", "Exists", "", ""),), (("a", "1", "NoSchedule"),), None),
        ((("a", "Equal", "1", "NoSchedule"),), (("a", "1", "NoSchedule"),), None),
        (
            (("a", "Equal", "2", "NoSchedule"),),
            (("a", "1", "NoSchedule"),),
            ("a", "1", "NoSchedule"),
        ),
        ((("a", "Exists", "", "NoSchedule"),), (("a", "", "NoExecute"),), ("a", "", "NoExecute")),
    ],
)
def test_taints_are_tolerated_as_kube_scheduler_decides(
    tolerations: Any, taints: Any, expected: tuple[str, str, str] | None
) -> None:
    assert untolerated_taint(tolerations, taints) == expected
