"""Job scheduling: the *when* of AWS Batch on ordinary Jobs.

Pure decision code — `retry` (retry strategies as podFailurePolicy), `lifecycle` (the
job state machine), `dependencies`, `fairshare`, `admission` and `reconcile` (one pass
over a snapshot) — and the thin async shell in `controller` (with `writes`) that
watches, patches and publishes. Job annotations are parsed by `ebb.jobspec`.
"""
