"""Read what exists: the trail, the caller, the organization, the log group and the role."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from setup.aws import AwsClients
from setup.errors import SetupError, UsageError, error_code, error_message
from setup.wiring.models import Target, Trail, parse_trail_arn


def find_trail(clients: AwsClients, name_or_arn: str) -> Trail:
    """Find the trail by name or ARN and learn its home region (UpdateTrail must run there)."""
    parsed = parse_trail_arn(name_or_arn)
    region = parsed.region if parsed else clients.default_region
    if not region:
        raise UsageError("no AWS region: the trail is given by name, so trailwatch needs a region "
                         "to look it up", "pass --region, set AWS_REGION or AWS_DEFAULT_REGION, "
                         "or give the trail's ARN", code="NoRegion")
    ct = clients.client("cloudtrail", region)
    try:
        trails = ct.describe_trails(trailNameList=[name_or_arn],
                                    includeShadowTrails=True).get("trailList", [])
    except ClientError as e:
        if error_code(e) in ("TrailNotFoundException", "InvalidTrailNameException"):
            trails = []
        else:
            raise
    wanted = [t for t in trails if name_or_arn in (t.get("Name"), t.get("TrailARN"))]
    visible: list[dict[str, Any]] | None = None
    if not wanted and not parsed:
        # A name matches only the caller's own trails whose home is this Region (DescribeTrails
        # trailNameList). An organization trail seen from a member account, or a multi-Region
        # trail from another Region, is found among every trail the caller sees here, shadow
        # trails included (the empty list with includeShadowTrails=true).
        visible = _visible_trails(ct)
        wanted = [t for t in visible if t.get("Name") == name_or_arn]
        arns = sorted({t["TrailARN"] for t in wanted})
        if len(arns) > 1:
            raise SetupError(f"{len(arns)} trails named {name_or_arn!r} are visible from "
                             f"{region}: {', '.join(arns)}",
                             "pass the ARN of the one you mean (--trail ARN, or the template's "
                             "TrailName)", code="AmbiguousTrailName")
    if not wanted:
        raise trail_not_found(name_or_arn, region,
                              _visible_trails(ct) if visible is None else visible, bool(parsed))
    t = wanted[0]
    arn = t["TrailARN"]
    home = t.get("HomeRegion") or arn.split(":")[3]
    return Trail(name=t["Name"], arn=arn, home_region=home, owner_account=arn.split(":")[4],
                 is_org=bool(t.get("IsOrganizationTrail")),
                 is_multi_region=bool(t.get("IsMultiRegionTrail")),
                 log_group_arn=t.get("CloudWatchLogsLogGroupArn") or None,
                 role_arn=t.get("CloudWatchLogsRoleArn") or None)


def _visible_trails(ct: Any) -> list[dict[str, Any]]:
    try:
        return ct.describe_trails(includeShadowTrails=True).get("trailList", [])
    except ClientError as e:
        if error_code(e) in ("TrailNotFoundException", "InvalidTrailNameException"):
            return []
        raise


def trail_not_found(name_or_arn: str, region: str, trails: list[dict[str, Any]],
                    is_arn: bool) -> SetupError:
    """The error for a trail that is not there: the ``trails`` visible in that Region and, when
    one is close, the same command line with its name (``retry_with``)."""
    visible = sorted({t["Name"] for t in trails if t.get("Name")})
    wanted = name_or_arn.rsplit("/", 1)[-1]
    close = difflib.get_close_matches(wanted, visible, n=1, cutoff=0.6)
    seen = (f"; trails visible there: {', '.join(visible[:10])}"
            f"{' ...' if len(visible) > 10 else ''}" if visible else "; no trail is visible there")
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    hint = ("check the ARN and that your credentials can see the trail" if is_arn else
            "pass the trail's name or ARN, or --region with the trail's home region")
    err = SetupError(f"TrailNotFoundException: no trail {name_or_arn!r} is visible from "
                     f"{region}{seen}{guess}", hint)
    if close and not is_arn:
        err.retry_with = {"--trail": close[0]}
    return err


def caller(clients: AwsClients, region: str) -> dict[str, str]:
    ident = clients.client("sts", region).get_caller_identity()
    return {"account": ident["Account"], "arn": ident["Arn"]}


def organization_id(clients: AwsClients, region: str) -> str:
    try:
        org = clients.client("organizations", region).describe_organization()["Organization"]
    except ClientError as e:
        if error_code(e) == "AWSOrganizationsNotInUseException":
            raise SetupError(
                "AWSOrganizationsNotInUseException: this is an organization trail but the "
                "account is not in an organization",
                "run trailwatch from the management account or a CloudTrail delegated "
                "administrator, or pass --org-id o-xxxxxxxxxx --trust-org-id") from None
        if error_code(e) in ("AccessDeniedException", "AccessDenied"):
            raise SetupError(
                f"{error_code(e)}: cannot read the organization id (organizations:"
                "DescribeOrganization)", "grant organizations:DescribeOrganization or pass "
                "--org-id o-xxxxxxxxxx --trust-org-id") from None
        raise
    return org["Id"]


def member_accounts(clients: AwsClients, region: str, limit: int = 5) -> list[str]:
    try:
        pages = clients.client("organizations", region).get_paginator("list_accounts").paginate()
        ids = [a["Id"] for page in pages for a in page.get("Accounts", [])]
    except ClientError:
        return []
    return ids[:limit]


def _doc(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(unquote(value))
    return value


@dataclass
class RoleState:
    name: str
    arn: str
    trust: dict[str, Any]
    tags: dict[str, str]
    inline: dict[str, Any] = field(default_factory=dict)   # policy name -> document
    attached: list[str] = field(default_factory=list)
    path: str = "/"


@dataclass
class LogGroupState:
    name: str
    arn: str                      # with :*
    log_group_class: str
    retention: int | None
    kms_key: str | None
    tags: dict[str, str]
    stored_bytes: int = 0


@dataclass
class CurrentState:
    log_group: LogGroupState | None
    role: RoleState | None
    kms_policy: dict[str, Any] | None = None


def read_log_group(clients: AwsClients, target: Target) -> LogGroupState | None:
    logs = clients.client("logs", target.region)
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=target.log_group)
    for page in pages:
        for g in page.get("logGroups", []):
            if g["logGroupName"] == target.log_group:
                try:
                    tags = logs.list_tags_for_resource(
                        resourceArn=target.log_group_arn_bare).get("tags", {})
                except ClientError:
                    tags = {}
                return LogGroupState(name=g["logGroupName"], arn=g.get("arn", ""),
                                     log_group_class=g.get("logGroupClass", "STANDARD"),
                                     retention=g.get("retentionInDays"),
                                     kms_key=g.get("kmsKeyId"), tags=tags,
                                     stored_bytes=int(g.get("storedBytes") or 0))
    return None


def read_role(clients: AwsClients, role_name: str, region: str) -> RoleState | None:
    iam = clients.client("iam", region)
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as e:
        if error_code(e) == "NoSuchEntity":
            return None
        raise
    tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
    state = RoleState(name=role_name, arn=role["Arn"], trust=_doc(role["AssumeRolePolicyDocument"]),
                      tags=tags, path=role.get("Path") or "/")
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
        for pname in page.get("PolicyNames", []):
            doc = iam.get_role_policy(RoleName=role_name, PolicyName=pname)["PolicyDocument"]
            state.inline[pname] = _doc(doc)
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name):
        state.attached += [p["PolicyArn"] for p in page.get("AttachedPolicies", [])]
    return state


def resolve_kms_key(clients: AwsClients, value: str, region: str) -> str:
    """Key id, key ARN, alias name or alias ARN -> the key ARN, checked with DescribeKey: the key
    must be enabled, SYMMETRIC_DEFAULT (CloudWatch Logs takes only symmetric keys) and live in the
    trail's home region (the logs.<region> principal is regional)."""
    parts = value.split(":")
    if value.startswith("arn:") and len(parts) >= 6 and parts[3] != region:
        raise SetupError(f"KMS key {value} is in {parts[3]}, not in the trail's home region "
                         f"{region}", f"use a key in {region}", code="KmsKeyWrongRegion")
    key_id = value if value.startswith(("arn:", "alias/")) or len(parts) > 1 or \
        "/" in value or _looks_like_key_id(value) else f"alias/{value}"
    try:
        meta = clients.client("kms", region).describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as e:
        raise SetupError(f"{error_code(e)}: cannot resolve KMS key {value!r} in {region}: "
                         f"{error_message(e)}", "pass a key id, key ARN, alias/NAME or alias "
                         f"ARN of a key in {region} (needs kms:DescribeKey)",
                         code="KmsKeyNotFound") from None
    arn = meta["Arn"]
    problems = []
    if arn.split(":")[3] != region:
        problems.append(f"it is in {arn.split(':')[3]}, not the home region {region}")
    if meta.get("KeyState", "Enabled") != "Enabled" or meta.get("Enabled") is False:
        problems.append(f"its state is {meta.get('KeyState')}")
    spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    if spec != "SYMMETRIC_DEFAULT":
        problems.append(f"its spec is {spec} (CloudWatch Logs needs SYMMETRIC_DEFAULT)")
    if problems:
        raise SetupError(f"KMS key {value} ({arn}) cannot encrypt the log group: "
                         + "; ".join(problems), "use an enabled symmetric key in "
                         f"{region}", code="KmsKeyUnusable")
    return arn


