"""Inject a Spot interruption into the local stack, as EC2 would deliver one.

    python -m local_stack.interrupt --aws-endpoint-url URL --queue-url Q i-0123456789abcdef0

Sends EventBridge's "EC2 Spot Instance Interruption Warning" to the SQS queue, waits
--notice-seconds (EC2 gives two minutes), terminates the instance and sends the
"EC2 Instance State-change Notification" for it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import boto3

from autoscaler.interruptions import SPOT_INTERRUPTION, STATE_CHANGE, event


def command(instance_id: str, *, endpoint: str, queue_url: str, notice_seconds: float) -> list[str]:
    """The command line that reclaims `instance_id` as below."""
    return [
        sys.executable,
        "-m",
        "local_stack.interrupt",
        instance_id,
        f"--aws-endpoint-url={endpoint}",
        f"--queue-url={queue_url}",
        f"--notice-seconds={notice_seconds}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack.interrupt", description=__doc__.splitlines()[0]
    )
    parser.add_argument("instance_id")
    parser.add_argument("--aws-endpoint-url", default="http://127.0.0.1:5000")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--notice-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    session = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name=args.region
    )
    sqs = session.client("sqs", endpoint_url=args.aws_endpoint_url)
    ec2 = session.client("ec2", endpoint_url=args.aws_endpoint_url)

    def send(kind: str, state: str | None = None) -> None:
        body = event(kind, args.instance_id, region=args.region, state=state)
        sqs.send_message(QueueUrl=args.queue_url, MessageBody=json.dumps(body))

    send(SPOT_INTERRUPTION)
    print(f"interruption warning sent for {args.instance_id}", file=sys.stderr, flush=True)
    time.sleep(args.notice_seconds)
    ec2.terminate_instances(InstanceIds=[args.instance_id])
    send(STATE_CHANGE, "shutting-down")
    print(f"{args.instance_id} terminated", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
