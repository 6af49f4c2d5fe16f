"""Pure builders: ARNs, names and the exact policy documents. No AWS calls here.

Every document matches the CloudTrail User Guide: the trust policy of "Creating a role" and the
stream policy of "cloudtrail-required-policy-for-cloudwatch-logs" (``{account}_CloudTrail_{region}*``
plus ``o-{orgid}_*`` for organization trails).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

TAG_KEY = "managed-by"
TAG_VALUE = "trailwatch"
POLICY_NAME = "trailwatch-cloudtrail-delivery"
CONTROL_TOWER_PREFIX = "aws-controltower"
STREAM_SCOPES = ("documented", "group")
# Values CloudWatch Logs PutRetentionPolicy accepts (botocore logs model, retentionInDays).
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                  2192, 2557, 2922, 3288, 3653)
DELIVERY_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
ROLE_NAME_MAX = 64
_TRAIL_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):cloudtrail:([a-z0-9-]+):(\d{12}):trail/(.+)$")


class ModelError(ValueError):
    pass


def partition_for_region(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-iso-"):
        return "aws-iso"
    if region.startswith("us-isob-"):
        return "aws-iso-b"
    return "aws"


@dataclass(frozen=True)
class TrailArn:
    partition: str
    region: str
    account: str
    name: str

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:cloudtrail:{self.region}:{self.account}:trail/{self.name}"


def parse_trail_arn(value: str) -> TrailArn | None:
    m = _TRAIL_ARN_RE.match(value)
    return TrailArn(*m.groups()) if m else None


def default_log_group(trail_name: str) -> str:
    return f"CloudTrail/{trail_name}"


def default_role_name(trail_name: str) -> str:
    """``trailwatch-cwl-<trail>``; over 64 characters, shortened with a stable hash suffix."""
    base = f"trailwatch-cwl-{trail_name}"
    base = re.sub(r"[^\w+=,.@-]", "-", base)
    if len(base) <= ROLE_NAME_MAX:
        return base
    digest = hashlib.sha256(trail_name.encode()).hexdigest()[:8]
    return f"{base[: ROLE_NAME_MAX - 9]}-{digest}"


def validate_retention(days: int) -> int:
    if days not in RETENTION_DAYS:
        raise ModelError(f"--retention-days {days} is not a value CloudWatch Logs accepts; "
                         f"choose one of: {', '.join(map(str, RETENTION_DAYS))}")
    return days


@dataclass(frozen=True)
class Trail:
    """What DescribeTrails told us about the trail."""

    name: str
    arn: str
    home_region: str
    owner_account: str
    is_org: bool
    is_multi_region: bool
    log_group_arn: str | None = None
    role_arn: str | None = None

    @property
    def partition(self) -> str:
        return self.arn.split(":")[1]


@dataclass(frozen=True)
class Target:
    """The desired wiring, fully resolved (account, region, names, options)."""

    trail: Trail
    account: str                 # the caller's account: log group and role live here
    log_group: str
    role_name: str
    retention_days: int = 365
    kms_key: str | None = None
    stream_scope: str = "documented"
    org_id: str | None = None
    policy_name: str = POLICY_NAME
    tags: dict[str, str] = field(default_factory=lambda: {TAG_KEY: TAG_VALUE})

    @property
    def region(self) -> str:
        return self.trail.home_region

    @property
    def partition(self) -> str:
        return partition_for_region(self.region)

    @property
    def log_group_arn(self) -> str:
        """The form CloudTrail needs: ends in ``:*`` (trap 1)."""
        return f"{self.log_group_arn_bare}:*"

    @property
    def log_group_arn_bare(self) -> str:
        return f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{self.log_group}"

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role_name}"

    @property
    def role_name_in_use(self) -> str:
        """The role the trail is configured with (verify checks what is, not what was asked)."""
        if self.trail.role_arn and ":role/" in self.trail.role_arn:
            return self.trail.role_arn.rsplit("/", 1)[1]
        return self.role_name


def trust_policy() -> dict[str, Any]:
    """Exactly the documented trust policy; no confused-deputy condition (it breaks delivery)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    }


def stream_prefixes(target: Target) -> list[str]:
    """The stream-name prefixes CloudTrail writes for this trail (policy resources end in ``*``)."""
    prefixes = [f"{target.account}_CloudTrail_{target.region}"]
    if target.trail.owner_account != target.account:
        # Delegated administrator: the trail (and the management account's events) belong to
        # the management account even though the log group lives here.
        prefixes.append(f"{target.trail.owner_account}_CloudTrail_{target.region}")
    if target.trail.is_org:
        if not target.org_id:
            raise ModelError("an organization trail needs the organization id (o-...)")
        prefixes.append(f"{target.org_id}_")
    return prefixes


def stream_resources(target: Target) -> list[str]:
    group = f"{target.log_group_arn_bare}:log-stream:"
    if target.stream_scope == "group":
        return [f"{group}*"]
    if target.stream_scope != "documented":
        raise ModelError(f"--stream-scope must be one of {', '.join(STREAM_SCOPES)}")
    return [f"{group}{prefix}*" for prefix in stream_prefixes(target)]


def stream_policy(target: Target) -> dict[str, Any]:
    resources = stream_resources(target)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AWSCloudTrailCreateLogStream20141101", "Effect": "Allow",
             "Action": ["logs:CreateLogStream"], "Resource": list(resources)},
            {"Sid": "AWSCloudTrailPutLogEvents20141101", "Effect": "Allow",
             "Action": ["logs:PutLogEvents"], "Resource": list(resources)},
        ],
    }


def expected_stream_arns(target: Target, member_accounts: list[str]) -> list[str]:
    """Concrete stream ARNs CloudTrail will write, for local policy evaluation in ``verify``."""
    group = f"{target.log_group_arn_bare}:log-stream:"
    arns = [f"{group}{target.account}_CloudTrail_{target.region}"]
    if target.trail.is_org and target.org_id:
        for member in member_accounts or ["000000000000"]:
            arns.append(f"{group}{target.org_id}_{member}_CloudTrail_{target.region}")
    return arns


def kms_key_statement(target: Target) -> dict[str, Any]:
    """The key-policy statement CloudWatch Logs needs (regional principal, context without ``:*``)."""
    return {
        "Sid": "AllowCloudWatchLogsForTrailwatchLogGroup",
        "Effect": "Allow",
        "Principal": {"Service": f"logs.{target.region}.amazonaws.com"},
        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                   "kms:Describe*"],
        "Resource": "*",
        "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": target.log_group_arn_bare}},
    }


def canonical(doc: Any) -> Any:
    """Normalise a policy document for comparison (string-or-list, order of lists, key order)."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            return doc
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in ("Action", "NotAction", "Resource", "NotResource") and isinstance(v, str):
                v = [v]
            out[k] = canonical(v)
        if "Sid" in out and out["Sid"] == "":
            out.pop("Sid")
        return out
    if isinstance(doc, list):
        items = [canonical(x) for x in doc]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    return doc


def policy_text(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def is_control_tower(name: str | None, tags: dict[str, str] | None = None) -> bool:
    if name and name.lower().startswith(CONTROL_TOWER_PREFIX):
        return True
    return any(k.lower().startswith(CONTROL_TOWER_PREFIX) for k in (tags or {}))
