"""The flow-logs model: the target, the record fields, and the seeds' documents (pure).

:class:`FlowTarget` is a run's resolved request (resources, destination, options, account, Region,
partition); the documents are the bucket-policy statements, the KMS key-policy statement and the
CloudWatch Logs role's trust and policy (see :mod:`setup.wiring.flowlogs` for their sources);
:func:`bucket_admits_delivery` judges a bucket policy as the delivery service's request would be
judged; :class:`FlowState` is what :mod:`setup.wiring.flowlogs_aws` read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from setup.errors import UsageError
from setup.wiring.logdelivery import DELIVERY_SERVICE, admits
from setup.wiring.models import TAG_KEY, TAG_VALUE, short_id, validate_log_group_name
from setup.wiring.state import RoleState

FLOW_LOGS_SERVICE = "vpc-flow-logs.amazonaws.com"
FLOW_TAG = "trailwatch:flow-logs"        # value: the destination ARN the flow log serves
WRITE_SID, ACL_SID = "AWSLogDeliveryWrite", "AWSLogDeliveryAclCheck"
KMS_SID = "Allow Logs Delivery to use the key"
ROLE_POLICY_NAME = "trailwatch-flowlogs-delivery"
RESOURCE_TYPES = {"vpc": "VPC", "subnet": "Subnet", "eni": "NetworkInterface"}
_ID_RE = {"vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"), "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
          "eni": re.compile(r"^eni-[0-9a-f]{8,17}$")}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# Flow log record fields by the version that introduced them (VPC User Guide, "Flow log records";
# incident-response-log-sources.md: versions 2 to 5, version 2 by default).
FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {
    2: ("version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
        "protocol", "packets", "bytes", "start", "end", "action", "log-status"),
    3: ("vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr"),
    4: ("region", "az-id", "sublocation-type", "sublocation-id"),
    5: ("pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path"),
}
FIELD_VERSION = {f: v for v, fs in FIELDS_BY_VERSION.items() for f in fs}
DEFAULT_FIELDS = FIELDS_BY_VERSION[2]
DEFAULT_FORMAT = " ".join(f"${{{f}}}" for f in DEFAULT_FIELDS)


# ----------------------------------------------------------------------------------- the target

@dataclass(frozen=True)
class Destination:
    """``s3://bucket[/prefix]`` or ``log-group:NAME``."""

    kind: str                      # "s3" | "log-group"
    bucket: str = ""
    prefix: str = ""               # without leading/trailing "/"
    log_group: str = ""

    @property
    def spec(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        return f"log-group:{self.log_group}"


def parse_destination(value: str) -> Destination:
    if value.startswith("s3://"):
        rest = value[5:]
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET_RE.match(bucket):
            raise UsageError(f"--to {value}: {bucket!r} is not a valid S3 bucket name",
                             "use --to s3://BUCKET[/PREFIX]")
        if "AWSLogs" in prefix.split("/"):
            raise UsageError(f"--to {value}: the bucket cannot use AWSLogs as a subfolder name, "
                             "as this is a reserved term (vpc-flow-logs-to-s3.md)",
                             "choose another prefix; flow logs add AWSLogs/<account>/ themselves")
        return Destination("s3", bucket=bucket, prefix=prefix)
    if value.startswith("log-group:"):
        name = value.split(":", 1)[1]
        try:
            validate_log_group_name(name)
        except ValueError as e:
            raise UsageError(f"--to {value}: {e}", "use --to log-group:NAME") from None
        return Destination("log-group", log_group=name)
    raise UsageError(f"--to {value!r} is neither s3://BUCKET[/PREFIX] nor log-group:NAME",
                     "use --to s3://BUCKET[/PREFIX] or --to log-group:NAME")


def parse_fields(value: str | None) -> tuple[str, ...]:
    """``--fields`` as names (``a,b c``) or the ``${a} ${b}`` form; validated against v2-v5."""
    if not value:
        return DEFAULT_FIELDS
    names = [n for n in re.split(r"[\s,]+", value.replace("${", "").replace("}", " ")) if n]
    unknown = [n for n in names if n not in FIELD_VERSION]
    if unknown:
        raise UsageError(f"--fields: unknown flow log field(s) {', '.join(unknown)}",
                         "use fields of record versions 2-5, e.g. "
                         f"{','.join(DEFAULT_FIELDS[:4])},vpc-id,flow-direction")
    if len(set(names)) != len(names):
        raise UsageError("--fields: a field is listed twice", "list each field once")
    return tuple(names)


def log_format(fields: tuple[str, ...]) -> str:
    return " ".join(f"${{{f}}}" for f in fields)


def record_version(fmt: str | None) -> int:
    """The record version a log format needs (the highest version among its fields)."""
    names = re.findall(r"\$\{([a-z0-9-]+)\}", fmt or DEFAULT_FORMAT)
    return max((FIELD_VERSION.get(n, 2) for n in names), default=2)


@dataclass(frozen=True)
class FlowTarget:
    account: str
    region: str
    partition: str
    resources: tuple[tuple[str, str], ...]      # (ResourceType, id)
    destination: Destination
    fields: tuple[str, ...] = DEFAULT_FIELDS
    file_format: str = "plain-text"
    hive: bool = False
    per_hour: bool = False
    traffic_type: str = "ALL"
    max_aggregation: int = 600
    kms_key_policy: str = "print"               # print | apply
    retention_days: int | None = None
    log_group_kms_key: str | None = None
    role_name: str | None = None

    @property
    def log_format(self) -> str:
        return log_format(self.fields)

    @property
    def destination_arn(self) -> str:
        """The LogDestination CreateFlowLogs gets: ``arn:p:s3:::bucket`` or, with a subfolder,
        ``arn:p:s3:::bucket/prefix/`` (the forms of vpc-flow-logs-to-s3.md)."""
        d = self.destination
        if d.kind == "s3":
            return f"arn:{self.partition}:s3:::{d.bucket}" + (f"/{d.prefix}/" if d.prefix else "")
        return self.log_group_arn

    @property
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.destination.bucket}"

    @property
    def object_arn(self) -> str:
        """What AWSLogDeliveryWrite grants: ``<bucket>/<prefix/>AWSLogs/<account>/*``."""
        d = self.destination
        return f"{self.bucket_arn}/" + (f"{d.prefix}/" if d.prefix else "") + \
            f"AWSLogs/{self.account}/*"

    @property
    def key_prefix(self) -> str:
        """Where log files land (vpc-flow-logs-to-s3.md "Flow log files"; hive-compatible keys
        are ``aws-account-id=<acct>/aws-service=vpcflowlogs/aws-region=<region>/``)."""
        d = self.destination
        base = (f"{d.prefix}/" if d.prefix else "") + "AWSLogs/"
        if self.hive:
            return base + f"aws-account-id={self.account}/aws-service=vpcflowlogs/" \
                          f"aws-region={self.region}/"
        return base + f"{self.account}/vpcflowlogs/{self.region}/"

    @property
    def source_arn(self) -> str:
        return f"arn:{self.partition}:logs:{self.region}:{self.account}:*"

    @property
    def log_group_arn(self) -> str:
        return (f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:"
                f"{self.destination.log_group}")

    @property
    def dest_id(self) -> str:
        return short_id(self.destination_arn)

    @property
    def role(self) -> str:
        return self.role_name or f"trailwatch-flowlogs-{self.region}-{self.dest_id}"

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role}"

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_KEY: TAG_VALUE, FLOW_TAG: self.destination_arn}

    @property
    def destination_options(self) -> dict[str, Any]:
        return {"FileFormat": self.file_format, "HiveCompatiblePartitions": self.hive,
                "PerHourPartition": self.per_hour}


