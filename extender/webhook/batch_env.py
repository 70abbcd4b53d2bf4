"""AWS Batch's environment variables (AWS_BATCH_*) on a Job's containers: Ebb sets them,
and refuses any the user wrote, as AWS Batch reserves them."""

from __future__ import annotations

from ebb import keys
from ebb.jobspec import JobSpec
from extender.webhook.context import Json

BATCH_ENV_PREFIX = "AWS_BATCH"
# The variables Ebb sets on a Job's containers: a Job exported from the cluster and
# created again carries them, and they are set afresh rather than refused.
EBB_BATCH_ENV = frozenset(
    {
        "AWS_BATCH_JOB_ID",
        "AWS_BATCH_JOB_ATTEMPT",
        "AWS_BATCH_JQ_NAME",
        "AWS_BATCH_CE_NAME",
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "AWS_BATCH_JOB_ARRAY_SIZE",
        "AWS_BATCH_JOB_NUM_NODES",
        "AWS_BATCH_JOB_NODE_INDEX",
        "AWS_BATCH_JOB_MAIN_NODE_INDEX",
        "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
    }
)
_COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
_JOB_NAME = "metadata.labels['batch.kubernetes.io/job-name']"


def _field(path: str) -> Json:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def _value(text: str) -> Json:
    return {"value": text}


def main_node_address(job: str, namespace: str, main_index: int) -> str:
    """The main pod's DNS name: Indexed Job pods are named `<job>-<index>` as hostnames,
    and `<job>` is the subdomain their headless Service publishes them under. (Its IP is
    not known before the pod is placed; the name resolves once it is.)"""
    return f"{job}-{main_index}.{job}.{namespace}.svc"


def stamp_batch_env(job: Json, job_spec: JobSpec) -> None:
    """Give every container of the Job's pods AWS Batch's environment variables (the one
    place they are stamped; the webhook has refused any the user wrote). What the Job
    fixes is a value; what only the pod knows comes by the downward API from its
    annotations, which the kubelet reads when it starts the container, after the
    extender's Binding set the attempt and compute environment (ebb/keys.py)."""
    meta, spec = job["metadata"], job["spec"]
    variables: dict[str, Json] = {
        "AWS_BATCH_JQ_NAME": _value(meta["labels"][keys.QUEUE_LABEL]),
        "AWS_BATCH_CE_NAME": _field(f"metadata.annotations['{keys.POD_COMPUTE_ENVIRONMENT}']"),
        "AWS_BATCH_JOB_ATTEMPT": _field(f"metadata.annotations['{keys.POD_ATTEMPT}']"),
    }
    # AWS names a node `<job>#<node index>` and an array child `<job>:<index>`; $(VAR)
    # expands a variable defined earlier in the list.
    child = ""
    if job_spec.multi_node is not None:
        name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
        main = job_spec.multi_node.main_node_index
        variables |= {
            "AWS_BATCH_JOB_NUM_NODES": _value(str(job_spec.multi_node.nodes)),
            "AWS_BATCH_JOB_NODE_INDEX": _field(_COMPLETION_INDEX),
            "AWS_BATCH_JOB_MAIN_NODE_INDEX": _value(str(main)),
            "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": _value(
                main_node_address(name, namespace, main)
            ),
        }
        child = "#$(AWS_BATCH_JOB_NODE_INDEX)"
    elif spec.get("completionMode") == "Indexed":
        variables |= {
            "AWS_BATCH_JOB_ARRAY_INDEX": _field(_COMPLETION_INDEX),
            "AWS_BATCH_JOB_ARRAY_SIZE": _value(str(spec.get("completions") or 1)),
        }
        child = ":$(AWS_BATCH_JOB_ARRAY_INDEX)"
    # AWS's job ID is a UUID no one types; users know and grep the Job's name (the pods'
    # ebb.dev/job-id label). With generateName it is known only once the Job exists: the
    # Job controller's label on the pods has it.
    variables["AWS_BATCH_JOB_ID"] = (
        _value(f"{meta['name']}{child}") if meta.get("name") else _field(_JOB_NAME)
    )
    assert set(variables) <= EBB_BATCH_ENV
    for container in spec["template"]["spec"].get("containers") or ():
        env = [e for e in container.get("env") or () if e.get("name") not in EBB_BATCH_ENV]
        env.extend({"name": name, **source} for name, source in variables.items())
        container["env"] = env


def user_batch_env(template_spec: Json) -> str | None:
    """Where the pod template sets a variable named AWS_BATCH*, which AWS Batch reserves."""
    for part in ("initContainers", "containers"):
        for container in template_spec.get(part) or ():
            for variable in container.get("env") or ():
                name = str(variable.get("name", ""))
                if part == "containers" and name in EBB_BATCH_ENV:
                    continue  # Ebb sets it afresh (a Job exported and created again)
                if name.startswith(BATCH_ENV_PREFIX):
                    return (
                        f"spec.template.spec.{part}[{container.get('name')}].env[{name}]: "
                        f"variables starting with {BATCH_ENV_PREFIX} are reserved for the ones "
                        "Ebb sets, as AWS Batch reserves them; rename it"
                    )
    return None
