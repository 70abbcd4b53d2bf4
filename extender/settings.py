"""Every setting of the scheduler daemon: a flag and an EBB_* environment variable."""

from __future__ import annotations

from dataclasses import dataclass

from ebb.catalog import NodeOverheadSettings
from ebb.settings import setting


@dataclass(frozen=True)
class SchedulerSettings(NodeOverheadSettings):
    """Ebb scheduler daemon: job queues, admission, webhook and scheduler extender."""

    kubeconfig: str = setting("", "Kubeconfig to use; empty: in-cluster service account.")
    context: str = setting("", "Kubeconfig context (default: current).")
    listen_host: str = setting("0.0.0.0", "Address to serve on.")
    port: int = setting(8443, "HTTPS port of the extender and webhook.")
    ops_port: int = setting(
        8080, "Plain-HTTP port of /healthz, /readyz and /metrics (0: serve them on --port)."
    )
    tls_dir: str = setting(
        "/var/run/ebb/tls", "Directory holding (or to receive) ca.crt, tls.crt and tls.key."
    )
    tls_secret: str = setting(
        "", "namespace/name of a Secret that replicas share the serving certificate through."
    )
    tls_names: tuple[str, ...] = setting(
        ("localhost", "ebb-scheduler.ebb-system.svc"),
        "DNS names for a self-made serving certificate.",
    )
    tls_lifetime_seconds: float = setting(
        90 * 86400.0,
        "Lifetime of the certificates the daemon issues from its CA (serving; kube-scheduler's"
        " client certificate); each is renewed at two thirds of it and served without a restart.",
    )
    extender_clients: tuple[str, ...] = setting(
        ("kube-scheduler",),
        "Common names of the client certificates, issued by the CA in --tls-dir, that may call"
        " the extender verbs; any other caller is refused.",
    )
    webhook_clients: tuple[str, ...] = setting(
        (),
        "Common names of the client certificates, issued by the CA in --tls-dir, that may call"
        " the Job webhooks; empty: any caller (on EKS the API server presents none to webhooks).",
    )
    scheduler_client_secret: str = setting(
        "",
        "namespace/name of a kubernetes.io/tls Secret to keep kube-scheduler's client"
        " certificate in (the first of --extender-clients, from the CA in --tls-dir; renewed).",
    )
    webhook_url: str = setting(
        "",
        "Register the Job webhooks at this base URL (out-of-cluster runs).",
    )
    webhook_service: str = setting(
        "", "Register the Job webhooks at this Service, namespace/name (in-cluster runs)."
    )
    scheduler_name: str = setting(
        "",
        "schedulerName for batch pods: a kube-scheduler configured with Ebb's extender "
        "(on EKS, the chart's second kube-scheduler); empty keeps the default scheduler.",
    )
    starvation_seconds: float = setting(
        600.0, "After this long at the head of its queue, a job that does not fit stops backfill."
    )
    resync_seconds: float = setting(5.0, "Run a scheduling pass at least this often.")
    write_concurrency: int = setting(32, "Concurrent writes to the API server.")
    reason_refresh_seconds: float = setting(
        30.0,
        "Rewrite a waiting job's reason (queue position, usage) at most this often; a running"
        " job's attempts and array summary go with its next state change or after this long.",
    )
    leader_elect: bool = setting(
        True, "Elect a leader among replicas; only the leader admits and writes job state."
    )
    leader_election_namespace: str = setting("ebb-system", "Namespace of the leader Lease.")
    identity: str = setting("", "This replica's name in the Lease (default: host name and PID).")
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_json: bool = setting(True, "Log one JSON object per line (false: human-readable).")
    watch_silence_timeout: float = setting(
        150.0, "Seconds a watch may stay silent before it is reopened."
    )
    extender_max_body_bytes: int = setting(
        32 * 2**20,
        "Largest scheduler extender request body accepted, in bytes (with nodeCacheCapable: "
        "false every request carries whole Node objects).",
    )
    extender_read_timeout: float = setting(
        10.0, "Seconds a scheduler extender request body may take to arrive."
    )
    bind_concurrency: int = setting(
        32, "Bindings the extender's bind verb sends to the API server at once."
    )
    bind_wait: float = setting(
        2.0,
        "Seconds a bind waits for a free binding slot before it answers kube-scheduler with "
        "an Error (the pod is retried); keep it well under the extender's httpTimeout.",
    )
    gang_hold: float = setting(
        12.0,
        "Seconds the bind verb holds a multi-node job's pods (each on the node chosen for "
        "it) waiting for the rest of the gang before it binds them all; a gang not complete "
        "by then is released and retried. Keep it under the extender's httpTimeout and "
        "above kube-scheduler's podMaxBackoffSeconds (10 s by default), so every pod of the "
        "gang comes round while the first is held.",
    )
    assumed_pod_ttl: float = setting(
        30.0,
        "Seconds a pod the extender bound counts on its node before the pod watch shows it "
        "there (a safety net; the watch normally confirms within milliseconds).",
    )
