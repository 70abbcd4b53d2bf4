"""The Job admission webhook (mutating and validating), served by the scheduler daemon.

For a Job labelled `ebb.dev/queue` it rejects what can never work — an unknown or
DISABLED queue, a malformed Ebb annotation, a dependency cycle, a pod bigger than any
compute environment of the queue can hold — with a message naming the field and the
limit or the largest node; it warns about `ebb.dev/` keys it does not know.
It then makes the Job Ebb's: suspended (so no pod exists before admission), tolerating
the batch taint, its pod template stamped with the queue, share and job-id labels,
its timeout and retry strategy translated, its containers given AWS Batch's
environment variables (AWS_BATCH_*: names the user may not set). On updates it keeps
Ebb's fields immutable and lets only Ebb unsuspend a queued Job. A Job created already
suspended works without the webhook, and a suspended Job that never ran may be put in a
queue by labelling it later (without AWS Batch's variables: a Job's env is immutable).

(Its rooms: `context` what it consults, `validation` the refusals, `mutation` the Job as
Ebb runs it, `batch_env` AWS Batch's environment variables, `review` the AdmissionReview
in and out, `routes` the HTTP endpoints, `registration` the webhook configurations.)
"""
