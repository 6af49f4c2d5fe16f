"""Compare the desired wiring with what exists and emit an ordered plan of API calls.

Pure: it takes a :class:`Target` and a :class:`CurrentState` and returns a :class:`Plan`; nothing
here talks to AWS, so every branch is testable without it. Each step names the API call, its exact
parameters, a human message and the IAM actions it needs (for ``--check-permissions``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from setup.errors import SetupError
from setup.policy_eval import as_list, evaluate, matches_any
from setup.wiring.models import (
    POLICY_NAME,
    TAG_KEY,
    TAG_VALUE,
    Target,
    TrustFindings,
    delivery_sids,
    denied_delivery,
    grants,
    is_control_tower,
    is_owned,
    kms_key_statement,
    merge_delivery_policy,
    policy_text,
    stream_policy,
    trail_tag,
    trust_findings,
    trust_policy,
)
from setup.wiring.state import CurrentState

DEFAULT_RETENTION = 365
# Read-only calls every plan/apply makes (reported by the preflight list).
READ_ACTIONS = ("sts:GetCallerIdentity", "cloudtrail:DescribeTrails", "logs:DescribeLogGroups",
                "logs:ListTagsForResource", "iam:GetRole", "iam:ListRolePolicies",
                "iam:GetRolePolicy", "iam:ListAttachedRolePolicies")


@dataclass
class Step:
    service: str
    operation: str
    params: dict[str, Any]
    message: str
    iam_actions: tuple[str, ...]
    region: str
    diff: str | None = None
    resource: str = "*"          # the ARN the call acts on (for --check-permissions)
    destructive: bool = False    # deletes or shortens something: shown as such

    @property
    def api(self) -> str:
        return f"{self.service}:{self.operation}"

    def to_json(self) -> dict[str, Any]:
        doc = {"api": self.api, "region": self.region, "params": self.params,
               "message": self.message, "iam_actions": list(self.iam_actions),
               "resource": self.resource, "destructive": self.destructive}
        if self.diff:
            doc["diff"] = self.diff
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Step:
        service, operation = doc["api"].split(":", 1)
        return cls(service, operation, doc["params"], doc["message"], tuple(doc["iam_actions"]),
                   doc["region"], doc.get("diff"), doc.get("resource", "*"),
                   bool(doc.get("destructive")))


@dataclass
class Plan:
    target: Target
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    trust_policy: dict[str, Any] = field(default_factory=dict)
    stream_policy: dict[str, Any] = field(default_factory=dict)
    policy_name: str = POLICY_NAME
    state_digest: str | None = None   # digest of the state the plan was computed from
    cis_topic: str | None = None

    @property
    def iam_actions(self) -> list[str]:
        acts = list(READ_ACTIONS)
        if self.target.trail.is_org:
            acts.append("organizations:DescribeOrganization")
        if self.target.kms_key:
            acts.append("kms:GetKeyPolicy")
        for s in self.steps:
            acts += [a for a in s.iam_actions if a not in acts]
        return acts

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "trail": {"name": t.trail.name, "arn": t.trail.arn, "home_region": t.region,
                      "owner_account": t.trail.owner_account,
                      "is_organization_trail": t.trail.is_org, "org_id": t.org_id,
                      "is_multi_region": t.trail.is_multi_region},
            "account": t.account,
            "log_group": {"name": t.log_group, "arn": t.log_group_arn,
                          "retention_days": t.retention_days, "kms_key": t.kms_key},
            "role": {"name": t.role_name, "arn": t.role_arn, "policy_name": self.policy_name},
            "stream_scope": t.stream_scope,
            "trust_policy": self.trust_policy,
            "stream_policy": self.stream_policy,
            "steps": [s.to_json() for s in self.steps],
            "iam_actions_required": self.iam_actions,
            "notes": self.notes,
        }


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _diff(old: Any, new: Any, name: str) -> str:
    a = policy_text(old).splitlines()
    b = policy_text(new).splitlines()
    return "\n".join(difflib.unified_diff(a, b, f"{name} (current)", f"{name} (planned)",
                                          lineterm=""))


def kms_policy_allows_logs(policy: dict[str, Any] | None, target: Target) -> bool:
    """Does the key policy let ``logs.<region>.amazonaws.com`` use the key for this log group?"""
    if not policy:
        return False
    service = f"logs.{target.region}.amazonaws.com"
    for stmt in _as_list_of_dicts(policy.get("Statement")):
        if stmt.get("Effect") != "Allow":
            continue
        principal = stmt.get("Principal")
        services = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if service not in services:
            continue
        if not all(evaluate([{"Statement": [dict(stmt, Condition=None)]}], action).allowed
                   for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")):
            continue
        cond = stmt.get("Condition") or {}
        if not cond:
            return True
        for op, block in cond.items():
            values = as_list((block or {}).get("kms:EncryptionContext:aws:logs:arn"))
            if op in ("ArnEquals", "StringEquals") and target.log_group_arn_bare in values:
                return True
            if op in ("ArnLike", "StringLike") and matches_any(values, target.log_group_arn_bare):
                return True
    return False


def _as_list_of_dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [v for v in (value or []) if isinstance(v, dict)]


def _delivery_policy_name(target: Target, state: CurrentState) -> str:
    """Our policy, or an existing inline policy that already delivers to this log group."""
    role = state.role
    if role is None or target.policy_name in role.inline:
        return target.policy_name
    prefix = f"{target.log_group_arn_bare}:log-stream:"
    for name, doc in role.inline.items():
        for stmt in _as_list_of_dicts(doc.get("Statement")):
            actions = [a.lower() for a in as_list(stmt.get("Action"))]
            if stmt.get("Effect") == "Allow" and "logs:putlogevents" in actions and any(
                    r.startswith(prefix) for r in as_list(stmt.get("Resource"))):
                return name
    return target.policy_name


def _trust_refusal(target: Target, findings: TrustFindings) -> SetupError | None:
    name = target.role_name
    if findings.denies:
        stmts = "\n".join(json.dumps(st, indent=2) for st in findings.denies)
        return SetupError(
            f"the trust policy of role {name} explicitly denies cloudtrail.amazonaws.com "
            "sts:AssumeRole; an explicit Deny wins over any Allow, so trailwatch will not append "
            "another Allow (it would never converge)",
            f"remove this statement from the role's trust policy, then re-run:\n{stmts}",
            code="TrustExplicitDeny")
    if findings.foreign:
        return SetupError(
            f"role {name} trusts principals other than cloudtrail.amazonaws.com "
            f"({'; '.join(findings.foreign)}); trailwatch will not grant it write access to the "
            "audit log group",
            "use a role that only CloudTrail can assume (omit --role-name to let trailwatch "
            "create one); another AWS service can be accepted knowingly with "
            "--accept-trusted-service SERVICE, never '*' or other accounts",
            code="TrustTooBroad")
    return None


def build_plan(target: Target, state: CurrentState) -> Plan:
    region = target.region
    trust = trust_policy()
    plan = Plan(target=target, steps=[], trust_policy=trust, stream_policy=stream_policy(target))
    notes = plan.notes

    # --- refusals: things trailwatch must never modify
    refuse_control_tower(target, state)

    lg = state.log_group
    if lg and lg.log_group_class not in ("STANDARD", None):
        raise SetupError(
            f"log group {target.log_group!r} has class {lg.log_group_class}: subscription filters "
            "(and metric filters) are not supported there, and the class cannot be changed",
            "pass --log-group with a new name; trailwatch creates it as STANDARD",
            code="LogGroupClass")

    if target.kms_key and not kms_policy_allows_logs(state.kms_policy, target):
        stmt = json.dumps(kms_key_statement(target), indent=2)
        raise SetupError(
            f"the key policy of {target.kms_key} does not let CloudWatch Logs "
            f"(logs.{region}.amazonaws.com) use it for {target.log_group_arn_bare}",
            f"add this statement to the key policy, then re-run:\n{stmt}", code="KmsKeyPolicy")

    role = state.role
    if role is not None:
        refusal = _trust_refusal(target, trust_findings(role.trust, target.accepted_services))
        if refusal:
            raise refusal

    # --- log group
    tag_key, tag_value = trail_tag(target.trail.arn)
    if lg is None:
        params: dict[str, Any] = {"logGroupName": target.log_group, "tags": dict(target.tags),
                                  "logGroupClass": "STANDARD"}
        if target.kms_key:
            params["kmsKeyId"] = target.kms_key
        plan.steps.append(Step("logs", "CreateLogGroup", params,
                               f"create log group {target.log_group} (STANDARD"
                               f"{', KMS ' + target.kms_key if target.kms_key else ''}) in {region}, "
                               f"tagged {TAG_KEY}={TAG_VALUE} and {tag_key}={tag_value}",
                               ("logs:CreateLogGroup", "logs:TagResource"), region,
                               resource=target.log_group_arn_bare))
    else:
        owned = is_owned(lg.tags)
        notes.append(f"log group {target.log_group} exists; "
                     f"{'managed by trailwatch' if owned else 'adopting it (not tagged by trailwatch)'}")
        if owned and lg.tags.get(tag_key) != tag_value:
            plan.steps.append(Step("logs", "TagResource",
                                   {"resourceArn": target.log_group_arn_bare,
                                    "tags": {tag_key: tag_value}},
                                   f"tag log group {target.log_group} as also serving trail "
                                   f"{target.trail.name} ({tag_key})", ("logs:TagResource",),
                                   region, resource=target.log_group_arn_bare))
        if target.kms_key and lg.kms_key != target.kms_key:
            plan.steps.append(Step("logs", "AssociateKmsKey",
                                   {"logGroupName": target.log_group, "kmsKeyId": target.kms_key},
                                   f"encrypt log group {target.log_group} with {target.kms_key} "
                                   "(takes up to 5 minutes; only new data is encrypted)",
                                   ("logs:AssociateKmsKey",), region,
                                   resource=target.log_group_arn_bare))
        elif not target.kms_key and not lg.kms_key:
            notes.append("the log group is not KMS-encrypted (pass --kms-key to encrypt it)")
    _plan_retention(plan, target, lg)

    # --- role and trust policy
    if role is None:
        params = {"RoleName": target.role_name, "AssumeRolePolicyDocument": json.dumps(trust),
                  "Description": f"CloudTrail delivery of trail {target.trail.name} "
                                 f"to CloudWatch Logs {target.log_group} (trailwatch)",
                  "Tags": _tag_list(target.tags)}
        if target.role_path != "/":
            params["Path"] = target.role_path
        plan.steps.append(Step("iam", "CreateRole", params,
                               f"create role {target.role_path.lstrip('/')}{target.role_name} "
                               "trusted by cloudtrail.amazonaws.com only",
                               ("iam:CreateRole", "iam:TagRole"), region, resource=target.role_arn))
    else:
        findings = trust_findings(role.trust, target.accepted_services)
        for svc in findings.accepted:
            notes.append(f"WARN: role {role.name} also trusts {svc} (accepted with "
                         "--accept-trusted-service)")
        decision = evaluate([role.trust], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
        if decision.allowed:
            pass
        elif decision.conditional:
            notes.append(f"role {target.role_name} trusts CloudTrail only under a Condition; field "
                         "reports say CloudTrail does not send aws:SourceArn/SourceAccount for this "
                         "role and delivery breaks. trailwatch leaves it; `verify` will tell.")
        else:
            merged = dict(role.trust)
            merged["Statement"] = _as_list_of_dicts(role.trust.get("Statement")) + trust["Statement"]
            plan.steps.append(Step("iam", "UpdateAssumeRolePolicy",
                                   {"RoleName": role.name,
                                    "PolicyDocument": json.dumps(merged)},
                                   f"let cloudtrail.amazonaws.com assume existing role "
                                   f"{role.name} (adds one trust statement)",
                                   ("iam:UpdateAssumeRolePolicy",), region,
                                   diff=_diff(role.trust, merged, "trust policy"), resource=role.arn))
        if not is_owned(role.tags):
            notes.append(f"role {role.name} exists and is not tagged by trailwatch; "
                         "adopting it (remove --delete-role will not delete it)")
        elif role.tags.get(tag_key) != tag_value:
            plan.steps.append(Step("iam", "TagRole", {"RoleName": role.name,
                                                      "Tags": [{"Key": tag_key, "Value": tag_value}]},
                                   f"tag role {role.name} as also serving trail "
                                   f"{target.trail.name} ({tag_key})", ("iam:TagRole",), region,
                                   resource=role.arn))

    # --- stream policy: trailwatch's own statements (by Sid), merged, compared semantically
    pname = _delivery_policy_name(target, state)
    plan.policy_name = pname
    current = role.inline.get(pname) if role else None
    if role is not None:
        others = [n for n in role.inline if n != pname] + list(role.attached)
        if others and not is_owned(role.tags):
            notes.append(f"WARN: adopted role {role.name} has other policies: "
                         f"{', '.join(others)}; CloudTrail will hold all of their permissions")
    inline_docs = list(role.inline.values()) if role else []
    covered = bool(inline_docs) and \
        grants(stream_policy(target)) <= set().union(*(grants(d) for d in inline_docs))
    denied = denied_delivery(inline_docs, target)
    if denied:   # another statement's Deny: adding Allows cannot fix it, so it is reported
        notes.append(f"WARN: an inline policy of role {target.role_name} explicitly denies "
                     f"{denied[0][0]} on {denied[0][1]}; trailwatch does not edit other "
                     "statements: remove that Deny (verify will FAIL until then)")
    if not covered:
        desired = merge_delivery_policy(current, target)
        _check_inline_size(role, pname, desired, target)
        plan.stream_policy = desired
        why = "add" if current is None else "merge this trail's statements into"
        scope = ("every stream of the log group" if target.stream_scope == "group" else
                 "the documented stream prefixes" + (" incl. the organization's o-id"
                                                     if target.trail.is_org else ""))
        plan.steps.append(Step("iam", "PutRolePolicy",
                               {"RoleName": target.role_name, "PolicyName": pname,
                                "PolicyDocument": json.dumps(desired)},
                               f"{why} inline policy {pname}: logs:CreateLogStream and "
                               f"logs:PutLogEvents on {scope} (Sids {', '.join(delivery_sids(target))}"
                               "; other statements kept)",
                               ("iam:PutRolePolicy",), region,
                               diff=None if current is None else _diff(current, desired, pname),
                               resource=role.arn if role else target.role_arn))
    elif current is not None:
        plan.stream_policy = current

    # --- the trail itself, in its home region
    trail = target.trail
    role_arn = role.arn if role is not None else target.role_arn   # keeps the role's path
    if trail.log_group_arn != target.log_group_arn or trail.role_arn != role_arn:
        owner_change = bool(trail.log_group_arn) and \
            trail.log_group_arn.split(":")[4:5] != [target.account]
        msg = (f"point trail {trail.name} at {target.log_group_arn} with role {role_arn} "
               f"(in home region {region})")
        if owner_change:
            msg += (f"; CHANGE OF OWNER: delivery moves from account "
                    f"{trail.log_group_arn.split(':')[4]} to {target.account} "
                    "(--take-over-delivery)")
        plan.steps.append(Step("cloudtrail", "UpdateTrail",
                               {"Name": trail.arn, "CloudWatchLogsLogGroupArn": target.log_group_arn,
                                "CloudWatchLogsRoleArn": role_arn},
                               msg, ("cloudtrail:UpdateTrail", "iam:PassRole"), region,
                               diff=_diff({"CloudWatchLogsLogGroupArn": trail.log_group_arn,
                                           "CloudWatchLogsRoleArn": trail.role_arn},
                                          {"CloudWatchLogsLogGroupArn": target.log_group_arn,
                                           "CloudWatchLogsRoleArn": role_arn}, "trail"),
                               resource=trail.arn, destructive=owner_change))
    return plan


# IAM: the inline policies of a role may total at most 10,240 characters, whitespace not counted.
INLINE_POLICY_LIMIT = 10_240


def _policy_chars(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":")))


def _check_inline_size(role: Any, pname: str, desired: dict[str, Any], target: Target) -> None:
    total = _policy_chars(desired) + sum(_policy_chars(d) for n, d in
                                         (role.inline.items() if role else []) if n != pname)
    if total > INLINE_POLICY_LIMIT:
        raise SetupError(
            f"the merged delivery policy would bring the inline policies of role "
            f"{target.role_name} to {total} characters; IAM allows {INLINE_POLICY_LIMIT} per role "
            "(LimitExceeded), so the write would fail",
            "give this trail a role of its own (omit --role-name), or use --stream-scope group",
            code="PolicySizeLimit")


def refuse_control_tower(target: Target, state: CurrentState) -> None:
    """Control Tower resources are never modified (plan, apply and remove alike)."""
    checks = [("trail", target.trail.name, None),
              ("log group", state.log_group.name if state.log_group else target.log_group,
               state.log_group.tags if state.log_group else None),
              ("role", state.role.name if state.role else target.role_name,
               state.role.tags if state.role else None)]
    for kind, name, tags in checks:
        if is_control_tower(name, tags):
            raise SetupError(
                f"the {kind} {name!r} is managed by AWS Control Tower; trailwatch will not modify "
                "Control Tower resources (drift would be reverted or break the landing zone)",
                "Control Tower already delivers its organization trail to CloudWatch Logs; "
                "point the event processor at that log group instead, or use a trail you own",
                code="ControlTower")


def _plan_retention(plan: Plan, target: Target, lg: Any) -> None:
    """New groups get 365 days; an adopted group keeps its retention (never-expire included)
    unless --retention-days is given; a shorter value is marked destructive."""
    region = target.region
    if lg is None:
        days = target.retention_days or DEFAULT_RETENTION
        plan.steps.append(Step("logs", "PutRetentionPolicy",
                               {"logGroupName": target.log_group, "retentionInDays": days},
                               f"set retention of {target.log_group} to {days} days",
                               ("logs:PutRetentionPolicy",), region,
                               resource=target.log_group_arn_bare))
        return
    want, have = target.retention_days, lg.retention
    if want is None:
        plan.notes.append(f"retention of {target.log_group} kept: "
                          f"{f'{have} days' if have else 'never expire'} (--retention-days "
                          "changes it)")
        return
    if want == have:
        return
    shorter = have is None or want < have
    was = f"{have} days" if have else "never expire"
    msg = (f"shorten retention of {target.log_group}: was {was} -> {want} days "
           f"(events older than {want} days are deleted)" if shorter else
           f"lengthen retention of {target.log_group}: was {was} -> {want} days")
    plan.steps.append(Step("logs", "PutRetentionPolicy",
                           {"logGroupName": target.log_group, "retentionInDays": want},
                           msg, ("logs:PutRetentionPolicy",), region, destructive=shorter,
                           resource=target.log_group_arn_bare))
