"""How to reach the API server: a kubeconfig file, or the in-cluster service account.

Supports what real clusters hand out: CA and client certificates (inline or files),
bearer tokens (inline or files, re-read as they rotate), and exec credential plugins
such as `aws eks get-token`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TOKEN_FILE_TTL = 60.0


class ConfigError(Exception):
    """The kubeconfig (or in-cluster environment) cannot be used; says why."""


@dataclass
class TokenSource:
    """A bearer token that may come from a string, a rotating file or an exec plugin."""

    static: str | None = None
    file: Path | None = None
    exec_spec: Mapping[str, Any] | None = None
    _cached: str | None = field(default=None, repr=False)
    _expires: float = field(default=0.0, repr=False)

    async def token(self) -> str | None:
        if self.static is not None:
            return self.static
        now = time.monotonic()
        if self._cached is not None and now < self._expires:
            return self._cached
        if self.file is not None:
            self._cached = self.file.read_text().strip()
            self._expires = now + _TOKEN_FILE_TTL
        elif self.exec_spec is not None:
            self._cached, lifetime = await _run_exec_plugin(self.exec_spec)
            self._expires = now + lifetime
        return self._cached


async def _run_exec_plugin(spec: Mapping[str, Any]) -> tuple[str, float]:
    command = spec.get("command")
    if not command:
        raise ConfigError("users[].user.exec.command is empty")
    env = dict(os.environ)
    for item in spec.get("env") or ():
        env[item["name"]] = item["value"]
    proc = await asyncio.create_subprocess_exec(
        command,
        *(spec.get("args") or ()),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigError(
            f"credential plugin {command!r} exited {proc.returncode}: "
            + err.decode(errors="replace")
        )
    status = orjson.loads(out).get("status") or {}
    token = status.get("token")
    if not token:
        raise ConfigError(f"credential plugin {command!r} returned no status.token")
    lifetime = 300.0
    expiry = status.get("expirationTimestamp")
    if expiry:
        from datetime import datetime

        remaining = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() - time.time()
        lifetime = max(0.0, remaining - 30)
    return str(token), lifetime


@dataclass
class ClusterAccess:
    """Everything a client needs: the server URL, TLS settings and credentials."""

    server: str
    ssl_context: ssl.SSLContext
    tokens: TokenSource
    namespace: str = "default"
    context_name: str = ""

    async def headers(self) -> dict[str, str]:
        token = await self.tokens.token()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _material(
    entry: Mapping[str, Any], data_key: str, file_key: str, base: Path
) -> bytes | Path | None:
    if entry.get(data_key):
        return base64.b64decode(entry[data_key])
    if entry.get(file_key):
        path = Path(entry[file_key])
        return path if path.is_absolute() else base / path
    return None


def _ssl_context(cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path) -> ssl.SSLContext:
    ca = _material(cluster, "certificate-authority-data", "certificate-authority", base)
    ctx = ssl.create_default_context()
    if isinstance(ca, bytes):
        ctx.load_verify_locations(cadata=ca.decode())
    elif isinstance(ca, Path):
        ctx.load_verify_locations(cafile=str(ca))
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = _material(user, "client-certificate-data", "client-certificate", base)
    key = _material(user, "client-key-data", "client-key", base)
    if cert is not None and key is not None:
        _load_client_cert(ctx, cert, key)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes | Path, key: bytes | Path) -> None:
    if isinstance(cert, Path) and isinstance(key, Path):
        ctx.load_cert_chain(str(cert), str(key))
        return
    # ssl wants files; write inline material to private temporary files.
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, material in (("cert.pem", cert), ("key.pem", key)):
            path = Path(tmp) / name
            path.write_bytes(material if isinstance(material, bytes) else material.read_bytes())
            path.chmod(0o600)
            paths.append(str(path))
        ctx.load_cert_chain(paths[0], paths[1])


def _named(items: list[Mapping[str, Any]] | None, name: str, kind: str) -> Mapping[str, Any]:
    for item in items or ():
        if item.get("name") == name:
            return item.get(kind) or {}
    raise ConfigError(f"kubeconfig has no {kind} named {name!r}")


def from_kubeconfig(path: Path, context: str | None = None) -> ClusterAccess:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context; pass a context")
    ctx = _named(doc.get("contexts"), name, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster")
    user = _named(doc.get("users"), ctx.get("user", ""), "user") if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {ctx.get('cluster')!r} in {path} has no server")
    base = path.parent
    tokens = TokenSource(
        static=user.get("token"),
        file=Path(user["tokenFile"]) if user.get("tokenFile") else None,
        exec_spec=user.get("exec"),
    )
    return ClusterAccess(
        server=str(server).rstrip("/"),
        ssl_context=_ssl_context(cluster, user, base),
        tokens=tokens,
        namespace=ctx.get("namespace") or "default",
        context_name=str(name),
    )


def in_cluster(environ: Mapping[str, str], directory: Path = IN_CLUSTER_DIR) -> ClusterAccess:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "no kubeconfig given and not running in a pod "
            "(KUBERNETES_SERVICE_HOST/PORT unset); pass --kubeconfig"
        )
    ctx = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    namespace_file = directory / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
    if ":" in host:
        host = f"[{host}]"
    return ClusterAccess(
        server=f"https://{host}:{port}",
        ssl_context=ctx,
        tokens=TokenSource(file=directory / "token"),
        namespace=namespace,
        context_name="in-cluster",
    )


def load_access(
    kubeconfig: str | None, context: str | None, environ: Mapping[str, str]
) -> ClusterAccess:
    """The kubeconfig if one is named (or $KUBECONFIG, or ~/.kube/config), else in-cluster."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig).expanduser(), context)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(environ)
    candidates = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates.append(str(Path.home() / ".kube" / "config"))
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.exists():
            return from_kubeconfig(path, context)
    raise ConfigError("no kubeconfig found; pass --kubeconfig or set KUBECONFIG")
