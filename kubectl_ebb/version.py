"""`kubectl ebb version`: this plugin's version, the API server's, the Ebb API versions
it serves, and the version the Ebb scheduler runs (its `ebb_build_info`, read through
the API server's service proxy: `get services/proxy` in Ebb's namespace)."""

from __future__ import annotations

import re

import aiohttp

from ebb import keys, kube
from kubectl_ebb.output import Json

EBB_NAMESPACE = "ebb-system"
SCHEDULER_METRICS = "services/ebb-scheduler:metrics/proxy/metrics"
_BUILD_INFO = re.compile(r'^ebb_build_info\{[^}]*\bversion="([^"]*)"', re.MULTILINE)


def build_info_version(metrics: str) -> str | None:
    found = _BUILD_INFO.search(metrics)
    return found.group(1) if found else None


async def server_versions(client: kube.KubeClient, ebb_namespace: str) -> Json:
    """What the server side runs; an Ebb part that cannot be read says why instead."""
    server = await client.request("GET", "/version")
    out: Json = {"serverVersion": server}
    try:
        group = await client.request("GET", f"/apis/{keys.GROUP}")
        out["ebbApiVersions"] = [v["groupVersion"] for v in group.get("versions") or ()]
    except kube.ApiError as exc:
        out["ebbApiVersions"] = []
        if not exc.not_found:
            raise
    path = f"/api/v1/namespaces/{ebb_namespace}/{SCHEDULER_METRICS}"
    try:
        metrics = (await client.request_bytes("GET", path, timeout=10)).decode(errors="replace")
    except (kube.ApiError, aiohttp.ClientError, TimeoutError) as exc:
        out["ebbVersion"] = None
        out["ebbVersionError"] = f"service {ebb_namespace}/ebb-scheduler: {exc}"
        return out
    out["ebbVersion"] = build_info_version(metrics)
    if out["ebbVersion"] is None:
        out["ebbVersionError"] = f"service {ebb_namespace}/ebb-scheduler: no ebb_build_info"
    return out


def text(versions: Json) -> str:
    lines = [f"Client Version: {versions['clientVersion']}"]
    if "serverVersion" in versions:
        lines.append(f"Server Version: {versions['serverVersion'].get('gitVersion', '?')}")
        apis = (
            ", ".join(versions["ebbApiVersions"])
            or f"none (the {keys.GROUP} CRDs are not installed)"
        )
        lines.append(f"Ebb API Versions: {apis}")
        ebb = versions["ebbVersion"] or f"unknown ({versions.get('ebbVersionError')})"
        lines.append(f"Ebb Version: {ebb}")
    return "\n".join(lines)
