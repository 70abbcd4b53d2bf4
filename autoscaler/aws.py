"""The autoscaler's AWS side: EC2 (launch, list, terminate), SSM (node images) and SQS
(interruption notices), through boto3. Blocking calls; the daemon runs them in a thread.

Every launch is idempotent (an EC2 client token) and tags its instances with the
cluster, the compute environment and the launch's token; nothing without this
cluster's tag is ever terminated. Throttling is retried with backoff and jitter.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from botocore.exceptions import ClientError

from autoscaler import metrics
from ebb import keys
from ebb.catalog import ARM64, X86_64, InstanceType
from ebb.model import LaunchTemplate

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import DescribeSubnetsResultTypeDef, InstanceTypeDef
    from mypy_boto3_sqs import SQSClient

log = structlog.get_logger("ebb.autoscaler.aws")
T = TypeVar("T")
# How long one ReceiveMessage long-polls for interruption notices.
NOTICE_WAIT_SECONDS = 10

# EC2 error codes that mean "no capacity for this offering right now".
INSUFFICIENT_CAPACITY = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "UnfulfillableCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
    }
)
# Error codes worth retrying: throttling, and EC2's own transient failures.
RETRIED = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)


class AwsError(Exception):
    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def insufficient_capacity(self) -> bool:
        return self.code in INSUFFICIENT_CAPACITY


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    instance_type: str
    zone: str
    state: str
    launched: float  # epoch seconds
    environment: str
    capacity_type: str
    launch_token: str
    private_dns_name: str


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    token: str  # EC2 client token, and the instances' launch tag
    environment: str
    instance_type: str
    capacity_type: str
    count: int
    subnet_id: str
    image_id: str
    user_data: str
    security_group_ids: tuple[str, ...] = ()
    instance_profile: str | None = None
    launch_template: LaunchTemplate | None = None
    tags: tuple[tuple[str, str], ...] = ()
    max_price: str | None = None  # Spot: the bidPercentage of On-Demand, USD/hour
    placement_group: str | None = None


class Aws:
    def __init__(
        self,
        ec2: EC2Client,
        ssm: Any,
        sqs: SQSClient,
        cluster: str,
        *,
        pricing: Any = None,
        max_attempts: int = 6,
        base_delay: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ec2 = ec2
        self._ssm = ssm
        self._sqs = sqs
        self._pricing = pricing
        self.cluster = cluster
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._sleep = sleep
        self._zones: dict[str, str] = {}
        self._images: dict[str, str] = {}

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one API call, retrying throttling and transient errors with exponential
        backoff and jitter (botocore itself is told not to retry, so every retry is
        counted here)."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                message = str(exc.response.get("Error", {}).get("Message", ""))
                if code not in RETRIED or attempt == self._max_attempts:
                    raise AwsError(operation, code, message) from exc
                metrics.EC2_RETRIES.labels(operation).inc()
                delay = self._base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
                log.info("aws throttled; retrying", operation=operation, retry_in=round(delay, 2))
                self._sleep(delay)
        raise AssertionError("unreachable")

    # --- EC2 -----------------------------------------------------------------------------

    def instances(self) -> list[Instance]:
        """Every instance with this cluster's tag, in any state EC2 still reports."""

        def list_all() -> list[Instance]:
            pages = self._ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{keys.TAG_CLUSTER}", "Values": [self.cluster]}]
            )
            return [
                _instance(raw)
                for page in pages
                for reservation in page.get("Reservations", ())
                for raw in reservation.get("Instances", ())
            ]

        return self._call("DescribeInstances", list_all)

    def subnet_zones(self, subnets: Iterable[str]) -> dict[str, str]:
        """Availability zone of each subnet EC2 knows (unknown ones are left out)."""
        missing = sorted(set(subnets) - set(self._zones))
        for subnet in missing:
            try:
                answer = self._call("DescribeSubnets", partial(self._describe_subnet, subnet))
            except AwsError as exc:
                if exc.code.startswith("InvalidSubnet"):
                    continue  # not there: validation reports it
                raise
            for raw in answer.get("Subnets", ()):
                self._zones[raw["SubnetId"]] = raw["AvailabilityZone"]
        return {s: self._zones[s] for s in subnets if s in self._zones}

    def _describe_subnet(self, subnet: str) -> DescribeSubnetsResultTypeDef:
        return self._ec2.describe_subnets(SubnetIds=[subnet])

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """Launch `count` instances, all or none (EC2 answers InsufficientInstanceCapacity
        when it cannot). Repeating a request with the same token launches nothing new."""
        tags = [
            {"Key": "Name", "Value": f"ebb-{self.cluster}-{request.environment}"},
            *({"Key": k, "Value": v} for k, v in request.tags),
            {"Key": keys.TAG_CLUSTER, "Value": self.cluster},
            {"Key": keys.TAG_COMPUTE_ENVIRONMENT, "Value": request.environment},
            {"Key": keys.TAG_LAUNCH, "Value": request.token},
        ]
        params: dict[str, Any] = {
            "ImageId": request.image_id,
            "InstanceType": request.instance_type,
            "MinCount": request.count,
            "MaxCount": request.count,
            "SubnetId": request.subnet_id,
            "UserData": request.user_data,
            "ClientToken": request.token,
            "MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if request.placement_group:
            params["Placement"] = {"GroupName": request.placement_group}
        if request.security_group_ids:
            params["SecurityGroupIds"] = list(request.security_group_ids)
        if request.instance_profile:
            key = "Arn" if request.instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: request.instance_profile}
        if request.launch_template is not None:
            lt = request.launch_template
            params["LaunchTemplate"] = {
                **({"LaunchTemplateId": lt.id} if lt.id else {"LaunchTemplateName": lt.name}),
                "Version": lt.version or "$Default",
            }
        if request.capacity_type == keys.CAPACITY_SPOT:
            spot: dict[str, str] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if request.max_price:
                spot["MaxPrice"] = request.max_price
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        answer = self._call("RunInstances", lambda: self._ec2.run_instances(**params))
        return [_instance(raw) for raw in answer.get("Instances", ())]

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        """Terminate those of `instance_ids` that carry this cluster's tag (the others are
        refused and logged); returns the ids terminated."""
        if not instance_ids:
            return []
        answer = self._call(
            "DescribeInstances",
            lambda: self._ec2.describe_instances(InstanceIds=list(instance_ids)),
        )
        ours: list[str] = []
        for reservation in answer.get("Reservations", ()):
            for raw in reservation.get("Instances", ()):
                tags = {t["Key"]: t["Value"] for t in raw.get("Tags", ())}
                if tags.get(keys.TAG_CLUSTER) == self.cluster:
                    ours.append(raw["InstanceId"])
                else:
                    log.error(
                        "refusing to terminate an instance without this cluster's tag",
                        instance=raw["InstanceId"],
                        cluster=self.cluster,
                    )
        if ours:
            self._call(
                "TerminateInstances", lambda: self._ec2.terminate_instances(InstanceIds=ours)
            )
        return ours

    # --- catalog refresh ------------------------------------------------------------------

    def instance_type_specs(self) -> list[InstanceType]:
        """Specs of every type EC2 offers here (prices unknown: zero)."""

        def list_all() -> list[InstanceType]:
            pages = self._ec2.get_paginator("describe_instance_types").paginate()
            return [_spec(raw) for page in pages for raw in page.get("InstanceTypes", ())]

        return self._call("DescribeInstanceTypes", list_all)

    def spot_prices(self, instance_types: Sequence[str]) -> dict[str, float]:
        """The current lowest Spot price of each type across zones (Linux)."""

        def query() -> dict[str, float]:
            prices: dict[str, float] = {}
            pages = self._ec2.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=list(instance_types),  # type: ignore[arg-type]
                ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                StartTime=datetime.datetime.now(datetime.UTC),
            )
            for page in pages:
                for entry in page.get("SpotPriceHistory", ()):
                    name, price = entry.get("InstanceType", ""), float(entry.get("SpotPrice", 0))
                    if price > 0 and (name not in prices or price < prices[name]):
                        prices[name] = price
            return prices

        return self._call("DescribeSpotPriceHistory", query) if instance_types else {}

    def on_demand_prices(self, region: str) -> dict[str, float]:
        """Linux, shared-tenancy On-Demand prices from the AWS Price List API."""
        if self._pricing is None:
            return {}
        filters = [
            {"Type": "TERM_MATCH", "Field": field, "Value": value}
            for field, value in (
                ("regionCode", region),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
                ("licenseModel", "No License required"),
            )
        ]

        def query() -> dict[str, float]:
            prices: dict[str, float] = {}
            pages = self._pricing.get_paginator("get_products").paginate(
                ServiceCode="AmazonEC2", Filters=filters
            )
            for page in pages:
                for item in page.get("PriceList", ()):
                    name, price = _on_demand_price(item)
                    if name and price > 0:
                        prices[name] = price
            return prices

        return self._call("GetProducts", query)

    # --- SSM and SQS ---------------------------------------------------------------------

    def image_id(self, parameter: str) -> str:
        """The AMI id an SSM parameter names (cached for the process's life)."""
        if parameter not in self._images:
            answer = self._call("GetParameter", lambda: self._ssm.get_parameter(Name=parameter))
            self._images[parameter] = str(answer["Parameter"]["Value"])
        return self._images[parameter]

    def receive(self, queue_url: str, wait_seconds: int) -> list[tuple[str, str]]:
        """Up to 10 messages as (receipt handle, body); long-polls up to `wait_seconds`."""
        answer = self._call(
            "ReceiveMessage",
            lambda: self._sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
            ),
        )
        return [(m["ReceiptHandle"], m["Body"]) for m in answer.get("Messages", ())]

    def delete_message(self, queue_url: str, receipt: str) -> None:
        self._call(
            "DeleteMessage",
            lambda: self._sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt),
        )


