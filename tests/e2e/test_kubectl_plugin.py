"""`kubectl ebb`, run through kubectl's plugin mechanism against the real cluster."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

import ebb
from ebb import keys, kube
from ebb.kube.resources import SERVICE_ACCOUNTS
from ebb.server import add_ops_routes
from local_stack import builders
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


def plugin_env(cluster: LocalCluster, **extra: str) -> dict[str, str]:
    env = {**cluster.env(), **extra}
    # kubectl finds plugins named kubectl-* on PATH: the package installs kubectl-ebb.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def run_kubectl_ebb(
    cluster: LocalCluster, kubeconfig: Path | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl ebb ARGS` (with --kubeconfig unless None: then $KUBECONFIG from `env`)."""
    flags = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    return subprocess.run(
        ["kubectl", "ebb", *flags, *args],
        env=plugin_env(cluster, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kubectl_ebb(cluster: LocalCluster, *args: str) -> str:
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_queues_jobs_why_describe_cancel(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("first", q, run_seconds=30), namespace)
        await kube_client.create(kube.JOBS, builders.job("second", q), namespace)
        await kube_client.create(
            kube.JOBS, builders.job("third", q, annotations={keys.DEPENDS_ON: "second"}), namespace
        )
        await wait_state(kube_client, namespace, "second", "RUNNABLE")
        await wait_state(kube_client, namespace, "third", "PENDING")

        queues = kubectl_ebb(cluster, "queues")
        assert q in queues and "RUNNABLE" in queues.splitlines()[0]
        assert ce in kubectl_ebb(cluster, "ces")
        jobs = orjson.loads(kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "json"))
        assert jobs["kind"] == "List"
        states = {
            j["metadata"]["name"]: j["metadata"]["annotations"][keys.STATE] for j in jobs["items"]
        }
        assert states["first"] in ("STARTING", "RUNNING")
        assert (states["second"], states["third"]) == ("RUNNABLE", "PENDING")
        why = kubectl_ebb(cluster, "why", "second", "-n", namespace)
        assert why.startswith("RUNNABLE: position 1 in queue")
        assert f"{ce} 1/1 vCPUs in use" in why
        assert f"compute environment {ce}: ENABLED" in why
        why_pending = kubectl_ebb(cluster, "why", "third", "-n", namespace)
        assert "afterok second: RUNNABLE — position 1" in why_pending

        out = kubectl_ebb(
            cluster, "cancel", "second", "--reason", "changed my mind", "-n", namespace
        )
        assert "cancel requested" in out
        await wait_state(kube_client, namespace, "second", "FAILED")
        await wait_state(kube_client, namespace, "third", "FAILED")
        failed = kubectl_ebb(cluster, "jobs", "-n", namespace, "--state", "failed")
        assert "cancelled: changed my mind" in failed
        assert "dependency second failed" in failed

        out = kubectl_ebb(cluster, "terminate", "first", "--reason", "enough", "-n", namespace)
        done = await wait_state(kube_client, namespace, "first", "FAILED")
        assert done["metadata"]["annotations"][keys.REASON] == "terminated: enough"
        described = kubectl_ebb(cluster, "describe", "first", "-n", namespace)
        assert "State:    FAILED (FAILED:TERMINATED)" in described
        assert "POD" in described


# --- kubectl's habits: output options, selectors, namespaces, watch -----------------------


async def test_listings_print_as_kubectl_get_does(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    """-o name|wide|json|yaml|jsonpath, -l, -A; the plain tables as before; a long reason
    cut at a word boundary (whole with -o wide)."""
    other = f"{namespace}-b"
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.patch(kube.JOB_QUEUES, q, {"metadata": {"labels": {"team": "plugin"}}})
        await kube_client.create(kube.NAMESPACES, {"metadata": {"name": other}})
        try:
            # a holds the only vCPU for the whole test: b stays RUNNABLE until cancelled.
            gold = builders.job("a", q, run_seconds=600, labels={"tier": "gold"})
            await kube_client.create(kube.JOBS, gold, namespace)
            await kube_client.create(kube.JOBS, builders.job("b", q), namespace)
            await kube_client.create(kube.JOBS, builders.job("c", q), other)
            await wait_state(kube_client, namespace, "b", "RUNNABLE")

            by_label = kubectl_ebb(cluster, "queues", "-l", "team=plugin", "-o", "name")
            assert by_label == f"jobqueue.ebb.dev/{q}\n"
            assert f"computeenvironment.ebb.dev/{ce}\n" in kubectl_ebb(cluster, "ces", "-o", "name")
            names = "jsonpath={.items[*].metadata.name}"
            assert kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", names) == "a b"
            every = 'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\n"}{end}'
            assert sorted(
                kubectl_ebb(cluster, "jobs", "-A", "-q", q, "-o", every).split()
            ) == sorted([f"{namespace}/a", f"{namespace}/b", f"{other}/c"])
            gold_only = kubectl_ebb(
                cluster, "jobs", "-n", namespace, "-l", "tier=gold", "-o", "name"
            )
            assert gold_only == "job.batch/a\n"
            state = (
                "jsonpath={.items[?(@.metadata.name=='b')].metadata.annotations.ebb\\.dev/state}"
            )
            assert kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", state) == "RUNNABLE"

            # -o json and yaml: kubectl's List of the objects as the API server has them.
            listed = orjson.loads(kubectl_ebb(cluster, "queues", "-l", "team=plugin", "-o", "json"))
            served = orjson.loads(cluster.kubectl("get", "jq", "-l", "team=plugin", "-o", "json"))
            assert listed["kind"] == "List"
            assert [i["metadata"]["uid"] for i in listed["items"]] == [
                i["metadata"]["uid"] for i in served["items"]
            ]
            as_yaml = yaml.safe_load(kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "yaml"))
            assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["a", "b"]

            plain = kubectl_ebb(cluster, "jobs", "-n", namespace).splitlines()
            assert plain[0].split() == [
                "NAMESPACE",
                "NAME",
                "QUEUE",
                "SHARE",
                "STATE",
                "AGE",
                "REASON",
            ]
            wide = kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "wide").splitlines()
            assert wide[0].split() == [
                *("NAMESPACE", "NAME", "QUEUE", "SHARE", "STATE", "AGE"),
                *("REASON-CODE", "PODS-ENDED", "REASON"),
            ]
            assert "CAPACITY:COMPUTE_ENVIRONMENT_FULL" in next(
                row for row in wide if row.split()[1] == "b"
            )
            assert kubectl_ebb(cluster, "queues", "-o", "wide").splitlines()[0].split()[-2:] == [
                "AGE",
                "REASON",
            ]

            wrong = run_kubectl_ebb(cluster, cluster.kubeconfig, "jobs", "-o", "table")
            assert wrong.returncode == 1
            assert (
                'unable to match a printer suitable for the output format "table"' in wrong.stderr
            )
            no_name = run_kubectl_ebb(cluster, cluster.kubeconfig, "why", "b", "-o", "name")
            assert "kubectl ebb why does not print -o name" in no_name.stderr

            # A reason longer than the column: cut between words, with an ellipsis.
            why = "the input files of this run were replaced by newer uploads from the pipeline"
            kubectl_ebb(cluster, "cancel", "b", "--reason", why, "-n", namespace)
            done = await wait_state(kube_client, namespace, "b", "FAILED")
            reason = done["metadata"]["annotations"][keys.REASON]
            assert len(reason) > 80 and reason[79] != " " and reason[80] != " "  # mid-word
            header, *rows = kubectl_ebb(cluster, "jobs", "-n", namespace).splitlines()
            row = next(line for line in rows if line.split()[1] == "b")
            cell = row[header.index("REASON") :]
            assert cell.endswith("…") and len(cell) <= 80, cell
            assert reason.startswith(cell[:-1]) and reason[len(cell) - 1] == " ", cell
            wide_row = next(
                line
                for line in kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "wide").splitlines()
                if line.split()[1] == "b"
            )
            assert wide_row.endswith(reason)
        finally:
            await kube_client.delete(kube.NAMESPACES, other)


