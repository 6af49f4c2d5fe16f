"""VPC flow logs to S3 or CloudWatch Logs, planned as data (``trailwatch flow-logs``).

The policy documents are the seeds' (``../shared/reference/seeds/``):

- S3 (``vpc-flow-logs-to-s3.md``, ``log-delivery-permissions-and-confused-deputy.md`` "Logs sent
  to Amazon S3"): ``AWSLogDeliveryWrite`` (``s3:PutObject`` on
  ``arn:<p>:s3:::<bucket>/<prefix/>AWSLogs/<account>/*`` with ``s3:x-amz-acl =
  bucket-owner-full-control``) and ``AWSLogDeliveryAclCheck`` (``s3:GetBucketAcl`` on the bucket),
  both for ``delivery.logs.amazonaws.com`` and both with ``aws:SourceAccount`` and ``aws:SourceArn
  arn:<p>:logs:<region>:<account>:*`` (confused deputy). They are MERGED into the bucket's policy:
  AWS's own automatic attachment "overwrites any existing policy attached to the bucket"
  (vpc-flow-logs-to-s3.md), so trailwatch writes the merged policy *before* CreateFlowLogs, and the
  service then finds "a policy with sufficient log delivery permissions" and attaches nothing.
- SSE-KMS: "you must use a customer managed key, because using an AWS managed key is not
  supported"; the key-policy statement "Allow Logs Delivery to use the key" (with both conditions)
  is printed, or merged into the key policy with ``--kms-key-policy apply``.
- CloudWatch Logs (VPC User Guide, "IAM role for publishing flow logs to CloudWatch Logs"): a role
  trusted by ``vpc-flow-logs.amazonaws.com`` with ``aws:SourceAccount`` and ``aws:SourceArn
  arn:<p>:ec2:<region>:<account>:vpc-flow-log/*``, and a policy on that one log group.

Pure: :func:`build_plan` and :func:`removal_plan` (target + state -> steps). The target and the
documents are :mod:`setup.wiring.flowlogs_model`'s, merging and condition evaluation
:mod:`setup.wiring.logdelivery`'s (both re-exported here); reading the state and running the steps
are :mod:`setup.wiring.flowlogs_aws`'s. Steps are
:class:`~setup.wiring.planner.Step`, run by the trail wiring's executor.
"""


from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from setup.errors import SetupError, UsageError
from setup.policy_eval import as_list
from setup.wiring.flowlogs_model import (  # noqa: F401  (re-exported: one import for callers)
    ACL_SID,
    DEFAULT_FIELDS,
    DEFAULT_FORMAT,
    FIELD_VERSION,
    FIELDS_BY_VERSION,
    FLOW_LOGS_SERVICE,
    FLOW_TAG,
    KMS_SID,
    RESOURCE_TYPES,
    ROLE_POLICY_NAME,
    WRITE_SID,
    Destination,
    FlowState,
    FlowTarget,
    RoleState,
    bucket_admits_delivery,
    confused_deputy,
    delivery_context,
    kms_key_statement,
    log_format,
    parse_destination,
    parse_fields,
    record_version,
    role_policy,
    role_trust_policy,
    s3_delivery_statements,
    valid_id,
)
from setup.wiring.logdelivery import (  # noqa: F401  (re-exported: one import for callers)
    BUCKET_POLICY_LIMIT,
    DELIVERY_SERVICE,
    RESOURCE_POLICY_CHARS,
    admits,
    compact,
    condition_holds,
    has_statements,
    merge_statements,
    policy_bytes,
    shape,
    statements,
    unconditioned_grants,
    unmerge_statements,
)
from setup.wiring.models import (
    TAG_KEY,
    TAG_VALUE,
    canonical,
    is_control_tower,
    is_owned,
)
from setup.wiring.planner import Step

# ----------------------------------------------------------------------------------- the plan