def _spec(raw: Any) -> InstanceType:
    gpus = (raw.get("GpuInfo") or {}).get("Gpus") or [{}]
    gpu = gpus[0]
    arches = raw.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
    name = str(raw["InstanceType"])
    return InstanceType(
        name=name,
        family=name.split(".", maxsplit=1)[0],
        vcpus=int(raw["VCpuInfo"]["DefaultVCpus"]),
        memory_mib=int(raw["MemoryInfo"]["SizeInMiB"]),
        gpus=int(gpu.get("Count") or gpu.get("LogicalGpuCount") or 0),
        gpu_model=gpu.get("Name"),
        gpu_memory_mib=int((gpu.get("MemoryInfo") or {}).get("SizeInMiB") or 0),
        arch=ARM64 if ARM64 in arches else X86_64,
        on_demand_price=0.0,
        spot_price=0.0,
        interruption_bucket=None,
    )


def _on_demand_price(item: str) -> tuple[str, float]:
    product = orjson.loads(item)
    name = str(product.get("product", {}).get("attributes", {}).get("instanceType", ""))
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            return name, float(dimension.get("pricePerUnit", {}).get("USD", 0))
    return name, 0.0


def _instance(raw: InstanceTypeDef) -> Instance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", ())}
    return Instance(
        instance_id=raw["InstanceId"],
        instance_type=str(raw.get("InstanceType", "")),
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        state=raw.get("State", {}).get("Name", ""),
        launched=raw["LaunchTime"].timestamp() if "LaunchTime" in raw else 0.0,
        environment=tags.get(keys.TAG_COMPUTE_ENVIRONMENT, ""),
        capacity_type=keys.CAPACITY_SPOT
        if raw.get("InstanceLifecycle") == "spot"
        else keys.CAPACITY_ON_DEMAND,
        launch_token=tags.get(keys.TAG_LAUNCH, ""),
        private_dns_name=raw.get("PrivateDnsName", ""),
    )
