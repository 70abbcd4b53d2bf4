"""The scheduler daemon: decides *when* a batch Job may start (queues, priority, fair
share, dependencies, retries, timeouts) and *where* its pods go (the kube-scheduler
extender verbs), and serves the Job admission webhook."""
