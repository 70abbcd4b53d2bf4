"""What the API server refuses a user (403), said in a sentence naming the role that
grants it."""

from __future__ import annotations

import argparse

from ebb import kube

# The roles that grant what the plugin reads and writes (docs/operations.md).
VIEW_ROLE = "ClusterRole ebb-view, bound by a ClusterRoleBinding (queues are cluster-wide)"


def _edit_role(namespace: str) -> str:
    return f"ClusterRole ebb-edit, bound by a RoleBinding in namespace {namespace}"


def _who_cannot(exc: kube.ApiError) -> str:
    """The API server's 403 message from `User "x" cannot ...` on: its start names the
    object, which the sentence around it already does."""
    _, found, rest = exc.message.partition("forbidden: ")
    return rest if found else exc.message


def refusal(args: argparse.Namespace, namespace: str, exc: kube.ApiError) -> str:
    """A 403 as a sentence: what the user tried, what the API server said, and which of
    Ebb's roles grants it."""
    match args.command:
        case "queues" | "ces":
            what = "job queues" if args.command == "queues" else "compute environments"
            tried, role = f"list {what}", VIEW_ROLE
        case "jobs" if args.all_namespaces:
            tried = "list jobs in all namespaces"
            role = f"ClusterRole ebb-admin (without -A: the jobs of namespace {namespace})"
        case "jobs":
            tried, role = f"list jobs in namespace {namespace}", _edit_role(namespace)
        case "submit":
            tried, role = f"create job {namespace}/{args.job_name}", _edit_role(namespace)
        case "import":
            tried = "create compute environments, queues and job definitions"
            role = "ClusterRole ebb-admin"
        case _:
            verb = "read" if args.command in ("why", "describe") else args.command
            tried, role = f"{verb} job {namespace}/{args.job}", _edit_role(namespace)
    return (
        f"error: you may not {tried} ({_who_cannot(exc)}); that takes {role} (docs/operations.md)"
    )
