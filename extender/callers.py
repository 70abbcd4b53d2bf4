"""Who may call the daemon's TLS port: kube-scheduler the extender verbs, the API server
the webhooks (where it has a client certificate to show).

The listener asks every caller for a client certificate and refuses, in the handshake,
one the daemon's CA did not issue (CERT_OPTIONAL); a caller may still send none,
because /healthz and /metrics (when they share the port) and, on EKS, the webhooks take
anyone. Each route then checks the certificate's common name here. Every refusal is
counted by reason and logged.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from enum import StrEnum

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter

from ebb import tls

log = structlog.get_logger("ebb.callers")


class Refusal(StrEnum):
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"  # handshake: not from Ebb's CA
    TLS_HANDSHAKE = "tls_handshake"  # handshake: old TLS, plain HTTP, ...
    NO_CLIENT_CERTIFICATE = "no_client_certificate"
    CLIENT_NOT_ALLOWED = "client_not_allowed"  # Ebb's CA, but not a caller of this route
    NOT_A_BATCH_POD = "not_a_batch_pod"  # bind: the pod has no Ebb queue
    UNKNOWN_POD = "unknown_pod"  # bind: a pod Ebb has not seen
    NODE_REJECTED = "node_rejected"  # bind: filter would not have kept the node


_REFUSED = Counter(
    "ebb_refused_calls_total",
    "Calls to the extender or webhook refused, by reason (untrusted_certificate,"
    " tls_handshake, no_client_certificate, client_not_allowed; bind: not_a_batch_pod,"
    " unknown_pod, node_rejected).",
    ["reason"],
)
for _reason in Refusal:
    _REFUSED.labels(_reason.value)


def refuse(reason: Refusal, message: str, **context: object) -> str:
    """Count and log a refusal; returns `message`, for the reply."""
    _REFUSED.labels(reason.value).inc()
    log.warning("call refused", reason=reason.value, error=message, **context)
    return message


def handshake_failed(exc: ssl.SSLError) -> None:
    untrusted = isinstance(exc, ssl.SSLCertVerificationError)
    reason = Refusal.UNTRUSTED_CERTIFICATE if untrusted else Refusal.TLS_HANDSHAKE
    refuse(reason, f"TLS handshake failed: {exc.reason or exc}")


# Route prefix -> the client certificate names that may call it; None: anyone.
Rules = Mapping[str, Sequence[str] | None]


def refusal(path: str, common_name: str | None, rules: Rules) -> Refusal | None:
    """Why a caller with this client certificate (None: none) may not call `path`."""
    for prefix, allowed in rules.items():
        if path.startswith(prefix) and allowed is not None:
            if common_name is None:
                return Refusal.NO_CLIENT_CERTIFICATE
            if common_name not in allowed:
                return Refusal.CLIENT_NOT_ALLOWED
    return None


def only_allowed_callers(rules: Rules) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        common_name = tls.peer_common_name(ssl_object)
        why = refusal(request.path, common_name, rules)
        if why is None:
            return await handler(request)
        who = f"client certificate {common_name!r}" if common_name else "no client certificate"
        message = refuse(why, f"{request.path}: {who} may not call it", peer=request.remote)
        status = 401 if why is Refusal.NO_CLIENT_CERTIFICATE else 403
        return web.json_response({"Error": message}, status=status)

    return check
