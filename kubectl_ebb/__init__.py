"""kubectl-ebb: look at Ebb's queues, compute environments and jobs, ask why a job is
not running, and cancel or terminate jobs.

    kubectl ebb queues | ces | jobs [-q QUEUE] [--state S] [-l SELECTOR] [-A] [-w]
    kubectl ebb why JOB | describe JOB
    kubectl ebb cancel JOB --reason R | terminate JOB --reason R
    kubectl ebb submit --job-name N --job-queue Q --job-definition D[:REV] [...]
    kubectl ebb import FILE... [--dry-run -o yaml]   (AWS Batch JSON)
    kubectl ebb ui [--port P]   (a read-only web view on 127.0.0.1)
    kubectl ebb version | completion bash|zsh

Tables by default; `-o wide|name|json|yaml|jsonpath=TEMPLATE` as kubectl's. Honours
--kubeconfig, --context, -n and a merged KUBECONFIG list (docs/kubectl-ebb.md).
It reads only what Ebb publishes on the objects, so it works from any machine that
can reach the API server, with the user's own rights: a tenant with Ebb's roles
(charts/ebb/templates/rbac/ebb-user-roles.yaml) sees their namespace's jobs and the queues, and
what the API server refuses them is said in a sentence naming the role that grants it.
"""