# ----------------------------------------------------------------------------------- documents

def confused_deputy(target: FlowTarget) -> dict[str, Any]:
    return {"StringEquals": {"aws:SourceAccount": [target.account]},
            "ArnLike": {"aws:SourceArn": [target.source_arn]}}


def s3_delivery_statements(target: FlowTarget) -> list[dict[str, Any]]:
    """The two bucket-policy statements (seeds), scoped to this account, Region and prefix."""
    cond = confused_deputy(target)
    write_cond = {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                                   **cond["StringEquals"]},
                  "ArnLike": dict(cond["ArnLike"])}
    return [
        {"Sid": WRITE_SID, "Effect": "Allow", "Principal": {"Service": DELIVERY_SERVICE},
         "Action": "s3:PutObject", "Resource": [target.object_arn], "Condition": write_cond},
        {"Sid": ACL_SID, "Effect": "Allow", "Principal": {"Service": DELIVERY_SERVICE},
         "Action": "s3:GetBucketAcl", "Resource": [target.bucket_arn], "Condition": cond},
    ]


def kms_key_statement(target: FlowTarget) -> dict[str, Any]:
    """log-delivery-permissions-and-confused-deputy.md, "Amazon S3 bucket server-side
    encryption": for the key policy, not the bucket policy."""
    return {"Sid": KMS_SID, "Effect": "Allow", "Principal": {"Service": [DELIVERY_SERVICE]},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                       "kms:DescribeKey"],
            "Resource": "*", "Condition": confused_deputy(target)}


