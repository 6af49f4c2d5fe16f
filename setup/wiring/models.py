"""Pure builders: ARNs, names and the exact policy documents. No AWS calls here.

Every document matches the CloudTrail User Guide: the trust policy of "Creating a role" and the
stream policy of "cloudtrail-required-policy-for-cloudwatch-logs" (``{account}_CloudTrail_{region}*``
plus ``o-{orgid}_*`` for organization trails).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

TAG_KEY = "managed-by"
TAG_VALUE = "trailwatch"
# Ownership: one tag per trail a resource serves, key ``trailwatch:trail:<id>`` (id = short hash of
# the trail ARN, so a resource can serve several trails), value = the trail ARN.
TRAIL_TAG_PREFIX = "trailwatch:trail"
CLOUDTRAIL_SERVICE = "cloudtrail.amazonaws.com"
SID_PREFIX = "Trailwatch"
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


@lru_cache(maxsize=64)
def partition_for_region(region: str) -> str:
    """The partition of a region, from botocore's endpoint data (no hand-written prefix table)."""
    import botocore.session
    return botocore.session.get_session().get_partition_for_region(region)


def short_id(value: str, n: int = 8) -> str:
    """A short, stable id of a name or ARN (hex: valid in IAM Sids and resource names)."""
    return hashlib.sha256(value.encode()).hexdigest()[:n]


def trail_tag(trail_arn: str) -> tuple[str, str]:
    return f"{TRAIL_TAG_PREFIX}:{short_id(trail_arn)}", trail_arn


def ownership_tags(trail_arn: str) -> dict[str, str]:
    key, value = trail_tag(trail_arn)
    return {TAG_KEY: TAG_VALUE, key: value}


def trails_in_tags(tags: dict[str, str] | None) -> set[str]:
    """The trail ARNs a trailwatch-owned resource is tagged as serving."""
    return {v for k, v in (tags or {}).items() if k.startswith(TRAIL_TAG_PREFIX)}


def is_owned(tags: dict[str, str] | None) -> bool:
    return (tags or {}).get(TAG_KEY) == TAG_VALUE


_ROLE_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
_LOG_GROUP_RE = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")


def validate_role_name(name: str) -> str:
    """IAM role names: 1-64 characters of letters, digits and ``+=,.@_-``."""
    if not _ROLE_NAME_RE.match(name or ""):
        raise ModelError(f"{name!r} is not a valid IAM role name (1-64 characters: letters, "
                         "digits and +=,.@_-)")
    return name


def validate_log_group_name(name: str) -> str:
    """CloudWatch Logs group names: 1-512 characters of ``[.-_/#A-Za-z0-9]``."""
    if not _LOG_GROUP_RE.match(name or ""):
        raise ModelError(f"{name!r} is not a valid CloudWatch Logs log group name (1-512 "
                         "characters: letters, digits and ._-/#)")
    if name.startswith("aws/"):
        raise ModelError(f"{name!r}: log group names starting with 'aws/' are reserved by AWS")
    return name


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


def default_role_name(trail_name: str, region: str | None = None) -> str:
    """``trailwatch-cwl-<trail>-<home region>`` (IAM is global: same-named trails in two regions
    must not share a default); over 64 characters, shortened with a stable hash suffix."""
    base = f"trailwatch-cwl-{trail_name}" + (f"-{region}" if region else "")
    base = re.sub(r"[^\w+=,.@-]", "-", base)
    if len(base) <= ROLE_NAME_MAX:
        return base
    digest = short_id(f"{trail_name}@{region or ''}")
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
    retention_days: int | None = None   # None: keep an adopted group's; new groups get 365
    kms_key: str | None = None          # a key ARN (resolved with DescribeKey before planning)
    stream_scope: str = "documented"
    org_id: str | None = None
    policy_name: str = POLICY_NAME
    role_path: str = "/"
    accepted_services: tuple[str, ...] = ()   # other services knowingly allowed in the trust
    take_over_delivery: bool = False

    @property
    def tags(self) -> dict[str, str]:
        return ownership_tags(self.trail.arn)

    @property
    def region(self) -> str:
        return self.trail.home_region

    @property
    def partition(self) -> str:
        return self.trail.partition

    @property
    def group_id(self) -> str:
        """Short stable id of the log group (CIS filter, alarm and topic names carry it)."""
        return short_id(self.log_group_arn_bare)

    @property
    def sid_suffix(self) -> str:
        return short_id(self.trail.arn).upper()

    @property
    def log_group_arn(self) -> str:
        """The form CloudTrail needs: ends in ``:*`` (trap 1)."""
        return f"{self.log_group_arn_bare}:*"

    @property
    def log_group_arn_bare(self) -> str:
        return f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{self.log_group}"

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role{self.role_path}{self.role_name}"

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


