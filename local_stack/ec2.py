"""The local stand-in for AWS: a moto server (EC2, SSM, SQS over real HTTP) with a
fault-injection layer in front, seeded with what Ebb needs.

    python -m local_stack.ec2 --port 5000 --info-file .ebb/aws.json

Seeding: a VPC with one subnet per zone, a security group, an instance profile
(ebb-node), the SSM parameters that
name node images (under --image-parameter-prefix, as EKS publishes them under
/aws/service/eks/optimized-ami), and the SQS queue for EC2 interruption notices. Their
ids go to --info-file as JSON.

moto never runs out of capacity, so tests inject faults over HTTP:

    POST   /_ebb/faults  [{"action": "RunInstances", "match": {"InstanceType": "c6i.large"},
                           "error": "InsufficientInstanceCapacity", "times": -1},
                          {"action": "RunInstances", "delay_after": 5}]
    DELETE /_ebb/faults

A rule whose `match` fits the request's parameters (and whose `agent`, if given, is
part of its User-Agent: the autoscaler's calls carry "ebb-autoscaler"), for `times`
requests (-1: until cleared; with `probability`, only that share of them, drawn from a
generator seeded with `seed`), either answers with the EC2 `error` (after `delay_before` seconds, if
given: the request never took effect, as if lost on the way), or lets moto answer and
holds the reply back for `delay_after` seconds (the request took effect; a client that
gives up or crashes meanwhile loses only the answer). A rule with `capacity` plays an
offering EC2 has only that many instances left of: a RunInstances whose MinCount is
more is refused with its `error` (EC2 launches nothing when it cannot launch MinCount),
and what one launches is taken from the capacity.

moto ignores RunInstances' ClientToken; EC2 does not, and Ebb's restart safety rests
on it, so this layer adds it: a RunInstances repeating an earlier successful one's
token gets that request's answer again (nothing new is launched), or
IdempotentParameterMismatch if its parameters differ.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.parse
from io import BytesIO
from pathlib import Path
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
K8S_VERSIONS = ("1.35", "1.36")
QUEUE = "ebb-interruptions"
Reply = tuple[str, list[tuple[str, str]], bytes]  # WSGI status, headers, body


class Faults:
    """Fault rules and ClientToken idempotency, applied to EC2 Query API requests in a
    WSGI middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.random = random.Random(0)
        # ClientToken -> the parameters and the answer of the launch it made.
        self.launches: dict[str, tuple[dict[str, str], Reply]] = {}
        self.token_locks: dict[str, threading.Lock] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/_ebb/faults":
            return self._admin(environ, start_response)
        if path == "/_ebb/health":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = BytesIO(body)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        rule = self._match(params, environ.get("HTTP_USER_AGENT", ""))
        if rule is not None and rule.get("error") and "capacity" not in rule:
            time.sleep(float(rule.get("delay_before", 0)))  # lost on the way: no effect
            status, headers, answer = _error(str(rule["error"]), int(rule.get("status", 400)))
        elif params.get("Action") == "RunInstances" and params.get("ClientToken"):
            status, headers, answer = self._launch(environ, params, rule)
        else:
            status, headers, answer = self._forward(environ)
        if rule is not None and rule.get("delay_after"):
            time.sleep(float(rule["delay_after"]))  # it took effect; only the answer is late
        start_response(status, headers)
        return [answer]

    def _launch(self, environ: dict[str, Any], params: dict[str, str], rule: Any) -> Reply:
        """RunInstances with EC2's ClientToken idempotency (and capacity rules)."""
        token = params["ClientToken"]
        with self.lock:
            token_lock = self.token_locks.setdefault(token, threading.Lock())
        with token_lock:  # a repeat waits for the first request with its token
            done = self.launches.get(token)
            if done is not None:
                first, reply = done
                return reply if first == params else _error("IdempotentParameterMismatch", 400)
            short = rule is not None and "capacity" in rule
            if short and not self._take_capacity(rule["id"], int(params.get("MinCount", 1))):
                return _error(str(rule["error"]), int(rule.get("status", 500)))
            reply = self._forward(environ)
            if reply[0].startswith("200"):
                self.launches[token] = (params, reply)
            return reply

    def _forward(self, environ: dict[str, Any]) -> Reply:
        """moto's answer."""
        answered: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answered[:] = [status, headers]

        answer = b"".join(self.app(environ, capture))
        return str(answered[0]), list(answered[1]), answer

    def _match(self, params: dict[str, str], agent: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("action") != params.get("Action"):
                    continue
                if str(rule.get("agent", "")) not in agent:
                    continue
                if any(params.get(k) != v for k, v in (rule.get("match") or {}).items()):
                    continue
                if rule.get("times", -1) == 0:
                    continue
                if self.random.random() >= float(rule.get("probability", 1.0)):
                    continue
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                rule["hits"] = rule.get("hits", 0) + 1
                return dict(rule)
        return None

    def _take_capacity(self, rule_id: int, count: int) -> bool:
        """Take `count` instances from a capacity rule; False if fewer are left."""
        with self.lock:
            rule = next((r for r in self.rules if r.get("id") == rule_id), None)
            if rule is None or int(rule["capacity"]) < count:
                return False
            rule["capacity"] = int(rule["capacity"]) - count
            return True

    def _admin(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        with self.lock:
            if method == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                self.rules = list(json.loads(environ["wsgi.input"].read(size) or b"[]"))
                for i, rule in enumerate(self.rules):
                    rule["id"] = i
                self.random = random.Random(next((r["seed"] for r in self.rules if "seed" in r), 0))
            elif method == "DELETE":
                self.rules = []
            payload = json.dumps(self.rules).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]


def _error(code: str, status: int) -> Reply:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code>"
        f"<Message>injected by local_stack.ec2: {code}</Message></Error></Errors>"
        "<RequestID>ebb-fault</RequestID></Response>"
    ).encode()
    return f"{status} Injected", [("Content-Type", "text/xml")], body