@dataclass
class FlowPlan:
    target: FlowTarget
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    bucket_policy: dict[str, Any] | None = None     # the policy after apply (S3)
    kms_statement: dict[str, Any] | None = None     # to add to the key policy (SSE-KMS)
    role_trust: dict[str, Any] | None = None
    role_policy: dict[str, Any] | None = None
    state_digest: str | None = None

    @property
    def iam_actions(self) -> list[str]:
        acts = ["ec2:DescribeFlowLogs"]
        if self.target.destination.kind == "s3":
            acts += ["s3:GetBucketLocation", "s3:GetBucketPolicy", "s3:GetBucketTagging",
                     "s3:GetEncryptionConfiguration"]
        else:
            acts += ["logs:DescribeLogGroups", "logs:ListTagsForResource", "iam:GetRole",
                     "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListRoleTags"]
        for s in self.steps:
            acts += [a for a in s.iam_actions if a not in acts]
        return acts

    def to_json(self) -> dict[str, Any]:
        t = self.target
        doc: dict[str, Any] = {
            "account": t.account, "region": t.region,
            "resources": [{"type": k, "id": i} for k, i in t.resources],
            "destination": {"spec": t.destination.spec, "arn": t.destination_arn,
                            "type": "s3" if t.destination.kind == "s3" else "cloud-watch-logs"},
            "log_format": t.log_format, "record_version": record_version(t.log_format),
            "steps": [s.to_json() for s in self.steps],
            "iam_actions_required": self.iam_actions, "notes": self.notes,
            "state_digest": self.state_digest}
        if t.destination.kind == "s3":
            doc["destination"].update({"object_arn": t.object_arn, "key_prefix": t.key_prefix,
                                       "options": t.destination_options})
            doc["bucket_policy"] = self.bucket_policy
            doc["statements"] = s3_delivery_statements(t)
            if self.kms_statement:
                doc["kms_key_statement"] = self.kms_statement
        else:
            doc["role"] = {"name": t.role, "arn": t.role_arn, "trust_policy": self.role_trust,
                           "policy_name": ROLE_POLICY_NAME, "policy": self.role_policy}
        return doc


def _diff(old: Any, new: Any, name: str) -> str:
    import difflib
    a = json.dumps(old, indent=2).splitlines() if old is not None else []
    b = json.dumps(new, indent=2).splitlines() if new is not None else []
    return "\n".join(difflib.unified_diff(a, b, f"{name} (current)", f"{name} (planned)",
                                          lineterm=""))


def _same_destination(fl: dict[str, Any], target: FlowTarget) -> bool:
    have = (fl.get("LogDestination") or "").rstrip("/")
    if target.destination.kind == "s3":
        return fl.get("LogDestinationType") == "s3" and have == target.destination_arn.rstrip("/")
    return fl.get("LogDestinationType", "cloud-watch-logs") == "cloud-watch-logs" and (
        fl.get("LogGroupName") == target.destination.log_group or
        have.removesuffix(":*") == target.log_group_arn)


def flow_logs_for(state: FlowState, target: FlowTarget, resource_id: str | None = None
                  ) -> list[dict[str, Any]]:
    return [fl for fl in state.flow_logs if _same_destination(fl, target) and
            (resource_id is None or fl.get("ResourceId") == resource_id)]


def _differences(fl: dict[str, Any], target: FlowTarget) -> list[str]:
    out = []
    if (fl.get("LogFormat") or DEFAULT_FORMAT) != target.log_format:
        out.append(f"format {fl.get('LogFormat')!r} (asked {target.log_format!r})")
    if fl.get("TrafficType") and fl["TrafficType"] != target.traffic_type:
        out.append(f"traffic {fl['TrafficType']} (asked {target.traffic_type})")
    if target.destination.kind == "s3" and fl.get("DestinationOptions"):
        have = fl["DestinationOptions"]
        for k, v in target.destination_options.items():
            if k in have and have[k] != v:
                out.append(f"{k} {have[k]} (asked {v})")
    return out


def refuse_control_tower(target: FlowTarget, state: FlowState) -> None:
    d = target.destination
    checks = [("bucket", d.bucket, state.bucket_tags)] if d.kind == "s3" else [
        ("log group", d.log_group, (state.log_group or {}).get("tags")),
        ("role", target.role, state.role.tags if state.role else None)]
    for kind, name, tags in checks:
        if is_control_tower(name, tags):
            raise SetupError(
                f"the {kind} {name!r} is managed by AWS Control Tower; trailwatch will not modify "
                "Control Tower resources (drift would be reverted or break the landing zone)",
                "send flow logs to a bucket or log group you own", code="ControlTower")