def role_trust_policy(target: FlowTarget) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "TrailwatchVpcFlowLogsAssume", "Effect": "Allow",
        "Principal": {"Service": FLOW_LOGS_SERVICE}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": target.account},
                      "ArnLike": {"aws:SourceArn": f"arn:{target.partition}:ec2:{target.region}:"
                                                   f"{target.account}:vpc-flow-log/*"}}}]}


def role_policy(target: FlowTarget) -> dict[str, Any]:
    """The documented actions, on this one log group (no logs:CreateLogGroup: trailwatch creates
    the group; no "*")."""
    group = target.log_group_arn
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "TrailwatchFlowLogsDeliver", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [group, f"{group}:*"]},
        {"Sid": "TrailwatchFlowLogsDescribeGroup", "Effect": "Allow",
         "Action": ["logs:DescribeLogGroups"], "Resource": [group, f"{group}:*"]}]}


def delivery_context(target: FlowTarget, with_acl: bool = True) -> dict[str, str]:
    """What the log delivery service's request carries (seeds: the source account and a
    ``arn:<p>:logs:<region>:<account>:...`` source ARN)."""
    ctx = {"aws:SourceAccount": target.account,
           "aws:SourceArn": f"arn:{target.partition}:logs:{target.region}:{target.account}:"
                            "vpc-flow-logs"}
    if with_acl:
        ctx["s3:x-amz-acl"] = "bucket-owner-full-control"
    return ctx


def bucket_admits_delivery(policy: Any, target: FlowTarget) -> list[str]:
    """What the bucket policy does not let delivery.logs do for this target (empty: all)."""
    obj = target.object_arn[:-1] + "vpcflowlogs/x.log.gz"
    missing = []
    if not admits(policy, DELIVERY_SERVICE, "s3:PutObject", obj, delivery_context(target)):
        missing.append(f"s3:PutObject on {target.object_arn}")
    if not admits(policy, DELIVERY_SERVICE, "s3:GetBucketAcl", target.bucket_arn,
                  delivery_context(target, with_acl=False)):
        missing.append(f"s3:GetBucketAcl on {target.bucket_arn}")
    return missing


# ----------------------------------------------------------------------------------- state

@dataclass
class FlowState:
    """What exists, read once per run (the only part of this module that calls AWS)."""

    flow_logs: list[dict[str, Any]] = field(default_factory=list)   # every flow log in the Region
    bucket_region: str | None = None
    bucket_missing: bool = False             # removal only: the bucket was deleted
    bucket_policy: dict[str, Any] | None = None
    bucket_tags: dict[str, str] = field(default_factory=dict)
    sse: str | None = None                   # "AES256" | "aws:kms" | "aws:kms:dsse" | None
    kms_key: str | None = None               # key ARN of SSE-KMS
    kms_manager: str | None = None           # "AWS" | "CUSTOMER"
    kms_policy: dict[str, Any] | None = None
    log_group: dict[str, Any] | None = None  # name, retention, kms, tags, class
    log_group_kms_policy: dict[str, Any] | None = None   # policy of --kms-key (log group)
    role: RoleState | None = None

    def digest_facts(self) -> dict[str, Any]:
        return {"flow_logs": sorted((f.get("FlowLogId"), f.get("ResourceId"),
                                     f.get("LogDestination"), f.get("LogFormat"))
                                    for f in self.flow_logs),
                "bucket_policy": self.bucket_policy, "bucket_tags": sorted(self.bucket_tags.items()),
                "sse": [self.sse, self.kms_key, self.kms_manager], "kms_policy": self.kms_policy,
                "log_group": self.log_group, "log_group_kms_policy": self.log_group_kms_policy,
                "role": None if self.role is None else [self.role.arn, self.role.trust,
                                                        self.role.inline,
                                                        sorted(self.role.tags.items())]}






def valid_id(flag: str, value: str) -> bool:
    return bool(_ID_RE[flag].match(value or ""))