def _looks_like_key_id(value: str) -> bool:
    import re
    return bool(re.fullmatch(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|"
                             r"mrk-[0-9a-f]{32})", value))


NOT_ENABLED = ("UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure",
               "OptInRequired")


def trails_everywhere(clients: AwsClients, partition: str) -> tuple[list[dict[str, Any]],
                                                                     list[str]]:
    """Every trail of the account, from DescribeTrails in every region of the partition
    (botocore's endpoint data). Returns (trails, regions that could not be read)."""
    regions = clients.session.get_available_regions("cloudtrail", partition_name=partition)
    seen: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for region in regions:
        try:
            for t in clients.client("cloudtrail", region).describe_trails(
                    includeShadowTrails=False).get("trailList", []):
                seen.setdefault(t["TrailARN"], t)
        except ClientError as e:
            if error_code(e) in NOT_ENABLED:   # an opt-in region not enabled: no trails there
                continue
            unreadable.append(f"{region} ({error_code(e)})")
    return list(seen.values()), unreadable


def read_kms_policy(clients: AwsClients, target: Target) -> dict[str, Any] | None:
    if not target.kms_key:
        return None
    kms = clients.client("kms", target.region)
    try:
        return _doc(kms.get_key_policy(KeyId=target.kms_key, PolicyName="default")["Policy"])
    except ClientError as e:
        raise SetupError(f"{error_code(e)}: cannot read the key policy of {target.kms_key}: "
                         f"{error_message(e)}",
                         "the key must exist in the trail's home region "
                         f"({target.region}) and you need kms:GetKeyPolicy") from None


def read_state(clients: AwsClients, target: Target) -> CurrentState:
    return CurrentState(log_group=read_log_group(clients, target),
                        role=read_role(clients, target.role_name, target.region),
                        kms_policy=read_kms_policy(clients, target))
