"""The local stand-in for AWS: a moto server (EC2, SSM, SQS over real HTTP) with a
fault-injection layer in front, seeded with what Ebb needs.

    python hack/ec2.py --port 5000 --info-file .ebb/aws.json

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

A rule whose `match` fits the request's parameters (for `times` requests; -1: until
cleared) either answers with the EC2 `error` (after `delay_before` seconds, if given:
the request never took effect, as if lost on the way), or lets moto answer and holds
the reply back for `delay_after` seconds (the request took effect; a crash meanwhile
loses only the answer).
"""

from __future__ import annotations

import argparse
import json
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
K8S_VERSIONS = ("1.35",)
QUEUE = "ebb-interruptions"


class Faults:
    """Fault rules, applied to EC2 Query API requests, in a WSGI middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: list[dict[str, Any]] = []
        self.lock = threading.Lock()

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
        rule = self._match(params)
        if rule is not None and rule.get("error"):
            time.sleep(float(rule.get("delay_before", 0)))
            return _error(start_response, str(rule["error"]), int(rule.get("status", 400)))
        result = list(self.app(environ, start_response))
        if rule is not None and rule.get("delay_after"):
            time.sleep(float(rule["delay_after"]))
        return result

    def _match(self, params: dict[str, str]) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("action") != params.get("Action"):
                    continue
                if any(params.get(k) != v for k, v in (rule.get("match") or {}).items()):
                    continue
                if rule.get("times", -1) == 0:
                    continue
                if rule.get("times", -1) > 0:
                    rule["times"] -= 1
                rule["hits"] = rule.get("hits", 0) + 1
                return dict(rule)
        return None

    def _admin(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        with self.lock:
            if method == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                self.rules = list(json.loads(environ["wsgi.input"].read(size) or b"[]"))
            elif method == "DELETE":
                self.rules = []
            payload = json.dumps(self.rules).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]


def _error(start_response: Any, code: str, status: int) -> list[bytes]:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code>"
        f"<Message>injected by hack/ec2.py: {code}</Message></Error></Errors>"
        "<RequestID>ebb-fault</RequestID></Response>"
    ).encode()
    start_response(f"{status} Injected", [("Content-Type", "text/xml")])
    return [body]


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"local AWS ready on {info['endpoint']}; ids in {path}", file=sys.stderr, flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
