"""Ebb's roles for people (the chart's templates/rbac/ebb-user-roles.yaml), on the real API
server:

- `kubectl auth can-i --as=...` for a tenant bound to ebb-edit in their namespace, a
  reader bound to ebb-view, an operator bound to ebb-admin, and users of the built-in
  `view`/`edit` roles Ebb's roles are aggregated into: what each may do and what not;
- `kubectl ebb` run by alice and bob, each with a real client certificate from the
  cluster's CA and only ebb-edit in their own namespace: each sees their own jobs and not
  the other's, cancels their own and is refused the other's in a sentence; the queues
  need ebb-view (the chart's opt-in binding, userRoles.viewAllUsers), and before it is
  bound the plugin says so instead of failing; the operator sees and cancels any job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from ebb import keys, kube, tls
from local_stack import builders, chart
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster, wait_for
from tests.e2e.test_kubectl_plugin import run_kubectl_ebb

pytestmark = pytest.mark.usefixtures("scheduler_daemon")

ALICE_NS, BOB_NS = "team-alice", "team-bob"
IN_ALICE, IN_BOB, ALL = f"--namespace={ALICE_NS}", f"--namespace={BOB_NS}", "--all-namespaces"
EBB_KINDS = ("jobqueues.ebb.dev", "computeenvironments.ebb.dev", "schedulingpolicies.ebb.dev")
# Who holds which role, and how it is bound (the way docs/operations.md says to).
ROLE_HOLDERS = {"ebb-edit": "alice", "ebb-view": "vic", "ebb-admin": "olga"}

# (who, verb, resource, scope flags, allowed)
CAN_I: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    # A tenant (ebb-edit in their namespace): submit, watch, cancel/terminate (a patch of
    # the ebb.dev/cancel|terminate annotation), delete their Jobs, read their pods.
    ("alice", "create", "jobs.batch", (IN_ALICE,), True),
    ("alice", "list", "jobs.batch", (IN_ALICE,), True),
    ("alice", "patch", "jobs.batch", (IN_ALICE,), True),
    ("alice", "delete", "jobs.batch", (IN_ALICE,), True),
    ("alice", "list", "pods", (IN_ALICE,), True),
    ("alice", "get", "pods", (IN_ALICE, "--subresource=log"), True),
    ("alice", "list", "events", (IN_ALICE,), True),
    # ... and register (create), read and deregister (delete) job definitions there; a
    # revision is immutable (no update or patch).
    *[
        ("alice", verb, "jobdefinitions.ebb.dev", (IN_ALICE,), True)
        for verb in ("create", "get", "list", "watch", "delete")
    ],
    ("alice", "patch", "jobdefinitions.ebb.dev", (IN_ALICE,), False),
    ("alice", "create", "jobdefinitions.ebb.dev", (IN_BOB,), False),
    # ... and nothing of another tenant's, nor of the cluster's.
    ("alice", "get", "jobs.batch", (IN_BOB,), False),
    ("alice", "patch", "jobs.batch", (IN_BOB,), False),
    ("alice", "list", "jobs.batch", (ALL,), False),
    ("alice", "list", "pods", (IN_BOB,), False),
    ("alice", "list", "events", ("--namespace=default",), False),
    ("alice", "patch", "jobs.batch", (IN_ALICE, "--subresource=status"), False),
    ("alice", "list", "secrets", (IN_ALICE,), False),
    ("alice", "create", "rolebindings", (IN_ALICE,), False),
    ("alice", "list", "nodes", (), False),
    # A RoleBinding cannot grant cluster-scoped objects: queues take ebb-view's
    # ClusterRoleBinding (the opt-in one, or one per group).
    ("alice", "list", "jobqueues.ebb.dev", (), False),
    ("alice", "create", "jobqueues.ebb.dev", (), False),
    ("alice", "patch", "jobqueues.ebb.dev", (), False),
    ("alice", "delete", "computeenvironments.ebb.dev", (), False),
    ("alice", "update", "schedulingpolicies.ebb.dev", (), False),
    # A reader (ebb-view, ClusterRoleBinding): the queues, environments and policies.
    *[("vic", verb, kind, (), True) for kind in EBB_KINDS for verb in ("get", "list", "watch")],
    *[("vic", verb, "jobdefinitions.ebb.dev", (ALL,), True) for verb in ("get", "list")],
    ("vic", "create", "jobdefinitions.ebb.dev", (IN_ALICE,), False),
    ("vic", "create", "jobqueues.ebb.dev", (), False),
    ("vic", "patch", "computeenvironments.ebb.dev", (), False),
    ("vic", "patch", "jobqueues.ebb.dev", ("--subresource=status",), False),
    ("vic", "list", "jobs.batch", (IN_ALICE,), False),
    # The built-in roles carry Ebb's reads (aggregation): view, and edit through view.
    ("carol", "list", "jobqueues.ebb.dev", (), True),
    ("carol", "watch", "computeenvironments.ebb.dev", (), True),
    ("carol", "patch", "jobs.batch", (IN_ALICE,), False),
    ("carol", "delete", "jobqueues.ebb.dev", (), False),
    ("erin", "list", "schedulingpolicies.ebb.dev", (), True),
    ("erin", "patch", "jobs.batch", (IN_BOB,), True),
    ("erin", "create", "jobqueues.ebb.dev", (), False),
    # An operator (ebb-admin, ClusterRoleBinding): writes Ebb's cluster-scoped objects
    # and may see and cancel any tenant's Job ...
    *[
        ("olga", verb, kind, (), True)
        for kind in EBB_KINDS
        for verb in ("create", "update", "patch", "delete")
    ],
    ("olga", "list", "jobs.batch", (ALL,), True),
    *[
        ("olga", verb, "jobdefinitions.ebb.dev", (IN_BOB,), True)
        for verb in ("create", "update", "patch", "delete")
    ],
    ("olga", "patch", "jobs.batch", (IN_BOB,), True),
    ("olga", "list", "pods", (ALL,), True),
    ("olga", "list", "events", ("--namespace=default",), True),
    # ... but not run Jobs in tenants' namespaces, forge what the daemons publish, or more.
    ("olga", "create", "jobs.batch", (IN_BOB,), False),
    ("olga", "delete", "jobs.batch", (IN_BOB,), False),
    ("olga", "patch", "jobqueues.ebb.dev", ("--subresource=status",), False),
    ("olga", "patch", "computeenvironments.ebb.dev", ("--subresource=status",), False),
    ("olga", "list", "secrets", (ALL,), False),
    ("olga", "list", "nodes", (), False),
    ("olga", "create", "clusterrolebindings", (), False),
]


def bindings() -> str:
    """The namespaces and bindings of this module's people, as an operator applies them."""
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in (ALICE_NS, BOB_NS)
    ]
    grants = [
        ("RoleBinding", ALICE_NS, "alice", "ebb-edit"),
        ("RoleBinding", BOB_NS, "bob", "ebb-edit"),
        ("ClusterRoleBinding", None, "vic", "ebb-view"),
        ("ClusterRoleBinding", None, "olga", "ebb-admin"),
        ("ClusterRoleBinding", None, "carol", "view"),
        ("ClusterRoleBinding", None, "erin", "edit"),
    ]
    for kind, namespace, user, role in grants:
        meta = {"name": f"test-{user}-{role}"} | ({"namespace": namespace} if namespace else {})
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": kind,
                "metadata": meta,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def people(cluster: LocalCluster) -> Iterator[None]:
    manifest = bindings()
    cluster.kubectl("apply", "-f", "-", input=manifest)
    yield
    cluster.kubectl("delete", "--wait=false", "-f", "-", input=manifest)


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("who", "verb", "resource", "scope", "allowed"),
    CAN_I,
    ids=[f"{w}-{'may' if a else 'may-not'}-{v}-{r}{''.join(s)}" for w, v, r, s, a in CAN_I],
)
def test_each_role_grants_what_it_says_and_no_more(
    cluster: LocalCluster,
    who: str,
    verb: str,
    resource: str,
    *,
    scope: tuple[str, ...],
    allowed: bool,
) -> None:
    assert cluster.can_i(who, verb, resource, *scope) is allowed


