"""Job scheduling: the *when* of AWS Batch on ordinary Jobs.

Pure decision code — `spec` (Ebb's Job annotations), `retry` (retry strategies as
podFailurePolicy), `lifecycle` (the job state machine), `dependencies`, `fairshare`,
`admission` and `reconcile` (one pass over a snapshot) — and the thin async shell in
`controller` that watches, patches and publishes.
"""