def _kms(plan: FlowPlan, target: FlowTarget, state: FlowState) -> None:
    if not (state.sse or "").startswith("aws:kms"):
        return
    if state.kms_manager == "AWS":
        raise SetupError(
            f"bucket {target.destination.bucket} is encrypted with the AWS managed key "
            f"{state.kms_key}: log delivery cannot use it (\"If you choose SSE-KMS, you must use a "
            "customer managed key, because using an AWS managed key is not supported\", "
            "log-delivery-permissions-and-confused-deputy.md; flow logs are delivered from the "
            "log delivery account, which an AWS managed key cannot admit)",
            "set the bucket's default encryption to a customer managed key (or SSE-S3), then "
            "re-run", code="AwsManagedKey")
    stmt = kms_key_statement(target)
    plan.kms_statement = stmt
    ctx = delivery_context(target, with_acl=False)
    if state.kms_policy is not None and all(
            admits(state.kms_policy, DELIVERY_SERVICE, a, "*", ctx)
            for a in ("kms:GenerateDataKey", "kms:Decrypt")):
        return
    if target.kms_key_policy == "apply" and state.kms_policy is not None:
        merged = merge_statements(state.kms_policy, [stmt])
        plan.steps.append(Step("kms", "PutKeyPolicy",
                               {"KeyId": state.kms_key, "PolicyName": "default",
                                "Policy": compact(merged)},
                               f"add statement {KMS_SID!r} to the key policy of {state.kms_key} "
                               "(delivery.logs.amazonaws.com, both conditions; others kept)",
                               ("kms:PutKeyPolicy",), state.bucket_region or target.region,
                               diff=_diff(state.kms_policy, merged, "key policy"),
                               resource=state.kms_key))
        return
    plan.notes.append(
        f"WARN: the key policy of {state.kms_key} does not let {DELIVERY_SERVICE} use the key: "
        "delivery will fail until this statement is added to the KEY policy (not the bucket "
        "policy), or re-run with --kms-key-policy apply:\n" + json.dumps(stmt, indent=2))


def _plan_s3(plan: FlowPlan, target: FlowTarget, state: FlowState) -> None:
    _kms(plan, target, state)
    wanted = s3_delivery_statements(target)
    current = state.bucket_policy
    desired = merge_statements(current, wanted)
    plan.bucket_policy = desired
    for sid in unconditioned_grants(current):
        plan.notes.append(f"WARN: bucket policy statement {sid} lets {DELIVERY_SERVICE} in without "
                          "aws:SourceAccount/aws:SourceArn (confused deputy); trailwatch keeps "
                          "it (not its own) and adds conditioned statements")
    if current is not None and canonical(desired) == canonical(current):
        plan.notes.append(f"bucket policy of {target.destination.bucket} already admits delivery "
                          f"for {target.object_arn} (Sid-insensitive)")
        return
    size = policy_bytes(desired)
    if size > BUCKET_POLICY_LIMIT:
        raise SetupError(
            f"the merged bucket policy of {target.destination.bucket} would be {size} bytes; "
            f"bucket policies are limited to 20 KB ({BUCKET_POLICY_LIMIT} bytes, S3 User Guide), "
            "so PutBucketPolicy would fail",
            "use a bucket (or prefix) with a smaller policy, or consolidate its statements",
            code="PolicySizeLimit")
    kept = len(statements(current))
    plan.steps.append(Step(
        "s3", "PutBucketPolicy", {"Bucket": target.destination.bucket,
                                  "Policy": compact(desired)},
        f"merge {WRITE_SID}/{ACL_SID} for {DELIVERY_SERVICE} (AWSLogs/{target.account}/* under "
        f"{target.destination.prefix or 'the bucket root'}, aws:SourceAccount + aws:SourceArn) "
        f"into the policy of bucket {target.destination.bucket} ({kept} existing statement(s) "
        f"kept; {size} of {BUCKET_POLICY_LIMIT} bytes). Written BEFORE CreateFlowLogs so AWS's "
        "automatic attachment, which overwrites the whole policy, never runs",
        ("s3:GetBucketPolicy", "s3:PutBucketPolicy"), state.bucket_region or target.region,
        diff=None if current is None else _diff(current, desired, "bucket policy"),
        resource=target.bucket_arn))


def _log_group_key(target: FlowTarget, state: FlowState) -> None:
    """The log group's key must let logs.<region>.amazonaws.com use it for this group (the same
    rule as the trail's log group, setup.wiring.planner)."""
    if not target.log_group_kms_key:
        return
    from types import SimpleNamespace

    from setup.wiring.models import kms_key_statement as logs_key_statement
    from setup.wiring.planner import kms_policy_allows_logs
    lg = SimpleNamespace(region=target.region, log_group_arn_bare=target.log_group_arn)
    if not kms_policy_allows_logs(state.log_group_kms_policy, lg):   # type: ignore[arg-type]
        stmt = json.dumps(logs_key_statement(lg), indent=2)          # type: ignore[arg-type]
        raise SetupError(
            f"the key policy of {target.log_group_kms_key} does not let CloudWatch Logs "
            f"(logs.{target.region}.amazonaws.com) use it for {target.log_group_arn}",
            f"add this statement to the key policy, then re-run:\n{stmt}", code="KmsKeyPolicy")