def test_every_verb_the_user_roles_grant_is_asked_about_above() -> None:
    """Each (role, resource, verb) ebb-user-roles.yaml grants, but for reads, is an
    allowed row of CAN_I for the role's holder: no verb without a reason and a test."""
    granted = {
        (ROLE_HOLDERS[doc["metadata"]["name"]], resource.split("/")[0], verb)
        for doc in chart.release_objects()
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] in ROLE_HOLDERS
        for rule in doc["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if verb not in ("get", "list", "watch")
    }
    asked = {(w, r.split(".")[0], v) for w, v, r, _, allowed in CAN_I if allowed}
    assert granted - asked == set()


# --- kubectl ebb as a tenant -------------------------------------------------------------


def user_kubeconfig(cluster: LocalCluster, user: str, namespace: str) -> Path:
    """A kubeconfig with a real client certificate for `user`, issued by the cluster's
    client CA (local_stack/cluster.py's pki), whose context's namespace is `namespace`."""
    pki = cluster.state_dir / "pki"
    ca = tls.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    cert, key = pki / f"user-{user}.crt", pki / f"user-{user}.key"
    tls.issue(ca, user, client=True).write(cert, key)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path = cluster.state_dir / f"{user}.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {
                "name": user,
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": user,
                    "namespace": namespace,
                },
            }
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """A refusal is one sentence on stderr and exit status 1: no traceback, no dump."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.usefixtures("people")
async def test_kubectl_ebb_shows_a_tenant_their_jobs_and_refuses_the_rest(
    cluster: LocalCluster, kube_client: kube.KubeClient
) -> None:
    alice = user_kubeconfig(cluster, "alice", ALICE_NS)
    bob = user_kubeconfig(cluster, "bob", BOB_NS)
    olga = user_kubeconfig(cluster, "olga", "default")
    # The chart's opt-in binding of ebb-view to every authenticated user.
    opt_in = cluster.state_dir / "ebb-view-all-users.yaml"
    opt_in.write_text(
        yaml.safe_dump_all(
            chart.template(
                cluster.bin_path,
                "--set=userRoles.viewAllUsers=true",
                "--show-only=templates/rbac/ebb-view-all-users.yaml",
            )
        )
    )

    def as_user(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run_kubectl_ebb(cluster, kubeconfig, *args)

    def submit(kubeconfig: Path, body: dict[str, object]) -> None:
        """`kubectl create` as the tenant: ebb-edit lets them submit."""
        cluster.kubectl(
            f"--kubeconfig={kubeconfig}", "create", "-f", "-", input=orjson.dumps(body).decode()
        )

    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        submit(alice, builders.job("alice-runs", q, run_seconds=600))
        await wait_state(kube_client, ALICE_NS, "alice-runs", "RUNNING")
        submit(alice, builders.job("alice-waits", q))
        submit(bob, builders.job("bob-waits", q))
        await wait_state(kube_client, ALICE_NS, "alice-waits", "RUNNABLE")
        await wait_state(kube_client, BOB_NS, "bob-waits", "RUNNABLE")

        # Before ebb-view is bound to her, alice cannot read queues: the plugin says so,
        # and `why` still explains her own job.
        denied = refused(as_user(alice, "queues"))
        assert denied.startswith('error: you may not list job queues (User "alice" cannot list')
        assert "ClusterRole ebb-view" in denied
        why = ok(as_user(alice, "why", "alice-waits"))
        assert why.startswith("RUNNABLE: ")
        assert f"queue {q}: not visible to you; reading it takes ClusterRole ebb-view" in why

        cluster.kubectl("apply", "-f", str(opt_in))
        try:
            # Queues and environments: definitions and counts over every tenant.
            # (A queue's counts alone are written at most every 2 s: docs/decisions/0003.)
            async def counted_runnable() -> bool:
                queues = orjson.loads(ok(as_user(alice, "queues", "-o", "json")))
                mine = next(x for x in queues["items"] if x["metadata"]["name"] == q)
                return bool(mine["status"]["jobs"]["RUNNABLE"] == 2)

            await wait_for(counted_runnable, 10, interval=0.5, message="RUNNABLE 2 in ebb queues")
            assert ce in ok(as_user(alice, "ces"))

            # Jobs: her namespace's only.
            jobs = orjson.loads(ok(as_user(alice, "jobs", "-o", "json")))
            assert {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in jobs["items"]} == {
                (ALICE_NS, "alice-runs"),
                (ALICE_NS, "alice-waits"),
            }
            bobs = orjson.loads(ok(as_user(bob, "jobs", "-o", "json")))
            assert [j["metadata"]["name"] for j in bobs["items"]] == ["bob-waits"]
            denied = refused(as_user(alice, "jobs", "-A"))
            assert denied.startswith("error: you may not list jobs in all namespaces")
            assert f"without -A: the jobs of namespace {ALICE_NS}" in denied
            denied = refused(as_user(alice, "jobs", "-n", BOB_NS))
            assert denied.startswith(f"error: you may not list jobs in namespace {BOB_NS}")

            why = ok(as_user(alice, "why", "alice-waits"))
            assert why.startswith("RUNNABLE: position")
            assert f"compute environment {ce}: ENABLED" in why
            assert "pod alice-runs-" in ok(as_user(alice, "why", "alice-runs"))
            assert "State:    RUNNING" in ok(as_user(alice, "describe", "alice-runs"))
            denied = refused(as_user(alice, "why", "bob-waits", "-n", BOB_NS))
            assert denied.startswith(f"error: you may not read job {BOB_NS}/bob-waits")

            # Cancel: her own job, yes; bob's, refused in a sentence and left alone.
            assert "cancel requested" in ok(
                as_user(alice, "cancel", "alice-waits", "--reason", "not needed")
            )
            done = await wait_state(kube_client, ALICE_NS, "alice-waits", "FAILED")
            assert done["metadata"]["annotations"][keys.REASON] == "cancelled: not needed"
            denied = refused(as_user(alice, "cancel", "bob-waits", "-n", BOB_NS, "--reason", "x"))
            assert denied == (
                f'error: you may not cancel job {BOB_NS}/bob-waits (User "alice" cannot get'
                f' resource "jobs" in API group "batch" in the namespace "{BOB_NS}"); that'
                f" takes ClusterRole ebb-edit, bound by a RoleBinding in namespace {BOB_NS}"
                " (docs/operations.md)\n"
            )
            bob_job = await kube_client.get(kube.JOBS, "bob-waits", BOB_NS)
            assert keys.CANCEL not in bob_job["metadata"]["annotations"]
            assert bob_job["metadata"]["annotations"][keys.STATE] == "RUNNABLE"

            # The operator sees every tenant's jobs and may stop any.
            every = orjson.loads(ok(as_user(olga, "jobs", "-A", "-o", "json")))
            assert {(ALICE_NS, "alice-runs"), (BOB_NS, "bob-waits")} <= {
                (j["metadata"]["namespace"], j["metadata"]["name"]) for j in every["items"]
            }
            ok(as_user(olga, "cancel", "bob-waits", "-n", BOB_NS, "--reason", "queue closing"))
            ok(as_user(alice, "terminate", "alice-runs", "--reason", "enough"))
            await wait_state(kube_client, BOB_NS, "bob-waits", "FAILED")
            await wait_state(kube_client, ALICE_NS, "alice-runs", "FAILED")
        finally:
            cluster.kubectl("delete", "-f", str(opt_in))

        # Nothing left running or waiting in the queue.
        async def drained() -> bool:
            raw = await kube_client.get(kube.JOB_QUEUES, q)
            counts = (raw.get("status") or {}).get("jobs") or {}
            return all(counts.get(s) == 0 for s in ("RUNNABLE", "STARTING", "RUNNING"))

        await wait_for(drained, message=f"queue {q} without waiting or running jobs")
