"""A real local Kubernetes control plane for Ebb's tests and local run.

    python -m local_stack.cluster up|down|status
    python -m local_stack.cluster restart COMPONENT

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler (with Ebb's
scheduler extender configured) and kwok on 127.0.0.1, installs Ebb's CRDs, and writes
an admin kubeconfig to $EBB_STATE_DIR/kubeconfig. `down` stops exactly the processes
`up` started, by the PIDs it recorded, and checks none is left. The cluster's data
(etcd) outlives `down`, as a stopped cluster's would; `up --fresh` starts an empty one.
`restart` stops one control-plane component by its recorded PID and starts it again
with the same flags (pass the flags `up` was given), recording the new PID; tests use it
to restart kube-apiserver under load, which cuts every watch stream. Every setting is a flag and
an EBB_* environment variable (see --help).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ebb import keys, tls
from ebb.settings import load, setting
from local_stack import ROOT, chart

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Ebb's own daemons, started by `up --ebb` (the local run); tests start their own.
EBB_COMPONENTS = ("ebb-scheduler", "moto", "ebb-bridge", "ebb-autoscaler")
# pki file name -> common name of the client certificates Ebb's CA issues.
EBB_CLIENTS = {"ebb-extender-client": "kube-scheduler", "ebb-webhook-client": "kube-apiserver"}
# Ebb's daemons, and the local stand-ins for AWS (moto with fault injection, and the
# instance-boot bridge), each run as `python -m MODULE`.
_PYTHON_MODULES = {
    "ebb-scheduler": "extender",
    "ebb-autoscaler": "autoscaler",
    "moto": "local_stack.ec2",
    "ebb-bridge": "local_stack.bridge",
}
# Ebb's daemons run as their own service accounts (the chart's RBAC), as in a cluster.
SERVICE_ACCOUNTS = ("ebb-scheduler", "ebb-autoscaler")
CONTROLLERS = (
    "job-controller",
    "pod-garbage-collector-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "ttl-after-finished-controller",
    "root-ca-certificate-publisher-controller",
    "taint-eviction-controller",
    "daemonset-controller",
    "node-lifecycle-controller",
    # Fills the built-in view/edit roles with Ebb's aggregated ones (the chart's user roles).
    "clusterrole-aggregation-controller",
)


# Each port setting left at 0 is port_base + its offset here.
PORT_OFFSETS = {
    "etcd_port": 379,
    "apiserver_port": 443,
    "scheduler_port": 259,
    "controller_manager_port": 257,
    "kwok_port": 247,
    "extender_port": 900,
    "aws_port": 960,
    "autoscaler_port": 961,
}


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Start, stop or inspect Ebb's local Kubernetes control plane."""

    state_dir: str = setting(
        ".ebb", "Directory for all cluster state, logs, PIDs and the kubeconfig."
    )
    port_base: int = setting(16000, "Ports are port_base + an offset unless set one by one.")
    etcd_port: int = setting(0, "etcd client port (0: port_base+379).")
    apiserver_port: int = setting(0, "kube-apiserver secure port (0: port_base+443).")
    scheduler_port: int = setting(0, "kube-scheduler secure port (0: port_base+259).")
    controller_manager_port: int = setting(
        0, "kube-controller-manager secure port (0: port_base+257)."
    )
    kwok_port: int = setting(0, "kwok metrics/server port (0: port_base+247).")
    extender_port: int = setting(0, "Port of Ebb's scheduler extender (0: port_base+900).")
    aws_port: int = setting(0, "Port of the local AWS (moto) of the local run (0: port_base+960).")
    autoscaler_port: int = setting(
        0, "Ops port of Ebb's autoscaler in the local run (0: port_base+961)."
    )
    boot_seconds: float = setting(
        2.0, "Local run: seconds from launch until an instance is a node."
    )
    ebb: bool = setting(False, "Also start Ebb's daemons (the local run).")
    ebb_resources: bool = setting(
        True,
        "Apply Ebb's CRDs, namespace and RBAC (manifests/install.yaml); false: a bare cluster"
        " (to install the chart on).",
    )
    fresh: bool = setting(
        False,
        "Start an empty cluster: stop what this state directory's previous cluster left"
        " running and delete its data and logs (the certificates and kubeconfig are kept).",
    )
    extender: str = setting(
        "ebb", "Scheduler extender: 'ebb' (Ebb's daemon) or 'none'.", choices=("ebb", "none")
    )
    bin_path: str = setting(
        "",
        "PATH fragment holding the binaries (default: hack/build-binaries.sh builds or reuses).",
    )
    ready_timeout: float = setting(60.0, "Seconds to wait for each component to become ready.")
    apiserver_extra_args: tuple[str, ...] = setting(
        (), "Extra kube-apiserver flags, comma-separated."
    )
    kube_api_qps: int = setting(
        300,
        "QPS of controller-manager and scheduler clients (their 20-50 default is slow for bursts).",
    )

    node_lease_seconds: int = setting(
        40,
        "Duration of the Node leases KWOK keeps (renewed every quarter of it); 0: none. Nothing"
        " here needs them (without, the node lifecycle controller waits for KWOK's status"
        " reports); at 5,000 nodes they are 500 writes/s.",
    )

    def port(self, name: str) -> int:
        value: int = getattr(self, name)
        return value or self.port_base + PORT_OFFSETS[name]