def _plan_log_group(plan: FlowPlan, target: FlowTarget, state: FlowState) -> None:
    from setup.wiring.planner import DEFAULT_RETENTION
    _log_group_key(target, state)
    name, region = target.destination.log_group, target.region
    lg = state.log_group
    if lg is None:
        params: dict[str, Any] = {"logGroupName": name, "tags": target.tags,
                                  "logGroupClass": "STANDARD"}
        if target.log_group_kms_key:
            params["kmsKeyId"] = target.log_group_kms_key
        plan.steps.append(Step("logs", "CreateLogGroup", params,
                               f"create log group {name} (STANDARD) tagged {TAG_KEY}={TAG_VALUE}",
                               ("logs:CreateLogGroup", "logs:TagResource"), region,
                               resource=target.log_group_arn))
        days = target.retention_days or DEFAULT_RETENTION
        plan.steps.append(Step("logs", "PutRetentionPolicy",
                               {"logGroupName": name, "retentionInDays": days},
                               f"set retention of {name} to {days} days",
                               ("logs:PutRetentionPolicy",), region, resource=target.log_group_arn))
        return
    plan.notes.append(f"log group {name} exists; "
                      f"{'managed by trailwatch' if is_owned(lg['tags']) else 'adopting it'}")
    if target.log_group_kms_key and lg.get("kms") != target.log_group_kms_key:
        plan.steps.append(Step("logs", "AssociateKmsKey",
                               {"logGroupName": name, "kmsKeyId": target.log_group_kms_key},
                               f"encrypt log group {name} with {target.log_group_kms_key} (only "
                               "new data is encrypted)", ("logs:AssociateKmsKey",), region,
                               resource=target.log_group_arn))
    want, have = target.retention_days, lg.get("retention")
    if want is not None and want != have:
        shorter = have is None or want < have
        plan.steps.append(Step("logs", "PutRetentionPolicy",
                               {"logGroupName": name, "retentionInDays": want},
                               f"{'shorten' if shorter else 'lengthen'} retention of {name}: was "
                               f"{f'{have} days' if have else 'never expire'} -> {want} days",
                               ("logs:PutRetentionPolicy",), region, destructive=shorter,
                               resource=target.log_group_arn))


def foreign_trust(trust: Any) -> list[str]:
    """Principals other than the flow logs service that an existing role's trust admits."""
    out = []
    for st in statements(trust):
        if st.get("Effect") != "Allow":
            continue
        if "NotPrincipal" in st or st.get("Principal") == "*":
            out.append("everyone (* or NotPrincipal)")
            continue
        principal = st.get("Principal")
        for kind, values in (principal.items() if isinstance(principal, dict) else []):
            out += [f"{kind}: {v}" for v in as_list(values)
                    if not (kind == "Service" and v == FLOW_LOGS_SERVICE)]
    return out