async def test_watch_prints_each_change_of_a_job(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    """`jobs -w`: the table, then a row each time a job's row changes, until it ends."""
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        watch = await asyncio.create_subprocess_exec(
            *("kubectl", "ebb", f"--kubeconfig={cluster.kubeconfig}", "jobs", "-n", namespace),
            "--watch",
            env=plugin_env(cluster),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout = watch.stdout
        assert stdout is not None
        lines: list[str] = []

        async def until(printed: Any) -> None:
            while not lines or not printed(lines[-1]):
                line = (await stdout.readline()).decode()
                assert line, "the watch ended"
                lines.append(line.rstrip("\n"))

        try:
            await asyncio.wait_for(until(lambda line: line.startswith("NAMESPACE")), 30)
            await kube_client.create(kube.JOBS, builders.job("w", q, run_seconds=1), namespace)
            await asyncio.wait_for(until(lambda line: " SUCCEEDED " in line), 90)
        finally:
            watch.terminate()
            await watch.wait()
        rows = [line.split() for line in lines[1:]]
        states = [row[4] for row in rows if row[1] == "w"]
        assert len(states) >= 2 and states[-1] == "SUCCEEDED", lines
        assert all(a != b for a, b in itertools.pairwise(rows)), "a row printed twice"


# --- where kubectl finds its cluster ------------------------------------------------------


def split_kubeconfig(cluster: LocalCluster, directory: Path, namespace: str) -> tuple[Path, Path]:
    """The cluster's kubeconfig as two files, as people keep them: `a` the user and the
    current context; `b` (in another directory) the cluster and the contexts, one of them
    (`in-ns`, b's current context) with a namespace. Neither works alone."""
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
    (directory / "b").mkdir()
    a, b = directory / "a", directory / "b" / "config"
    base = {"apiVersion": "v1", "kind": "Config"}
    a.write_text(
        yaml.safe_dump({**base, "current-context": context["name"], "users": doc["users"]})
    )
    in_ns = {"name": "in-ns", "context": {**context["context"], "namespace": namespace}}
    b.write_text(
        yaml.safe_dump(
            {
                **base,
                "current-context": "in-ns",
                "clusters": doc["clusters"],
                "contexts": [*doc["contexts"], in_ns],
            }
        )
    )
    return a, b


async def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str, tmp_path: Path
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("mine", q), namespace)
        a, b = split_kubeconfig(cluster, tmp_path, namespace)

        def both(kubeconfig: str, *args: str) -> tuple[str, str]:
            """kubectl's answer and the plugin's, with KUBECONFIG=kubeconfig."""
            env = plugin_env(cluster, KUBECONFIG=kubeconfig)
            kubectl = subprocess.run(
                ["kubectl", "get", "jobs", "-o", "name", *args],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            ebb = run_kubectl_ebb(cluster, None, "jobs", "-o", "name", *args, KUBECONFIG=kubeconfig)
            assert kubectl.returncode == 0, kubectl.stderr
            assert ebb.returncode == 0, ebb.stderr
            return kubectl.stdout, ebb.stdout

        # a's current context (no namespace: default), b's cluster.
        merged = os.pathsep.join([str(a), str(b)])
        assert both(merged) == ("", "")
        # The first file that sets current-context wins: b's in-ns, with its namespace.
        assert both(os.pathsep.join([str(b), str(a)])) == ("job.batch/mine\n",) * 2
        assert both(merged, "--context", "in-ns") == ("job.batch/mine\n",) * 2
        queues = run_kubectl_ebb(cluster, None, "queues", KUBECONFIG=merged)
        assert queues.returncode == 0 and q in queues.stdout, queues.stderr
        # --kubeconfig is one file, not merged, for kubectl as for the plugin.
        alone = run_kubectl_ebb(cluster, a, "queues", KUBECONFIG=merged)
        assert alone.returncode == 1 and "no context named" in alone.stderr


async def connect_proxy(port: int, seen: list[str]) -> asyncio.Server:
    """An HTTP CONNECT proxy (what `proxy-url: http://...` names), noting each target."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, target, _ = request.split(" ", 2)
        assert method == "CONNECT", request
        seen.append(target)
        host, _, target_port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target_port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_exec_credentials_tls_server_name_and_proxy_url_as_kubectl(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str, tmp_path: Path
) -> None:
    """A kubeconfig as EKS and corporate networks hand out: an exec credential plugin
    (its command relative to the kubeconfig), `tls-server-name`, `proxy-url`."""
    await kube_client.create(SERVICE_ACCOUNTS, {"metadata": {"name": "reader"}}, namespace)
    binding = {
        "metadata": {"name": "reader-views"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    await kube_client.create(ROLE_BINDINGS, binding, namespace)
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).strip()
    (tmp_path / "bin").mkdir()
    credential = tmp_path / "bin" / "credential.sh"
    credential.write_text(
        "#!/bin/sh\n"
        'echo "$KUBERNETES_EXEC_INFO" > "$(dirname "$0")/exec-info.json"\n'
        "printf '%s' '"
        + orjson.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": token},
            }
        ).decode()
        + "'\n"
    )
    credential.chmod(0o755)
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    server = doc["clusters"][0]["cluster"]

    def kubeconfig(name: str, **cluster_fields: str) -> Path:
        path = tmp_path / name
        user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "./bin/credential.sh",
                "interactiveMode": "Never",
            }
        }
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "eks",
                    "clusters": [{"name": "c", "cluster": {**server, **cluster_fields}}],
                    "users": [{"name": "u", "user": user}],
                    "contexts": [
                        {
                            "name": "eks",
                            "context": {"cluster": "c", "user": "u", "namespace": namespace},
                        }
                    ],
                }
            )
        )
        return path

    def jobs(path: Path) -> subprocess.CompletedProcess[str]:
        env = plugin_env(cluster)
        return subprocess.run(
            ["kubectl", "ebb", f"--kubeconfig={path}", "jobs", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",  # the credential command is found from the kubeconfig's directory
        )

    plain = await asyncio.to_thread(jobs, kubeconfig("plain"))
    assert plain.returncode == 0, plain.stderr
    info = orjson.loads((tmp_path / "bin" / "exec-info.json").read_text())
    assert info["kind"] == "ExecCredential"

    named = await asyncio.to_thread(jobs, kubeconfig("named", **{"tls-server-name": "kubernetes"}))
    assert named.returncode == 0, named.stderr
    wrong = await asyncio.to_thread(jobs, kubeconfig("wrong", **{"tls-server-name": "not-it"}))
    assert wrong.returncode == 1 and "not-it" in wrong.stderr, wrong.stderr

    seen: list[str] = []
    port = cluster.port_base + 920
    proxy = await connect_proxy(port, seen)
    try:
        via = await asyncio.to_thread(
            jobs, kubeconfig("via-proxy", **{"proxy-url": f"http://127.0.0.1:{port}"})
        )
    finally:
        proxy.close()
    assert via.returncode == 0, via.stderr
    assert seen and seen[0].endswith(f":{cluster.port_base + 443}"), seen


ROLE_BINDINGS = kube.Resource(
    "rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True
)


# --- version ------------------------------------------------------------------------------

ENDPOINTS = kube.Resource("", "v1", "endpoints", "Endpoints", True)


def host_address() -> str:
    """An address of this machine other than loopback: the API server's service proxy
    refuses loopback endpoints."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # UDP: picks the outgoing address, sends nothing
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "no address but loopback to serve /metrics on"
    return address


async def test_version_names_the_plugin_the_cluster_and_the_ebb_it_runs(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    server = (await kube_client.request("GET", "/version"))["gitVersion"]
    mine = ebb.version()
    out = await asyncio.to_thread(kubectl_ebb, cluster, "version")
    lines = out.splitlines()
    assert lines[:3] == [
        f"Client Version: {mine}",
        f"Server Version: {server}",
        f"Ebb API Versions: {keys.API_VERSION}",
    ]
    # No scheduler Service in ebb-system here: the version is unknown, and it says why.
    assert lines[3].startswith("Ebb Version: unknown (service ebb-system/ebb-scheduler: 404")

    # The scheduler's ops routes (ebb.server, with its ebb_build_info) behind a Service
    # named and ported as charts/ebb/templates/deploy/ebb-scheduler.yaml deploys it, its endpoint a
    # Pod as the endpoints controller writes it (the service proxy dials only addresses
    # of pods). The routes are served by this test on this host, not on loopback, which
    # the proxy refuses.
    app = web.Application()
    add_ops_routes(app, ready=lambda: True)
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = host_address(), cluster.port_base + 921
    await web.TCPSite(runner, host, port).start()
    try:
        pod = {
            "metadata": {"name": "ebb-scheduler-0"},
            "spec": {
                "schedulingGates": [{"name": "ebb.dev/not-here"}],  # never placed
                "containers": [{"name": "scheduler", "image": "ebb"}],
            },
        }
        await kube_client.create(kube.PODS, pod, namespace)
        await kube_client.patch(
            kube.PODS,
            "ebb-scheduler-0",
            {"status": {"podIP": host, "podIPs": [{"ip": host}]}},
            namespace,
            subresource="status",
        )
        ports = [{"name": "metrics", "port": 8080, "targetPort": port}]
        service = {"metadata": {"name": "ebb-scheduler"}, "spec": {"ports": ports}}
        await kube_client.create(kube.SERVICES, service, namespace)
        target = {"kind": "Pod", "namespace": namespace, "name": "ebb-scheduler-0"}
        subset = {
            "addresses": [{"ip": host, "targetRef": target}],
            "ports": [{"name": "metrics", "port": port}],
        }
        endpoints = {"metadata": {"name": "ebb-scheduler"}, "subsets": [subset]}
        await kube_client.create(ENDPOINTS, endpoints, namespace)
        found = orjson.loads(
            await asyncio.to_thread(
                kubectl_ebb, cluster, "version", "--ebb-namespace", namespace, "-o", "json"
            )
        )
    finally:
        await runner.cleanup()
    assert found["clientVersion"] == mine
    assert found["serverVersion"]["gitVersion"] == server
    assert found["ebbVersion"] == mine != "unknown", found
    client_only = await asyncio.to_thread(kubectl_ebb, cluster, "version", "--client")
    assert client_only == f"Client Version: {mine}\n"


async def test_kubectl_completes_kubectl_ebb_through_its_plugin_hook(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    """`kubectl ebb <TAB>`: kubectl (1.26+) runs kubectl_complete-ebb, which the package
    installs; job names come from the cluster."""
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("to-complete", q), namespace)

        def complete(*words: str) -> list[str]:
            proc = subprocess.run(
                ["kubectl", "__complete", "ebb", *words],
                env=plugin_env(cluster),
                capture_output=True,
                text=True,
                check=True,
            )
            return [line.split("\t")[0] for line in proc.stdout.splitlines()]

        assert "jobs" in await asyncio.to_thread(complete, "jo")
        jobs = await asyncio.to_thread(complete, "why", "-n", namespace, "")
        assert jobs[:-1] == ["to-complete"] and jobs[-1] == ":4", jobs
        assert "RUNNABLE" in await asyncio.to_thread(complete, "jobs", "--state", "")
