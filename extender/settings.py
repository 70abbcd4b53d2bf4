"""Every setting of the scheduler daemon: a flag and an EBB_* environment variable."""

from __future__ import annotations

from dataclasses import dataclass

from ebb.settings import setting


@dataclass(frozen=True)
class SchedulerSettings:
    """Ebb scheduler daemon: job queues, admission, webhook and scheduler extender."""

    kubeconfig: str = setting("", "Kubeconfig to use; empty: in-cluster service account.")
    context: str = setting("", "Kubeconfig context (default: current).")
    listen_host: str = setting(
        "0.0.0.0", "Address to serve the extender, webhook and ops routes on."
    )
    port: int = setting(8443, "HTTPS port of the extender and webhook.")
    ops_port: int = setting(
        8080, "Plain-HTTP port of /healthz, /readyz and /metrics (0: serve them on --port)."
    )
    tls_dir: str = setting(
        "/var/run/ebb/tls", "Directory holding (or to receive) ca.crt, tls.crt and tls.key."
    )
    tls_names: tuple[str, ...] = setting(
        ("localhost", "ebb-scheduler.ebb-system.svc"),
        "DNS names for a self-made serving certificate.",
    )
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
    assumed_pod_ttl: float = setting(
        30.0,
        "Seconds a pod the extender bound counts on its node before the pod watch shows it "
        "there (a safety net; the watch normally confirms within milliseconds).",
    )