def _plan_role(plan: FlowPlan, target: FlowTarget, state: FlowState) -> None:
    region, trust, policy = target.region, role_trust_policy(target), role_policy(target)
    plan.role_trust, plan.role_policy = trust, policy
    role = state.role
    others = foreign_trust(role.trust) if role else []
    if others:
        raise SetupError(
            f"role {role.name} is also trusted by {'; '.join(others)}; trailwatch will not give it "
            f"write access to {target.destination.log_group} (they could write flow logs into it)",
            "omit --role-name to let trailwatch create a role only vpc-flow-logs.amazonaws.com "
            "can assume", code="TrustTooBroad")
    tags = [{"Key": k, "Value": v} for k, v in target.tags.items()]
    if role is None:
        plan.steps.append(Step("iam", "CreateRole",
                               {"RoleName": target.role,
                                "AssumeRolePolicyDocument": json.dumps(trust),
                                "Description": f"VPC flow logs to {target.destination.log_group} "
                                               "(trailwatch)", "Tags": tags},
                               f"create role {target.role} trusted by {FLOW_LOGS_SERVICE} only, "
                               "with aws:SourceAccount and aws:SourceArn (confused deputy)",
                               ("iam:CreateRole", "iam:TagRole"), region, resource=target.role_arn))
    else:
        if not has_statements(role.trust, trust["Statement"]):
            merged = merge_statements(role.trust, trust["Statement"])
            plan.steps.append(Step("iam", "UpdateAssumeRolePolicy",
                                   {"RoleName": role.name, "PolicyDocument": json.dumps(merged)},
                                   f"let {FLOW_LOGS_SERVICE} assume role {role.name} (one "
                                   "statement added, others kept)",
                                   ("iam:UpdateAssumeRolePolicy",), region,
                                   diff=_diff(role.trust, merged, "trust policy"),
                                   resource=role.arn))
        if not is_owned(role.tags):
            plan.notes.append(f"role {role.name} exists and is not tagged by trailwatch: adopting it")
    current = role.inline.get(ROLE_POLICY_NAME) if role else None
    if current is None or not has_statements(current, policy["Statement"]):
        desired = merge_statements(current, policy["Statement"]) if current else policy
        plan.role_policy = desired
        plan.steps.append(Step("iam", "PutRolePolicy",
                               {"RoleName": target.role, "PolicyName": ROLE_POLICY_NAME,
                                "PolicyDocument": json.dumps(desired)},
                               f"inline policy {ROLE_POLICY_NAME}: logs:CreateLogStream, "
                               f"PutLogEvents, DescribeLogStreams, DescribeLogGroups on "
                               f"{target.destination.log_group} only",
                               ("iam:PutRolePolicy",), region,
                               diff=None if current is None else _diff(current, desired,
                                                                       ROLE_POLICY_NAME),
                               resource=role.arn if role else target.role_arn))


def _create_step(target: FlowTarget, rtype: str, rid: str, role_arn: str | None) -> Step:
    params: dict[str, Any] = {
        "ResourceType": rtype, "ResourceIds": [rid], "TrafficType": target.traffic_type,
        "MaxAggregationInterval": target.max_aggregation,
        "TagSpecifications": [{"ResourceType": "vpc-flow-log",
                               "Tags": [{"Key": k, "Value": v} for k, v in target.tags.items()]}]}
    if target.fields != DEFAULT_FIELDS:
        params["LogFormat"] = target.log_format
    acts: tuple[str, ...] = ("ec2:CreateFlowLogs", "ec2:CreateTags")
    if target.destination.kind == "s3":
        # vpc-flow-logs-to-s3.md, "IAM policy for IAM principals that publish flow logs to S3"
        acts += ("logs:CreateLogDelivery",)
        params.update(LogDestinationType="s3", LogDestination=target.destination_arn,
                      DestinationOptions=target.destination_options)
        where = (f"{target.destination.spec} ({target.file_format}"
                 f"{', hive-compatible prefixes' if target.hive else ''}"
                 f"{', per-hour partitions' if target.per_hour else ''})")
    else:
        params.update(LogDestinationType="cloud-watch-logs", LogDestination=target.log_group_arn,
                      DeliverLogsPermissionArn=role_arn)
        acts += ("iam:PassRole",)
        where = f"log group {target.destination.log_group} via role {target.role}"
    kind = {"VPC": "vpc", "Subnet": "subnet", "NetworkInterface": "network-interface"}[rtype]
    return Step("ec2", "CreateFlowLogs", params,
                f"create flow log for {rtype} {rid} ({target.traffic_type}, record version "
                f"{record_version(target.log_format)}) to {where}, tagged {TAG_KEY}={TAG_VALUE}",
                acts, target.region,
                resource=f"arn:{target.partition}:ec2:{target.region}:{target.account}:{kind}/{rid}")


def build_plan(target: FlowTarget, state: FlowState) -> FlowPlan:
    """Pure: the ordered steps that make ``target`` true, given ``state``; none when it is."""
    if not target.resources:
        raise UsageError("no VPC, subnet or network interface to log",
                         "pass --vpc ID, --subnet ID, --eni ID (repeatable) or --all-vpcs")
    plan = FlowPlan(target, [])
    refuse_control_tower(target, state)
    role_arn = None
    if target.destination.kind == "s3":
        _plan_s3(plan, target, state)
    else:
        lg = state.log_group
        if lg and lg.get("class") not in ("STANDARD", None):
            raise SetupError(f"log group {target.destination.log_group} has class {lg['class']}",
                             "use a STANDARD log group", code="LogGroupClass")
        _plan_log_group(plan, target, state)
        _plan_role(plan, target, state)
        role_arn = state.role.arn if state.role else target.role_arn
    for rtype, rid in target.resources:
        existing = flow_logs_for(state, target, rid)
        if not existing:
            plan.steps.append(_create_step(target, rtype, rid, role_arn))
            continue
        fl = existing[0]
        diffs = _differences(fl, target)
        if diffs:
            plan.notes.append(f"WARN: flow log {fl['FlowLogId']} of {rid} to "
                              f"{target.destination.spec} differs: {'; '.join(diffs)}. Flow logs "
                              "cannot be changed: `trailwatch flow-logs remove` it, then apply")
        else:
            plan.notes.append(f"{rid} already delivers to {target.destination.spec} "
                              f"({fl['FlowLogId']})")
    return plan