def seed(endpoint: str, image_parameter_prefix: str) -> dict[str, Any]:
    session = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION
    )
    ec2 = session.client("ec2", endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(ZONES)
    ]
    group = ec2.create_security_group(GroupName="ebb-nodes", Description="Ebb nodes", VpcId=vpc)
    ssm = session.client("ssm", endpoint_url=endpoint)
    n = 0
    for version in K8S_VERSIONS:
        for flavour in (
            "amazon-linux-2023/x86_64/standard",
            "amazon-linux-2023/x86_64/nvidia",
            "amazon-linux-2023/arm64/standard",
            "amazon-linux-2023/arm64/nvidia",
            "amazon-linux-2",
            "amazon-linux-2-gpu",
            "amazon-linux-2-arm64",
        ):
            n += 1
            ssm.put_parameter(
                Name=f"{image_parameter_prefix}/{version}/{flavour}/recommended/image_id",
                Value=f"ami-{n:017x}",
                Type="String",
            )
    profile = session.client("iam", endpoint_url=endpoint).create_instance_profile(
        InstanceProfileName="ebb-node"
    )
    queue = session.client("sqs", endpoint_url=endpoint).create_queue(QueueName=QUEUE)
    return {
        "endpoint": endpoint,
        "region": REGION,
        "vpc": vpc,
        "subnets": subnets,
        "securityGroup": group["GroupId"],
        "queueUrl": queue["QueueUrl"],
        "instanceRole": profile["InstanceProfile"]["InstanceProfileName"],
        "imageParameterPrefix": image_parameter_prefix,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack.ec2", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--info-file", required=True)
    parser.add_argument("--image-parameter-prefix", default="/ebb-local/eks/optimized-ami")
    args = parser.parse_args(argv)
    app = Faults(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    info = seed(f"http://{args.host}:{args.port}", args.image_parameter_prefix)
    path = Path(args.info_file)
    # Written whole then renamed: whoever waits for the file never reads it half-written.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(info, indent=2) + "\n")
    partial.replace(path)
    print(f"local AWS ready on {info['endpoint']}; ids in {path}", file=sys.stderr, flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
