"""How to reach the API server: a kubeconfig file, or the in-cluster service account.

Supports what real clusters hand out: CA and client certificates (inline or files),
bearer tokens (inline or files, re-read as they rotate), exec credential plugins such
as `aws eks get-token`, `proxy-url` (http/https) and `tls-server-name`; a `KUBECONFIG`
list of files is merged as kubectl merges it.
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
    exec_cluster: Mapping[str, Any] | None = None  # for the plugin's provideClusterInfo
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
            self._cached, lifetime = await _run_exec_plugin(self.exec_spec, self.exec_cluster)
            self._expires = now + lifetime
        return self._cached


async def _run_exec_plugin(
    spec: Mapping[str, Any], cluster: Mapping[str, Any] | None
) -> tuple[str, float]:
    command = spec.get("command")
    if not command:
        raise ConfigError("users[].user.exec.command is empty")
    env = dict(os.environ)
    for item in spec.get("env") or ():
        env[item["name"]] = item["value"]
    # What kubectl tells a credential plugin (client.authentication.k8s.io ExecCredential).
    exec_info: dict[str, Any] = {
        "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    if spec.get("provideClusterInfo") and cluster is not None:
        exec_info["spec"]["cluster"] = {
            "server": cluster.get("server"),
            "certificate-authority-data": cluster.get("certificate-authority-data"),
        }
    env["KUBERNETES_EXEC_INFO"] = orjson.dumps(exec_info).decode()
    try:
        proc = await asyncio.create_subprocess_exec(
            command,
            *(spec.get("args") or ()),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        hint = spec.get("installHint")
        raise ConfigError(
            f"credential plugin {command!r} cannot run: {exc}" + (f"\n{hint}" if hint else "")
        ) from None
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
    proxy_url: str | None = None
    tls_server_name: str | None = None

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


def _ssl_context(
    cluster: Mapping[str, Any], user: Mapping[str, Any], cluster_base: Path, user_base: Path
) -> ssl.SSLContext:
    ca = _material(cluster, "certificate-authority-data", "certificate-authority", cluster_base)
    ctx = ssl.create_default_context()
    if isinstance(ca, bytes):
        ctx.load_verify_locations(cadata=ca.decode())
    elif isinstance(ca, Path):
        ctx.load_verify_locations(cafile=str(ca))
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = _material(user, "client-certificate-data", "client-certificate", user_base)
    key = _material(user, "client-key-data", "client-key", user_base)
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


@dataclass(frozen=True, slots=True)
class _Entry:
    """A named cluster, user or context, and the directory of the file it came from
    (its relative paths are relative to that file, as kubectl reads them)."""

    body: Mapping[str, Any]
    base: Path


@dataclass
class Kubeconfig:
    """One or more kubeconfig files merged as kubectl merges `KUBECONFIG=a:b`: the first
    file to name a cluster, user or context wins it, and current-context is the first
    file's that sets one."""

    paths: list[Path]
    current_context: str = ""
    entries: dict[str, dict[str, _Entry]] = field(
        default_factory=lambda: {"clusters": {}, "users": {}, "contexts": {}}
    )

    @classmethod
    def load(cls, paths: list[Path]) -> Kubeconfig:
        merged = cls(paths)
        for path in paths:
            try:
                doc = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
            if not isinstance(doc, dict):
                raise ConfigError(f"kubeconfig {path} is not a mapping")
            merged.current_context = merged.current_context or str(doc.get("current-context") or "")
            for kind, found in merged.entries.items():
                singular = kind[:-1]
                for item in doc.get(kind) or ():
                    name = str(item.get("name", ""))
                    if name and name not in found:
                        found[name] = _Entry(item.get(singular) or {}, path.parent)
        return merged

    def named(self, kind: str, name: str) -> _Entry:
        entry = self.entries[kind].get(name)
        if entry is None:
            raise ConfigError(f"kubeconfig {self._where} has no {kind[:-1]} named {name!r}")
        return entry

    @property
    def _where(self) -> str:
        return os.pathsep.join(str(p) for p in self.paths)

    def access(self, context: str | None = None) -> ClusterAccess:
        name = context or self.current_context
        if not name:
            raise ConfigError(f"kubeconfig {self._where} has no current-context; pass --context")
        ctx = self.named("contexts", name).body
        cluster_entry = self.named("clusters", str(ctx.get("cluster", "")))
        cluster = cluster_entry.body
        user_entry = self.named("users", str(ctx["user"])) if ctx.get("user") else None
        user = user_entry.body if user_entry else {}
        user_base = user_entry.base if user_entry else cluster_entry.base
        server = cluster.get("server")
        if not server:
            raise ConfigError(f"cluster {ctx.get('cluster')!r} in {self._where} has no server")
        proxy = cluster.get("proxy-url")
        if proxy and not str(proxy).startswith(("http://", "https://")):
            raise ConfigError(
                f"cluster {ctx.get('cluster')!r}: proxy-url {proxy!r} is not supported "
                "(http:// and https:// proxies are; socks5 is not)"
            )
        token_file = user.get("tokenFile")
        tokens = TokenSource(
            static=user.get("token"),
            file=_resolved(Path(token_file), user_base) if token_file else None,
            exec_spec=_exec_spec(user.get("exec"), user_base),
            exec_cluster=cluster,
        )
        return ClusterAccess(
            server=str(server).rstrip("/"),
            ssl_context=_ssl_context(cluster, user, cluster_entry.base, user_base),
            tokens=tokens,
            namespace=ctx.get("namespace") or "default",
            context_name=str(name),
            proxy_url=str(proxy) if proxy else None,
            tls_server_name=cluster.get("tls-server-name") or None,
        )


def _resolved(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def _exec_spec(spec: Mapping[str, Any] | None, base: Path) -> Mapping[str, Any] | None:
    """The exec plugin's spec with its command resolved as kubectl does: a relative path
    with a slash is relative to the kubeconfig; a bare name is looked up on PATH."""
    if spec is None:
        return None
    command = str(spec.get("command") or "")
    if command and not Path(command).is_absolute() and os.sep in command:
        command = str(base / command)
    return {**spec, "command": command}


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


def kubeconfig_paths(kubeconfig: str | None, environ: Mapping[str, str]) -> list[Path] | None:
    """The files kubectl would read: --kubeconfig alone, else every existing file of
    $KUBECONFIG (a list, merged), else ~/.kube/config; None: none (in-cluster, perhaps)."""
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    existing = [p for p in listed if p.exists()]
    if existing:
        return existing
    default = Path.home() / ".kube" / "config"
    if not listed and not environ.get("KUBERNETES_SERVICE_HOST") and default.exists():
        return [default]
    return None


def load_access(
    kubeconfig: str | None, context: str | None, environ: Mapping[str, str]
) -> ClusterAccess:
    """As kubectl finds its cluster: --kubeconfig, else $KUBECONFIG's files merged, else
    in-cluster (in a pod), else ~/.kube/config."""
    paths = kubeconfig_paths(kubeconfig, environ)
    if paths:
        return Kubeconfig.load(paths).access(context)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(environ)
    raise ConfigError("no kubeconfig found; pass --kubeconfig or set KUBECONFIG")