def removal_plan(target: FlowTarget, state: FlowState) -> FlowPlan:
    """Delete trailwatch's flow logs of the given resources to this destination; take the
    delivery statements out of the bucket policy only when no flow log of this account and Region
    still delivers there."""
    plan = FlowPlan(target, [])
    refuse_control_tower(target, state)
    ids = {rid for _, rid in target.resources}
    doomed = []
    for fl in flow_logs_for(state, target):
        if fl.get("ResourceId") not in ids:
            continue
        tags = {t["Key"]: t["Value"] for t in fl.get("Tags", [])}
        if not is_owned(tags):
            plan.notes.append(f"flow log {fl['FlowLogId']} of {fl['ResourceId']} was not created "
                              f"by trailwatch (no {TAG_KEY}={TAG_VALUE} tag): kept")
            continue
        doomed.append(fl)
        plan.steps.append(Step("ec2", "DeleteFlowLogs", {"FlowLogIds": [fl["FlowLogId"]]},
                               f"delete flow log {fl['FlowLogId']} of {fl['ResourceId']} "
                               f"(delivery to {target.destination.spec} stops; files already "
                               "delivered are kept)",
                               ("ec2:DeleteFlowLogs",) + (("logs:DeleteLogDelivery",)
                                                          if target.destination.kind == "s3"
                                                          else ()), target.region,
                               destructive=True))
    for rid in ids - {fl.get("ResourceId") for fl in flow_logs_for(state, target)}:
        plan.notes.append(f"{rid} has no flow log to {target.destination.spec}")
    if target.destination.kind != "s3":
        plan.notes.append(f"log group {target.destination.log_group} and role {target.role} are "
                          "kept (they hold or deliver data; delete them by hand when unused)")
        return plan
    if state.bucket_missing:
        plan.notes.append(f"bucket {target.destination.bucket} no longer exists: only the flow "
                          "logs are removed")
        return plan
    left = [fl for fl in flow_logs_for(state, target) if fl not in doomed]
    if left:
        plan.notes.append(f"bucket policy kept: {len(left)} other flow log(s) of this account and "
                          f"Region still deliver to {target.destination.spec} "
                          f"({', '.join(sorted(fl['ResourceId'] for fl in left))})")
        return plan
    current = state.bucket_policy
    wanted = s3_delivery_statements(target)
    if current is None or not any(shape(s) == shape(w) for s in statements(current)
                                  for w in wanted):
        return plan
    rest = unmerge_statements(current, wanted)
    # AclCheck is shared by every prefix of this account and Region: keep it while a Write
    # statement of the same shape still grants another prefix.
    if rest is not None and any(shape(s) == shape(wanted[0]) for s in statements(rest)):
        rest = merge_statements(rest, [wanted[1]])
    if rest is None:
        plan.steps.append(Step("s3", "DeleteBucketPolicy", {"Bucket": target.destination.bucket},
                               f"delete the policy of bucket {target.destination.bucket} (it held "
                               "only trailwatch's delivery statements)", ("s3:DeleteBucketPolicy",),
                               state.bucket_region or target.region, destructive=True,
                               resource=target.bucket_arn))
    elif canonical(rest) != canonical(current):
        plan.steps.append(Step("s3", "PutBucketPolicy", {"Bucket": target.destination.bucket,
                                                         "Policy": compact(rest)},
                               f"take delivery for {target.object_arn} out of the policy of bucket "
                               f"{target.destination.bucket} (other statements kept)",
                               ("s3:PutBucketPolicy",), state.bucket_region or target.region,
                               diff=_diff(current, rest, "bucket policy"), destructive=True,
                               resource=target.bucket_arn))
    return plan