def delivery_sids(target: Target) -> tuple[str, str]:
    """The Sids that identify this trail's statements in a (possibly shared) delivery policy."""
    return (f"{SID_PREFIX}CreateLogStream{target.sid_suffix}",
            f"{SID_PREFIX}PutLogEvents{target.sid_suffix}")


def stream_statements(target: Target) -> list[dict[str, Any]]:
    resources = stream_resources(target)
    create, put = delivery_sids(target)
    return [{"Sid": create, "Effect": "Allow", "Action": ["logs:CreateLogStream"],
             "Resource": list(resources)},
            {"Sid": put, "Effect": "Allow", "Action": ["logs:PutLogEvents"],
             "Resource": list(resources)}]


def stream_policy(target: Target) -> dict[str, Any]:
    """trailwatch's own delivery statements as a whole document (a fresh policy)."""
    return {"Version": "2012-10-17", "Statement": stream_statements(target)}


def _statements(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, str):
        doc = json.loads(doc)
    st = (doc or {}).get("Statement", []) if isinstance(doc, dict) else []
    return [st] if isinstance(st, dict) else [s for s in st if isinstance(s, dict)]


def merge_delivery_policy(current: Any, target: Target) -> dict[str, Any]:
    """``current`` with this trail's statements (by Sid) replaced by the desired ones; every
    other statement (other trails, other Sids, the console's) is kept as it is."""
    ours = set(delivery_sids(target))
    doc = dict(current) if isinstance(current, dict) else {"Version": "2012-10-17"}
    doc.setdefault("Version", "2012-10-17")
    kept = [s for s in _statements(current) if s.get("Sid") not in ours]
    doc["Statement"] = kept + stream_statements(target)
    return doc


def grants(doc: Any) -> set[tuple[str, str]]:
    """(action, resource) pairs a policy allows unconditionally; Sid, order, string-vs-list and
    split-vs-combined statements do not matter (semantic comparison)."""
    out: set[tuple[str, str]] = set()
    for st in _statements(doc):
        if st.get("Effect") != "Allow" or any(k in st for k in ("Condition", "NotAction",
                                                               "NotResource", "NotPrincipal")):
            continue
        acts = st.get("Action", [])
        res = st.get("Resource", [])
        for a in [acts] if isinstance(acts, str) else acts:
            for r in [res] if isinstance(res, str) else res:
                out.add((str(a).lower(), str(r)))
    return out


def denied_delivery(docs: list[Any], target: Target) -> list[tuple[str, str]]:
    """(action, resource) pairs this trail needs that a Deny statement in ``docs`` hits."""
    from setup.policy_eval import evaluate
    return sorted((a, r) for a, r in grants(stream_policy(target))
                  if evaluate([d for d in docs if isinstance(d, dict)], a, r).reason
                  == "explicit-deny")


def covers_delivery(current: Any, target: Target) -> bool:
    """Does ``current`` already grant what this trail needs (semantically), with no Deny?"""
    if current is None:
        return False
    return grants(stream_policy(target)) <= grants(current) and \
        not denied_delivery([current], target)


@dataclass(frozen=True)
class TrustFindings:
    denies: list[dict[str, Any]]     # explicit Deny statements that hit CloudTrail
    foreign: list[str]               # principals that must never be trusted
    accepted: list[str]              # other services accepted knowingly (--accept-trusted-service)


def trust_findings(trust: Any, accepted_services: tuple[str, ...] = ()) -> TrustFindings:
    """What a trust policy admits besides cloudtrail.amazonaws.com, and Denies that hit it."""
    from setup.policy_eval import evaluate
    denies: list[dict[str, Any]] = []
    foreign: list[str] = []
    accepted: list[str] = []
    for st in _statements(trust):
        if st.get("Effect") == "Deny":
            d = evaluate([{"Statement": [st]}], "sts:AssumeRole", None, CLOUDTRAIL_SERVICE)
            if d.reason == "explicit-deny":
                denies.append(st)
            continue
        if st.get("Effect") != "Allow":
            continue
        if "NotPrincipal" in st:
            foreign.append(f"NotPrincipal {json.dumps(st['NotPrincipal'])} (everyone else)")
        principal = st.get("Principal")
        if principal == "*":
            foreign.append('"*" (anyone)')
            continue
        if not isinstance(principal, dict):
            continue
        for kind, values in principal.items():
            for v in [values] if isinstance(values, str) else values:
                if kind == "Service" and v == CLOUDTRAIL_SERVICE:
                    continue
                if kind == "Service" and v in accepted_services:
                    accepted.append(v)
                else:
                    foreign.append(f"{kind}: {v}")
    return TrustFindings(denies, foreign, accepted)


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
