"""The webhook configurations that point the API server at this daemon."""

from __future__ import annotations

import base64
from collections.abc import Callable

import structlog

from ebb import keys
from ebb.kube import KubeClient
from ebb.kube.resources import MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS
from extender.webhook.context import Json
from extender.webhook.routes import DEFINITION_VALIDATE_PATH, MUTATE_PATH, VALIDATE_PATH

log = structlog.get_logger("ebb.webhook")
CONFIGURATION_NAME = "ebb-scheduler"


def configurations(client_config: Callable[[str], Json], admitter: str) -> tuple[Json, Json]:
    """The Mutating- and ValidatingWebhookConfiguration for Jobs labelled ebb.dev/queue."""
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "matchPolicy": "Equivalent",
        "objectSelector": {"matchExpressions": [{"key": keys.QUEUE_LABEL, "operator": "Exists"}]},
    }
    rule = {
        "apiGroups": ["batch"],
        "apiVersions": ["v1"],
        "resources": ["jobs"],
        "scope": "Namespaced",
    }
    mutating = _configuration(
        "MutatingWebhookConfiguration",
        [
            {
                **common,
                "name": "jobs.mutate.ebb.dev",
                "reinvocationPolicy": "Never",
                "clientConfig": client_config(MUTATE_PATH),
                "rules": [{**rule, "operations": ["CREATE"]}],
            }
        ],
    )
    validating = _configuration(
        "ValidatingWebhookConfiguration",
        [
            {
                **common,
                "name": "jobs.validate.ebb.dev",
                "clientConfig": client_config(VALIDATE_PATH),
                # Creation is validated by the mutating webhook, which sees the Job
                # as its user wrote it; this one guards updates.
                "rules": [{**rule, "operations": ["UPDATE"]}],
                # Ebb's own writes need no review: spare the API server the call.
                "matchConditions": [
                    {"name": "not-ebb", "expression": f"request.userInfo.username != '{admitter}'"}
                ],
            },
            {
                **{k: v for k, v in common.items() if k != "objectSelector"},
                "name": "jobdefinitions.validate.ebb.dev",
                "clientConfig": client_config(DEFINITION_VALIDATE_PATH),
                "rules": [
                    {
                        "apiGroups": [keys.GROUP],
                        "apiVersions": [keys.VERSION],
                        "resources": ["jobdefinitions"],
                        "scope": "Namespaced",
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
            },
        ],
    )
    return mutating, validating


def _configuration(kind: str, webhooks: list[Json]) -> Json:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": webhooks,
    }


async def register(
    client: KubeClient,
    *,
    url: str | None,
    service: str | None,
    port: int,
    ca_bundle: bytes,
    admitter: str,
) -> None:
    """Create or update both configurations to point at this daemon."""
    ca = base64.b64encode(ca_bundle).decode()

    def client_config(path: str) -> Json:
        if url:
            return {"url": url.rstrip("/") + path, "caBundle": ca}
        namespace, _, name = (service or "ebb-system/ebb-scheduler").partition("/")
        return {
            "service": {"namespace": namespace, "name": name, "path": path, "port": port},
            "caBundle": ca,
        }

    mutating, validating = configurations(client_config, admitter)
    await client.apply(MUTATING_WEBHOOKS, mutating, field_manager="ebb-scheduler")
    await client.apply(VALIDATING_WEBHOOKS, validating, field_manager="ebb-scheduler")
    log.info("webhooks registered", url=url, service=service)


async def whoami(client: KubeClient) -> str:
    """The username this daemon's credentials authenticate as (SelfSubjectReview)."""
    review_obj = await client.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(((review_obj.get("status") or {}).get("userInfo") or {}).get("username", ""))
