"""Nobody in who does not belong, on the real API server and the local EC2:

- each daemon's ServiceAccount (the chart's RBAC, as the local cluster applies it) may do
  what the daemon needs and is refused what it must never do (`kubectl auth can-i`);
- no bearer token and no AWS secret reaches either daemon's log, even at debug level;
- the autoscaler never terminates an instance without its cluster tag, even when a node
  of one of its compute environments says the instance is there and EC2 says it is
  being reclaimed, while it does terminate its own.

- the webhook and the extender speak TLS 1.2 or later only, with a certificate from the
  cluster's own CA;
- only kube-scheduler (a client certificate from Ebb's CA) can call the extender, only
  kube-apiserver the webhooks, and bind refuses what kube-scheduler would never ask.

(Non-root and a read-only root filesystem: test_manifests.py. One certificate shared by
replicas, renewed without a restart: test_tls_secret.py. Body limits: test_bad_input.py.)"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import yaml

from autoscaler.interruptions import SPOT_INTERRUPTION, event
from ebb import keys, kube, tls
from local_stack import builders, chart
from local_stack.aws import (
    LocalAws,
    autoscaler_process,
    batch_job,
    compute_environment,
    environment_nodes,
    job_succeeded,
    metric,
    name,
)
from local_stack.batch import batch_env, unique, wait_state
from local_stack.builders import job_queue
from local_stack.cluster import SERVICE_ACCOUNTS
from local_stack.harness import LocalCluster, Process, create_node, scheduler_process, wait_for
from local_stack.placement import batch_pod, wait_schedulable

SCHEDULER = "system:serviceaccount:ebb-system:ebb-scheduler"
AUTOSCALER = "system:serviceaccount:ebb-system:ebb-autoscaler"
ALL = "--all-namespaces"
IN_EBB = "--namespace=ebb-system"
IN_USERS = "--namespace=default"

# (who, verb, resource, scope flags..., allowed)
CAN_I: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    # The scheduler daemon: what it needs.
    (SCHEDULER, "watch", "jobs.batch", (ALL,), True),
    (SCHEDULER, "patch", "jobs.batch", (IN_USERS,), True),
    (SCHEDULER, "patch", "jobs.batch", (IN_USERS, "--subresource=status"), True),
    (SCHEDULER, "patch", "pods", (IN_USERS,), True),
    (SCHEDULER, "create", "pods", (IN_USERS, "--subresource=binding"), True),
    (SCHEDULER, "create", "services", (IN_USERS,), True),
    (SCHEDULER, "delete", "services", (IN_USERS,), False),
    (SCHEDULER, "list", "nodes", (), True),
    (SCHEDULER, "watch", "namespaces", (), True),
    (SCHEDULER, "create", "events.events.k8s.io", (IN_USERS,), True),
    (SCHEDULER, "watch", "computeenvironments.ebb.dev", (), True),
    (SCHEDULER, "watch", "jobdefinitions.ebb.dev", (ALL,), True),
    (SCHEDULER, "create", "jobdefinitions.ebb.dev", (IN_USERS,), False),
    (SCHEDULER, "patch", "jobqueues.ebb.dev", ("--subresource=status",), True),
    (SCHEDULER, "patch", "schedulingpolicies.ebb.dev", ("--subresource=status",), True),
    (SCHEDULER, "create", "mutatingwebhookconfigurations", (), True),
    (SCHEDULER, "patch", "validatingwebhookconfigurations/ebb-scheduler", (), True),
    (SCHEDULER, "patch", "events", (IN_USERS,), True),
    (SCHEDULER, "create", "validatingwebhookconfigurations", (), True),
    (SCHEDULER, "patch", "mutatingwebhookconfigurations/ebb-scheduler", (), True),
    (SCHEDULER, "create", "leases.coordination.k8s.io", (IN_EBB,), True),
    (SCHEDULER, "update", "leases.coordination.k8s.io/ebb-scheduler", (IN_EBB,), True),
    (SCHEDULER, "patch", "leases.coordination.k8s.io/ebb-scheduler", (IN_EBB,), True),
    (SCHEDULER, "create", "secrets", (IN_EBB,), True),
    (SCHEDULER, "get", "secrets/ebb-scheduler-tls", (IN_EBB,), True),
    (SCHEDULER, "update", "secrets/ebb-scheduler-tls", (IN_EBB,), True),
    (SCHEDULER, "update", "secrets/ebb-kube-scheduler-client", (IN_EBB,), True),
    # ... and what it must not do.
    (SCHEDULER, "list", "secrets", (ALL,), False),
    (SCHEDULER, "list", "secrets", (IN_EBB,), False),
    (SCHEDULER, "get", "secrets/other-secret", (IN_EBB,), False),
    (SCHEDULER, "update", "secrets/other-secret", (IN_EBB,), False),
    (SCHEDULER, "delete", "namespaces", (), False),
    (SCHEDULER, "create", "jobs.batch", (IN_USERS,), False),
    (SCHEDULER, "delete", "jobs.batch", (IN_USERS,), False),
    (SCHEDULER, "create", "pods", (IN_USERS,), False),
    (SCHEDULER, "delete", "pods", (IN_USERS,), False),
    (SCHEDULER, "create", "pods", (IN_USERS, "--subresource=exec"), False),
    (SCHEDULER, "patch", "nodes", (), False),
    (SCHEDULER, "delete", "nodes", (), False),
    (SCHEDULER, "update", "computeenvironments.ebb.dev", (), False),
    (SCHEDULER, "patch", "computeenvironments.ebb.dev", ("--subresource=status",), False),
    (SCHEDULER, "delete", "jobqueues.ebb.dev", (), False),
    (SCHEDULER, "patch", "mutatingwebhookconfigurations/someone-elses", (), False),
    (SCHEDULER, "delete", "validatingwebhookconfigurations/ebb-scheduler", (), False),
    (SCHEDULER, "update", "leases.coordination.k8s.io/ebb-autoscaler", (IN_EBB,), False),
    (SCHEDULER, "create", "clusterrolebindings", (), False),
    (SCHEDULER, "impersonate", "users", (), False),
    (SCHEDULER, "create", "serviceaccounts", (IN_EBB, "--subresource=token"), False),
    # The autoscaler: what it needs.
    (AUTOSCALER, "watch", "pods", (ALL,), True),
    (AUTOSCALER, "patch", "nodes", (), True),
    (AUTOSCALER, "delete", "nodes", (), True),
    # (The pods of a node whose instance is gone: failed, then deleted, as PodGC does.)
    (AUTOSCALER, "patch", "pods", (IN_USERS, "--subresource=status"), True),
    (AUTOSCALER, "delete", "pods", (IN_USERS,), True),
    (AUTOSCALER, "create", "events", ("--namespace=default",), True),
    (AUTOSCALER, "watch", "computeenvironments.ebb.dev", (), True),
    (AUTOSCALER, "list", "jobqueues.ebb.dev", (), True),
    (AUTOSCALER, "patch", "computeenvironments.ebb.dev", ("--subresource=status",), True),
    (AUTOSCALER, "patch", "events.events.k8s.io", ("--namespace=default",), True),
    (AUTOSCALER, "create", "leases.coordination.k8s.io", (IN_EBB,), True),
    (AUTOSCALER, "update", "leases.coordination.k8s.io/ebb-autoscaler", (IN_EBB,), True),
    (AUTOSCALER, "patch", "leases.coordination.k8s.io/ebb-autoscaler", (IN_EBB,), True),
    # ... and what it must not do.
    (AUTOSCALER, "list", "secrets", (ALL,), False),
    (AUTOSCALER, "get", "secrets/ebb-scheduler-tls", (IN_EBB,), False),
    (AUTOSCALER, "delete", "namespaces", (), False),
    (AUTOSCALER, "patch", "pods", (IN_USERS,), False),
    (AUTOSCALER, "create", "pods", (IN_USERS, "--subresource=eviction"), False),
    (AUTOSCALER, "create", "pods", (IN_USERS, "--subresource=binding"), False),
    (AUTOSCALER, "create", "pods", (IN_USERS,), False),
    (AUTOSCALER, "update", "pods", (IN_USERS, "--subresource=status"), False),
    (AUTOSCALER, "patch", "jobs.batch", (IN_USERS,), False),
    (AUTOSCALER, "create", "nodes", (), False),
    (AUTOSCALER, "patch", "computeenvironments.ebb.dev", (), False),
    (AUTOSCALER, "patch", "jobqueues.ebb.dev", ("--subresource=status",), False),
    (AUTOSCALER, "update", "leases.coordination.k8s.io/ebb-scheduler", (IN_EBB,), False),
    (AUTOSCALER, "create", "mutatingwebhookconfigurations", (), False),
    (AUTOSCALER, "bind", "clusterroles", (), False),
    (AUTOSCALER, "escalate", "clusterroles", (), False),
]


@pytest.mark.parametrize(
    ("who", "verb", "resource", "scope", "allowed"),
    CAN_I,
    ids=[
        f"{w.rsplit(':', 1)[1]}-{'may' if a else 'may-not'}-{v}-{r}{''.join(s)}"
        for w, v, r, s, a in CAN_I
    ],
)
def test_each_service_account_has_only_the_verbs_it_needs(
    cluster: LocalCluster,
    who: str,
    verb: str,
    resource: str,
    *,
    scope: tuple[str, ...],
    allowed: bool,
) -> None:
    assert cluster.can_i(who, verb, resource, *scope) is allowed


def test_every_verb_the_rbac_manifests_grant_is_asked_about_above() -> None:
    """Each (account, resource, verb) the manifests grant, but for reads, is a row of
    CAN_I, so a verb added to a role without a reason (and a test) shows up here."""
    granted = set()
    # The daemons' roles (people's: test_tenant_roles.py; kube-scheduler's are its own).
    for doc in chart.release_objects():
        if doc["kind"] in ("ClusterRole", "Role") and doc["metadata"]["name"] in SERVICE_ACCOUNTS:
            who = f"system:serviceaccount:ebb-system:{doc['metadata']['name']}"
            for rule in doc["rules"]:
                for resource in rule["resources"]:
                    granted |= {(who, resource, verb) for verb in rule["verbs"]}
    asked = set()
    for who, verb, resource, scope, allowed in CAN_I:
        base = resource.split("/")[0].split(".")[0]
        sub = [s.split("=", 1)[1] for s in scope if s.startswith("--subresource=")]
        asked.add((who, f"{base}/{sub[0]}" if sub else base, verb))
        assert allowed or (who, base, verb) not in granted or "/" in resource, (who, verb, resource)
    reads = {"get", "list", "watch"}
    unasked = {g for g in granted if g[2] not in reads} - asked
    assert not unasked, sorted(unasked)


# --- credentials never reach the logs ---------------------------------------------------


def kubeconfig_token(cluster: LocalCluster, who: str) -> str:
    config = yaml.safe_load((cluster.state_dir / f"{who}.kubeconfig").read_text())
    token = str(config["users"][0]["user"]["token"])
    assert len(token) > 100
    return token


@pytest.fixture(scope="module")
def own_autoscaler(
    cluster: LocalCluster, local_aws: LocalAws, bridge: Process, scheduler_daemon: Process
) -> Iterator[Any]:
    """An autoscaler at debug level with AWS credentials of its own (moto takes any),
    so that they can be looked for in its log. (kube-scheduler, whose extender is the
    scheduler daemon, places the pods it launches for.)"""
    secret = f"SeCrEt{uuid.uuid4().hex}"
    session = f"SeSsIoN{uuid.uuid4().hex}"
    process = autoscaler_process(cluster, local_aws, name="ebb-autoscaler-security")
    process.env = {
        "AWS_ACCESS_KEY_ID": "AKIAEBBSECURITYTEST",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": session,
    }
    process.log_path.unlink(missing_ok=True)
    process.start()
    yield process, (secret, session)
    process.stop()


async def test_the_autoscaler_never_terminates_an_instance_without_its_cluster_tag(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    own_autoscaler: Any,
) -> None:
    ce = name("tagged")
    made: list[tuple[kube.Resource, str]] = []
    ec2 = local_aws.client("ec2")
    ssm = local_aws.client("ssm")
    image = ssm.get_parameters_by_path(Path=local_aws.info["imageParameterPrefix"], Recursive=True)[
        "Parameters"
    ][0]["Value"]
    foreign = {
        "another cluster's": [
            {"Key": keys.TAG_CLUSTER, "Value": "someone-else"},
            {"Key": keys.TAG_COMPUTE_ENVIRONMENT, "Value": ce},
        ],
        "untagged": [{"Key": keys.TAG_COMPUTE_ENVIRONMENT, "Value": ce}],
    }
    instance_ids: dict[str, str] = {}
    try:
        for body, resource in (
            (compute_environment(ce, local_aws, instanceTypes=["c6i"]), kube.COMPUTE_ENVIRONMENTS),
            (job_queue(f"{ce}-q", ce), kube.JOB_QUEUES),
        ):
            await kube_client.create(resource, body)
            made.append((resource, body["metadata"]["name"]))
        for what, tags in foreign.items():
            run = ec2.run_instances(
                ImageId=image,
                InstanceType="c6i.large",
                MinCount=1,
                MaxCount=1,
                SubnetId=local_aws.info["subnets"][0],
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            iid = run["Instances"][0]["InstanceId"]
            instance_ids[what] = iid
            # A node of the autoscaler's environment that claims the instance.
            node = await create_node(
                kube_client,
                f"foreign-{iid}",
                cpu="2",
                labels={
                    keys.COMPUTE_ENVIRONMENT_LABEL: ce,
                    keys.CAPACITY_TYPE_LABEL: keys.CAPACITY_SPOT,
                    keys.INSTANCE_TYPE_LABEL: "c6i.large",
                },
                taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
            )
            await kube_client.patch(
                kube.NODES,
                node["metadata"]["name"],
                {"spec": {"providerID": f"aws:///us-east-1a/{iid}"}},
            )
            made.append((kube.NODES, node["metadata"]["name"]))
        # EC2 warns that both will be reclaimed; the autoscaler hears it and cordons. Before
        # the warnings, messages that are no EC2 notices: dropped, and the consumer goes on.
        sqs = local_aws.client("sqs")
        dropped = "ebb_autoscaler_notices_dropped_total"
        before = metric(own_autoscaler[0].ops_url, dropped)
        garbage = ['{"source": "aws.ec2", "detail-type": ', "[]", json.dumps({"source": "x"})]
        for junk in garbage:
            sqs.send_message(QueueUrl=local_aws.info["queueUrl"], MessageBody=junk)
        for iid in instance_ids.values():
            notice = event(SPOT_INTERRUPTION, iid, region="us-east-1")
            sqs.send_message(QueueUrl=local_aws.info["queueUrl"], MessageBody=json.dumps(notice))

        async def cordoned() -> bool:
            nodes = [
                await kube_client.get(kube.NODES, f"foreign-{i}") for i in instance_ids.values()
            ]
            return all(n["spec"].get("unschedulable") for n in nodes)

        await wait_for(cordoned, 30, message="both foreign nodes cordoned on the warning")

        async def all_dropped() -> bool:
            return metric(own_autoscaler[0].ops_url, dropped) == before + len(garbage)

        await wait_for(all_dropped, 30, message="the messages that are no notices dropped")
        # Meanwhile the autoscaler launches for, and then terminates, its own instance.
        await kube_client.create(kube.JOBS, batch_job("own", f"{ce}-q", run_seconds=1), namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, "own"), 180)
        own = [i["InstanceId"] for i in local_aws.instances(ce)]
        assert own and not set(own) & set(instance_ids.values())

        async def own_terminated() -> bool:
            states = {i["State"]["Name"] for i in local_aws.instances(ce)}
            nodes = [
                n
                for n in await environment_nodes(kube_client, ce)
                if not n["metadata"]["name"].startswith("foreign-")
            ]
            return states <= {"shutting-down", "terminated"} and not nodes

        await wait_for(own_terminated, 120, interval=1, message="its own instance terminated")
        # Its own went through idle → drain → terminate; the foreign ones, whose nodes
        # are idle and cordoned too, did not.
        described = ec2.describe_instances(InstanceIds=list(instance_ids.values()))
        states = {
            i["InstanceId"]: i["State"]["Name"]
            for r in described["Reservations"]
            for i in r["Instances"]
        }
        assert states == {iid: "running" for iid in instance_ids.values()}
    finally:
        for resource, made_name in reversed(made):
            await kube_client.delete(resource, made_name)
        if instance_ids:
            ec2.terminate_instances(InstanceIds=list(instance_ids.values()))


async def test_no_token_or_aws_secret_reaches_the_logs(
    cluster: LocalCluster, scheduler_daemon: Process, own_autoscaler: Any
) -> None:
    """(After the test above, which has the autoscaler launch and terminate.)"""
    process, aws_secrets = own_autoscaler
    logs = {
        "ebb-scheduler": scheduler_daemon.log_path.read_text(errors="replace"),
        "ebb-autoscaler": process.log_path.read_text(errors="replace"),
    }
    # Both logged at debug level, and did real work (this module's scale-up and down).
    assert '"level": "debug"' in logs["ebb-scheduler"]
    assert '"level": "debug"' in logs["ebb-autoscaler"]
    assert '"event": "launched"' in logs["ebb-autoscaler"]
    assert '"event": "terminated"' in logs["ebb-autoscaler"]
    secrets = {
        "the scheduler's bearer token": kubeconfig_token(cluster, "ebb-scheduler"),
        "the autoscaler's bearer token": kubeconfig_token(cluster, "ebb-autoscaler"),
        "the AWS secret access key": aws_secrets[0],
        "the AWS session token": aws_secrets[1],
    }
    for daemon, text in logs.items():
        for what, secret in secrets.items():
            # Any 24 characters of it (a token cut short or wrapped is still a leak).
            pieces = {secret[i : i + 24] for i in range(0, len(secret) - 24, 12)}
            assert not any(p in text for p in pieces), f"{what} in {daemon}'s log"
        assert "Bearer " not in text and "Authorization" not in text, daemon


# --- TLS ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_webhook_and_extender_speak_only_tls_1_2_or_later(
    cluster: LocalCluster, scheduler_daemon: Process
) -> None:
    ca = str(cluster.state_dir / "ebb-tls" / "ca.crt")
    body = {"Pod": {"metadata": {"name": "p"}}, "NodeNames": []}

    async def post(scheme: str, context: ssl.SSLContext | bool) -> int:
        url = f"{scheme}://localhost:{cluster.extender_port}/scheduler/filter"
        connector = aiohttp.TCPConnector(ssl=context)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(url, json=body) as resp,
        ):
            return resp.status

    assert await post("https", cluster.client_context()) == 200
    with pytest.raises(aiohttp.ClientError):  # plain HTTP: the TLS listener hangs up
        await post("http", False)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not a public CA's
        await post("https", ssl.create_default_context())
    old = cluster.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(aiohttp.ClientError):
        await post("https", old)
    assert await post("https", cluster.client_context()) == 200  # still serving
    assert await post("https", ssl.create_default_context(cafile=ca)) == 401  # no client cert


def refused(ops_url: str, reason: str) -> float:
    return metric(ops_url, f'ebb_refused_calls_total{{reason="{reason}"}}')


async def test_only_kube_scheduler_can_bind_and_only_what_it_would(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    scheduler_daemon: Process,
) -> None:
    """An intruder that reaches the port binds nothing: no client certificate (401), one
    from another CA (the handshake fails), kube-scheduler's own certificate but a plain
    pod (a daemon behind a kube-scheduler of its own binds only batch pods) or a node the
    pod does not tolerate. Each is counted; kube-scheduler goes on placing batch Jobs."""
    # A daemon as on EKS, behind a kube-scheduler of its own (--scheduler-name).
    own = scheduler_process(
        cluster,
        name="ebb-scheduler-own",
        kubeconfig=cluster.state_dir / "ebb-scheduler.kubeconfig",
        port=cluster.port_base + 910,
        extra=["--scheduler-name=ebb-scheduler", "--identity=own"],
    )
    own.start()
    try:
        async with batch_env(kube_client) as env:
            ce = await env.compute_environment(unique("mtls-ce"))
            q = await env.queue(unique("mtls-q"), [ce])
            batch_node = f"{ce}-node-0"
            await wait_schedulable(kube_client, batch_node)
            # Pending pods no scheduler touches: one of the queue, one plain.
            nobody = {"schedulerName": f"nobody-{namespace}"}
            plain = batch_pod("plain", q, **nobody)
            plain["metadata"]["labels"] = {}
            plain["spec"]["tolerations"] = []
            pods = {}
            for body in (batch_pod("victim", q, **nobody), plain):
                made = await kube_client.create(kube.PODS, body, namespace)
                pods[body["metadata"]["name"]] = made["metadata"]["uid"]

            async def bind(port: int, pod: str, node: str, context: ssl.SSLContext) -> Any:
                body = {"PodName": pod, "PodNamespace": namespace, "PodUID": pods[pod]}
                url = f"https://localhost:{port}/scheduler/bind"
                connector = aiohttp.TCPConnector(ssl=context)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.post(url, json={**body, "Node": node}) as resp,
                ):
                    return resp.status, await resp.json()

            intruder_ca = tls.make_ca("intruder-ca")
            intruder = tls.issue(intruder_ca, "kube-scheduler", client=True)
            intruder.write(cluster.state_dir / "intruder.crt", cluster.state_dir / "intruder.key")
            foreign = ssl.create_default_context(
                cafile=str(cluster.state_dir / "ebb-tls" / "ca.crt")
            )
            foreign.load_cert_chain(
                cluster.state_dir / "intruder.crt", cluster.state_dir / "intruder.key"
            )
            no_certificate = ssl.create_default_context(
                cafile=str(cluster.state_dir / "ebb-tls" / "ca.crt")
            )
            ops = scheduler_daemon.ops_url
            port = cluster.extender_port
            reasons = ("no_client_certificate", "untrusted_certificate", "node_rejected")
            before = {r: refused(ops, r) for r in reasons}
            plain_before = refused(own.ops_url, "not_a_batch_pod")

            status, reply = await bind(port, "victim", batch_node, no_certificate)
            assert status == 401 and "no client certificate" in reply["Error"]
            with pytest.raises(aiohttp.ClientError):
                await bind(port, "victim", batch_node, foreign)
            # kube-scheduler's certificate, but binds kube-scheduler would never ask.
            status, reply = await bind(port, "plain", batch_node, cluster.client_context())
            assert status == 200 and "does not tolerate the taint" in reply["Error"], reply
            status, reply = await bind(
                cluster.port_base + 910, "plain", batch_node, cluster.client_context()
            )
            assert status == 200 and "no Ebb queue" in reply["Error"], reply
            assert {r: refused(ops, r) - before[r] for r in reasons} == dict.fromkeys(reasons, 1)
            assert refused(own.ops_url, "not_a_batch_pod") == plain_before + 1
            log = scheduler_daemon.log_path.read_text(errors="replace")
            assert '"reason": "untrusted_certificate"' in log
            for name in pods:
                pod = await kube_client.get(kube.PODS, name, namespace)
                assert not pod["spec"].get("nodeName"), f"{name} was bound"
            # The webhook takes only kube-apiserver's certificate; through the API server,
            # Jobs are admitted, and kube-scheduler (with its certificate) places them.
            webhook = f"https://localhost:{port}/webhook/jobs/mutate"
            for context, status in ((no_certificate, 401), (cluster.client_context(), 403)):
                connector = aiohttp.TCPConnector(ssl=context)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.post(webhook, json={}) as resp,
                ):
                    assert resp.status == status
            await kube_client.create(kube.JOBS, builders.job("after", q), namespace)
            await wait_state(kube_client, namespace, "after", "SUCCEEDED")
            for name in pods:
                await kube_client.delete(kube.PODS, name, namespace, grace_period_seconds=0)
    finally:
        own.stop()