class Cluster:
    def __init__(self, settings: ClusterSettings) -> None:
        self.s = settings
        self.state = Path(settings.state_dir).resolve()
        self.pki = self.state / "pki"
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"
        self.kubeconfig = self.state / "kubeconfig"
        self.etcd_port = settings.port("etcd_port")
        self.apiserver_port = settings.port("apiserver_port")
        self.scheduler_port = settings.port("scheduler_port")
        self.kcm_port = settings.port("controller_manager_port")
        self.kwok_port = settings.port("kwok_port")
        self.extender_port = settings.port("extender_port")
        self.aws_port = settings.port("aws_port")
        self.autoscaler_port = settings.port("autoscaler_port")
        self.aws_info = self.state / "aws.json"
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self._bin_path = settings.bin_path
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # --- binaries -------------------------------------------------------------------

    def bin_path(self) -> str:
        if not self._bin_path:
            self._bin_path = binaries_path()
        return self._bin_path

    def binary(self, name: str) -> str:
        for directory in self.bin_path().split(os.pathsep):
            candidate = Path(directory) / name
            if candidate.exists():
                return str(candidate)
        raise SystemExit(f"{name} not found in {self.bin_path()}")

    # --- certificates and kubeconfigs ----------------------------------------------

    def _pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = self.pki / "ca.crt", self.pki / "ca.key"
        if ca_cert.exists():
            ca = tls.KeyPair(ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            ca = tls.make_ca("ebb-local-ca")
            ca.write(ca_cert, ca_key)
        if not (self.pki / "apiserver.crt").exists():
            tls.issue(
                ca,
                "kube-apiserver",
                dns_names=(
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
                ip_addresses=("127.0.0.1", "10.0.0.1"),
                server=True,
            ).write(self.pki / "apiserver.crt", self.pki / "apiserver.key")
            # kube-apiserver's client certificate for calling webhooks and extenders.
            tls.issue(ca, "kube-apiserver-client", client=True).write(
                self.pki / "apiserver-client.crt", self.pki / "apiserver-client.key"
            )
            private, public = tls.signing_keypair()
            (self.pki / "sa.key").write_bytes(private)
            (self.pki / "sa.key").chmod(0o600)
            (self.pki / "sa.pub").write_bytes(public)
            users = {
                "admin": ("kubernetes-admin", ("system:masters",)),
                "kube-controller-manager": ("system:kube-controller-manager", ()),
                "kube-scheduler": ("system:kube-scheduler", ()),
                "kwok": ("kwok", ("system:masters",)),
            }
            for user, (cn, orgs) in users.items():
                pair = tls.issue(ca, cn, organizations=orgs, client=True)
                pair.write(self.pki / f"{user}.crt", self.pki / f"{user}.key")
        # Ebb's own serving certificate (webhook + extender), shared with the daemon.
        ebb_ca = tls.load_or_create_serving(
            self.state / "ebb-tls",
            "ebb-scheduler",
            dns_names=("localhost", "ebb-scheduler.ebb-system.svc"),
            ip_addresses=("127.0.0.1",),
        )
        # The client certificates Ebb's CA issues to its only callers: kube-scheduler (the
        # extender) and kube-apiserver (the webhooks).
        for user, cn in EBB_CLIENTS.items():
            if not (self.pki / f"{user}.crt").exists():
                pair = tls.issue(ebb_ca, cn, client=True)
                pair.write(self.pki / f"{user}.crt", self.pki / f"{user}.key")

    def _admission_config(self) -> Path:
        """kube-apiserver's admission configuration: it shows its client certificate
        from Ebb's CA to every webhook (Ebb's daemon refuses the webhooks to others)."""
        kubeconfig = self.state / "webhook-client.kubeconfig"
        user = {
            "client-certificate": str(self.pki / "ebb-webhook-client.crt"),
            "client-key": str(self.pki / "ebb-webhook-client.key"),
        }
        kubeconfig.write_text(
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]}
            )
        )
        webhooks = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": plugin, "configuration": webhooks}
                for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
            ],
        }
        path = self.state / "admission-config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def write_kubeconfig(self, path: Path, user: str, token: str | None = None) -> None:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        credentials = (
            {"token": token}
            if token
            else {
                "client-certificate": str(self.pki / f"{user}.crt"),
                "client-key": str(self.pki / f"{user}.key"),
            }
        )
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ebb-local",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": credentials,
                }
            ],
            "contexts": [{"name": "ebb-local", "context": {"cluster": "ebb-local", "user": user}}],
            "current-context": "ebb-local",
        }
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)

    # --- process management ---------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        path = self.pids / f"{name}.pid"
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        if pid is None:
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            return False
        # The PID must still be the program we started (PIDs get reused).
        module = _PYTHON_MODULES.get(name)
        if module is not None:
            return "-m" in argv and module in argv and str(self.state) in " ".join(argv)
        return Path(argv[0]).name == name

    def _start(self, name: str, args: list[str]) -> None:
        if self._alive(name):
            say(f"{name}: already running (pid {self._pid(name)})")
            return
        log_path = self.logs / f"{name}.log"
        module = _PYTHON_MODULES.get(name)
        program = [sys.executable, "-m", module] if module else [self.binary(name)]
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                [*program, *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state,
            )
        (self.pids / f"{name}.pid").write_text(f"{proc.pid}\n")
        self._children[name] = proc

    def _wait(self, name: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.s.ready_timeout
        while time.monotonic() < deadline:
            child = self._children.get(name)
            exited = child.poll() is not None if child is not None else not self._alive(name)
            if exited:
                tail = _tail(self.logs / f"{name}.log")
                busy = "address already in use" in tail  # say so: the log's JSON hides it
                raise SystemExit(
                    f"{name} failed to start"
                    + (" because a port it needs is in use" if busy else "")
                    + f"; its log is {self.logs / f'{name}.log'}:\n{tail}"
                )
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise SystemExit(
            f"{name} did not become ready within {self.s.ready_timeout:.0f} s; "
            f"its log is {self.logs / f'{name}.log'}:\n{_tail(self.logs / f'{name}.log')}"
        )

    def _https_ok(self, url: str, *, verify: bool = True) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # components' self-signed serving certs
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)

    # --- up / down / status ----------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        if self.s.ebb and not self.s.ebb_resources:
            raise SystemExit("--ebb needs Ebb's resources: drop --ebb-resources=false")
        if self.s.fresh:
            self._clear()
        for d in (self.state, self.logs, self.pids):
            d.mkdir(parents=True, exist_ok=True)
        self.bin_path()
        self._pki()
        for user in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self.write_kubeconfig(self.state / f"{user}.kubeconfig", user)
        self.write_kubeconfig(self.kubeconfig, "admin")

        self._start_etcd()
        self._start_apiserver()
        if self.s.ebb_resources:
            self._install_ebb_resources()
        self._start_controller_manager()
        self._start_scheduler()
        self._start_kwok()
        if self.s.ebb:
            self._start_ebb_scheduler()
            self._start_ebb_autoscaler()
        self._wait("kube-controller-manager", self._default_service_account_exists)
        say(f"cluster ready in {time.monotonic() - started:.1f} s")
        say(f"  export KUBECONFIG={self.kubeconfig}")

    def _start_etcd(self) -> None:
        peer = self.etcd_port + 1
        self._start(
            "etcd",
            [
                "--name=ebb",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=ebb=http://127.0.0.1:{peer}",
                "--listen-metrics-urls=",
                "--log-level=warn",
                # A throwaway test cluster: trade durability for speed.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{self.etcd_port}/health"))

    def _start_apiserver(self) -> None:
        p = self.pki
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--requestheader-client-ca-file={p / 'ca.crt'}",
                "--requestheader-allowed-names=kube-apiserver-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--kubelet-client-certificate={p / 'apiserver-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-client.key'}",
                f"--proxy-client-cert-file={p / 'apiserver-client.crt'}",
                f"--proxy-client-key-file={p / 'apiserver-client.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultTolerationSeconds,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota",
                f"--admission-control-config-file={self._admission_config()}",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                *self.s.apiserver_extra_args,
            ],
        )
        self._wait("kube-apiserver", lambda: self._https_ok(f"{self.server}/readyz"))

    def _start_controller_manager(self) -> None:
        kubeconfig = self.state / "kube-controller-manager.kubeconfig"
        qps = self.s.kube_api_qps
        self._start(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                "--leader-elect=false",
                f"--kube-api-qps={qps}",
                f"--kube-api-burst={qps * 2}",
                "--concurrent-job-syncs=20",
                "--concurrent-gc-syncs=20",
                # Without Node leases, KWOK's status reports (every 5-5.5 minutes) are the
                # only heartbeat: the default 50 s would mark every node NotReady between
                # them (and evict their pods).
                *(() if self.s.node_lease_seconds else ("--node-monitor-grace-period=15m",)),
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self.state / "kube-scheduler.kubeconfig"
        config: dict[str, Any] = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {
                "kubeconfig": str(kubeconfig),
                "qps": self.s.kube_api_qps,
                "burst": self.s.kube_api_qps * 2,
            },
            "leaderElection": {"leaderElect": False},
        }
        if self.s.extender == "ebb":
            ca = (self.state / "ebb-tls" / "ca.crt").read_bytes()
            client_cert = (self.pki / "ebb-extender-client.crt").read_bytes()
            client_key = (self.pki / "ebb-extender-client.key").read_bytes()
            config["extenders"] = [
                {
                    "urlPrefix": f"https://127.0.0.1:{self.extender_port}/scheduler",
                    # Filter keeps only the nodes Ebb prefers, so no prioritize call
                    # (docs/decisions/0011-one-extender-call-per-pod.md).
                    "filterVerb": "filter",
                    # Ebb binds, so it counts a pod on its node before the watch shows it.
                    "bindVerb": "bind",
                    # Only batch pods (the webhook gives them one) reach the extender.
                    "managedResources": [
                        {"name": keys.BATCH_POD_RESOURCE, "ignoredByScheduler": True}
                    ],
                    "enableHTTPS": True,
                    # Ebb's daemon answers only a client certificate from its CA.
                    "tlsConfig": {
                        "caData": base64.b64encode(ca).decode(),
                        "certData": base64.b64encode(client_cert).decode(),
                        "keyData": base64.b64encode(client_key).decode(),
                    },
                    "nodeCacheCapable": True,
                    "ignorable": False,
                    "httpTimeout": "15s",
                }
            ]
        path = self.state / "kube-scheduler-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            "kube-scheduler",
            [
                f"--config={path}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
            ],
        )
        self._wait(
            "kube-scheduler",
            lambda: self._https_ok(
                f"https://127.0.0.1:{self.scheduler_port}/healthz", verify=False
            ),
        )

    def _start_kwok(self) -> None:
        self._start(
            "kwok",
            [
                f"--kubeconfig={self.state / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--config={ROOT / 'hack' / 'kwok' / 'stages.yaml'}",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                f"--node-lease-duration-seconds={self.s.node_lease_seconds}",
            ],
        )
        self._wait("kwok", lambda: _http_ok(f"http://127.0.0.1:{self.kwok_port}/healthz"))

    def _start_ebb_scheduler(self) -> None:
        ops = self.extender_port + 1
        self._start(
            "ebb-scheduler",
            [
                f"--kubeconfig={self.state / 'ebb-scheduler.kubeconfig'}",
                "--listen-host=127.0.0.1",
                f"--port={self.extender_port}",
                f"--ops-port={ops}",
                f"--tls-dir={self.state / 'ebb-tls'}",
                f"--webhook-url=https://127.0.0.1:{self.extender_port}",
                f"--webhook-clients={EBB_CLIENTS['ebb-webhook-client']}",
            ],
        )
        self._wait("ebb-scheduler", lambda: _http_ok(f"http://127.0.0.1:{ops}/readyz"))

    def _start_ebb_autoscaler(self) -> None:
        """The autoscaler against a local moto server, and the bridge that turns its
        instances into KWOK nodes."""
        endpoint = f"http://127.0.0.1:{self.aws_port}"
        if not self._alive("moto"):
            self.aws_info.unlink(missing_ok=True)
        self._start("moto", [f"--port={self.aws_port}", f"--info-file={self.aws_info}"])
        self._wait("moto", lambda: _http_ok(f"{endpoint}/_ebb/health") and self.aws_info.exists())
        info = json.loads(self.aws_info.read_text())
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")  # moto takes any credentials
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        self._start(
            "ebb-bridge",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--aws-endpoint-url={endpoint}",
                "--cluster-name=local",
                f"--boot-seconds={self.s.boot_seconds}",
            ],
        )
        self._start(
            "ebb-autoscaler",
            [
                f"--kubeconfig={self.state / 'ebb-autoscaler.kubeconfig'}",
                "--listen-host=127.0.0.1",
                f"--port={self.autoscaler_port}",
                "--cluster-name=local",
                f"--aws-endpoint-url={endpoint}",
                f"--image-parameter-prefix={info['imageParameterPrefix']}",
                f"--interruption-queue-url={info['queueUrl']}",
                "--registration-timeout-seconds=120",
                "--catalog-refresh-seconds=0",  # moto's prices are placeholders
            ],
        )
        self._wait(
            "ebb-autoscaler", lambda: _http_ok(f"http://127.0.0.1:{self.autoscaler_port}/readyz")
        )

    def _install_ebb_resources(self) -> None:
        """Ebb's CRDs, namespace and RBAC (from the release manifest rendered from the
        chart); a kubeconfig per daemon service account."""
        kubectl = [self.binary("kubectl"), f"--kubeconfig={self.kubeconfig}"]
        access = [o for o in chart.release_objects() if o["kind"] in chart.ACCESS_KINDS]
        resources = self.state / "ebb-resources.yaml"
        resources.write_text(yaml.safe_dump_all(access))
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(resources)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                *kubectl,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                str(chart.CHART / "crds"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for account in SERVICE_ACCOUNTS:
            token = subprocess.run(
                [*kubectl, "create", "token", account, "-n", "ebb-system", "--duration=8760h"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            self.write_kubeconfig(self.state / f"{account}.kubeconfig", account, token=token)

    def _default_service_account_exists(self) -> bool:
        return self._https_ok(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default")

    def down(self) -> None:
        stopped = []
        for name in reversed(COMPONENTS + EBB_COMPONENTS):
            pid = self._pid(name)
            if pid is None:
                continue
            if self._alive(name):
                _terminate(pid)
                stopped.append(f"{name} ({pid})")
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
        left = [n for n in COMPONENTS + EBB_COMPONENTS if self._alive(n)]
        if left:
            raise SystemExit(f"still running after down: {', '.join(left)}")
        say("stopped " + (", ".join(stopped) if stopped else "nothing (no cluster running)"))

    def _clear(self) -> None:
        """Stop a cluster still running from this state directory (one `make run KEEP=1`
        left up, or one a killed run left behind) and delete its data, so that nothing of
        the previous cluster (Jobs, nodes, the local AWS's instances) is in the new one."""
        if any(self._alive(n) for n in COMPONENTS + EBB_COMPONENTS):
            say(f"stopping the cluster still running from {self.state}")
            self.down()
        for data in (self.state / "etcd", self.logs):
            shutil.rmtree(data, ignore_errors=True)
        self.aws_info.unlink(missing_ok=True)

    def restart(self, name: str) -> None:
        starts: dict[str, Callable[[], None]] = {
            "etcd": self._start_etcd,
            "kube-apiserver": self._start_apiserver,
            "kube-controller-manager": self._start_controller_manager,
            "kube-scheduler": self._start_scheduler,
            "kwok": self._start_kwok,
        }
        if name not in starts:
            raise SystemExit(f"restart: {name!r} is not one of {', '.join(starts)}")
        pid = self._pid(name)
        if pid is None or not self._alive(name):
            raise SystemExit(f"restart: {name} is not running (no live PID recorded)")
        started = time.monotonic()
        _terminate(pid)
        if self._alive(name):
            raise SystemExit(f"restart: {name} ({pid}) did not stop")
        (self.pids / f"{name}.pid").unlink(missing_ok=True)
        starts[name]()
        say(
            f"{name} restarted in {time.monotonic() - started:.1f} s "
            f"(pid {pid} -> {self._pid(name)})"
        )

    def status(self) -> int:
        running = 0
        for name in COMPONENTS + tuple(n for n in EBB_COMPONENTS if self._pid(n) is not None):
            alive = self._alive(name)
            running += alive
            state = f"running (pid {self._pid(name)})" if alive else "stopped"
            print(f"{name:24} {state:24} log {self.logs / f'{name}.log'}")
        print(f"kubeconfig {self.kubeconfig}; API server {self.server}")
        return 0 if running >= len(COMPONENTS) else 1


def binaries_path() -> str:
    """The PATH fragment holding the control-plane binaries: hack/build-binaries.sh builds
    them (a progress line per part on stderr), or silently reuses the ones built for
    hack/versions.env."""
    out = subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh"), "--print-path"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    time.sleep(0.2)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m local_stack.cluster up|down|status|restart COMPONENT [flags]"
        "  (--help for flags)"
    )
    if not args or args[0] not in ("up", "down", "status", "restart"):
        print(usage, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    component = ""
    if command == "restart":
        if not rest or rest[0].startswith("-"):
            print(usage, file=sys.stderr)
            return 2
        component, rest = rest[0], rest[1:]
    cluster = Cluster(
        load(ClusterSettings, rest, os.environ, prog=f"python -m local_stack.cluster {command}")
    )
    try:
        if command == "up":
            cluster.up()
        elif command == "down":
            cluster.down()
        elif command == "restart":
            cluster.restart(component)
        else:
            return cluster.status()
    except subprocess.CalledProcessError as failed:
        # A sentence, not a traceback: which command failed and what it said.
        said = failed.stderr.strip() if isinstance(failed.stderr, str) else ""
        what = " ".join([Path(str(failed.cmd[0])).name, *map(str, failed.cmd[1:4])])
        raise SystemExit(
            f"local_stack.cluster {command}: `{what} …` exited with "
            f"{failed.returncode}" + (f": {said}" if said else " (its message is above)")
        ) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
