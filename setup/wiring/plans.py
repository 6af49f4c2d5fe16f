"""The whole plan of a run: the trail wiring, the CIS alarms and the subscription, the digest of
the state it was computed from, the saved-plan file (``plan --out`` / ``apply --plan``) and the
IAM permission simulation (``plan --check-permissions``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from setup import __version__
from setup.aws import AwsClients
from setup.errors import SetupError, UsageError, error_code, error_message
from setup.wiring import subscription as subscribe
from setup.wiring.cis_alarms import (
    default_topic_arn,
    legacy_alarms,
    plan_cis,
    read_cis_state,
    topic_name,
    validate_alarm_topic,
)
from setup.wiring.models import Target
from setup.wiring.planner import Plan, Step, build_plan
from setup.wiring.state import caller, find_trail, read_state
from setup.wiring.target import resolve_target

PLAN_FORMAT = "trailwatch-plan/1"


# ----------------------------------------------------------------------------------- permissions

# Reads plan, apply and apply's verify make, with what they act on ("*" = no resource-level ARN).
# iam:PassRole is requested as (action, the role the step passes, the service it is passed to).
def permission_requests(plan: Plan, cis: bool = False) -> list[tuple[str, ...]]:
    t = plan.target
    lg, role = t.log_group_arn_bare, t.role_arn
    reqs: list[tuple[str, ...]] = [
        ("sts:GetCallerIdentity", "*"), ("cloudtrail:DescribeTrails", "*"),
        ("cloudtrail:GetTrailStatus", t.trail.arn), ("logs:DescribeLogGroups", "*"),
        ("logs:ListTagsForResource", lg), ("logs:DescribeMetricFilters", lg),
        ("logs:DescribeSubscriptionFilters", lg), ("iam:GetRole", role),
        ("iam:ListRolePolicies", role), ("iam:GetRolePolicy", role),
        ("iam:ListAttachedRolePolicies", role), ("cloudwatch:DescribeAlarms", "*"),
        ("lambda:GetPolicy", "*")]
    if t.trail.is_org:
        reqs += [("organizations:DescribeOrganization", "*"), ("organizations:ListAccounts", "*")]
    if t.kms_key:
        reqs += [("kms:DescribeKey", t.kms_key), ("kms:GetKeyPolicy", t.kms_key)]
    if cis:
        topic = default_topic_arn(t)
        reqs += [("sns:GetTopicAttributes", topic), ("sns:ListSubscriptionsByTopic", topic)]
    for s in plan.steps:
        for action in s.iam_actions:
            if action == "iam:PassRole":     # UpdateTrail -> CloudTrail; a filter -> Logs
                passed = s.params.get("CloudWatchLogsRoleArn") or s.params.get("roleArn") or role
                reqs.append((action, passed, f"{s.service}.amazonaws.com"))
            else:
                reqs.append((action, s.resource))
    seen: list[tuple[str, ...]] = []
    for r in reqs:
        if r not in seen:
            seen.append(r)
    return seen


def check_permissions(clients: AwsClients, region: str, actions: list[Any],
                      passed_to: str = "cloudtrail.amazonaws.com") -> tuple[list[str], list[str]]:
    """(denied "action on resource" list, warnings) per iam:SimulatePrincipalPolicy, with
    resource ARNs and the iam:PassedToService context for iam:PassRole: the service a request
    names as its third item, else ``passed_to``. A simulation that is itself denied is a
    warning, not an abort."""
    reqs = []
    for a in actions:
        action, res = (a, "*") if isinstance(a, str) else (a[0], a[1])
        service = a[2] if not isinstance(a, str) and len(a) > 2 else None
        reqs.append((action, res, service or (passed_to if action == "iam:PassRole" else None)))
    arn = caller(clients, region)["arn"]
    iam = clients.client("iam", region)
    if arn.endswith(":root"):
        return [], []
    warnings: list[str] = []
    try:
        if ":assumed-role/" in arn:
            role_name = arn.split(":assumed-role/")[1].split("/")[0]
            source = iam.get_role(RoleName=role_name)["Role"]["Arn"]   # resolves the role's path
        else:
            source = arn
        # One simulation per resource; iam:PassRole alone per (role, service), since its
        # iam:PassedToService context would apply to every action of the call.
        by_resource: dict[tuple[str, str | None], list[str]] = {}
        for action, res, service in reqs:
            by_resource.setdefault((res, service if action == "iam:PassRole" else None),
                                   []).append(action)
        missing: list[str] = []
        for (res, service), acts in by_resource.items():
            kw: dict[str, Any] = {"PolicySourceArn": source, "ActionNames": acts}
            if res != "*":
                kw["ResourceArns"] = [res]
            if service is not None:
                kw["ContextEntries"] = [{"ContextKeyName": "iam:PassedToService",
                                         "ContextKeyValues": [service],
                                         "ContextKeyType": "string"}]
            for page in iam.get_paginator("simulate_principal_policy").paginate(**kw):
                missing += [r["EvalActionName"] + ("" if res == "*" else f" on {res}")
                            for r in page["EvaluationResults"] if r["EvalDecision"] != "allowed"]
    except ClientError as e:
        warnings.append(f"WARN: could not simulate permissions ({error_code(e)}: "
                        f"{error_message(e)}); allow iam:SimulatePrincipalPolicy to check them")
        return [], warnings
    return missing, warnings


# ----------------------------------------------------------------------------------- the plan

def _cis_plan(clients: AwsClients, args: argparse.Namespace, target: Target
              ) -> tuple[list[Step], Any, str | None]:
    if not getattr(args, "cis_alarms", False):
        if getattr(args, "alarm_topic", None):
            raise UsageError("--alarm-topic needs --cis-alarms", "add --cis-alarms")
        return [], None, None
    if args.alarm_topic:
        topic = validate_alarm_topic(clients, target, args.alarm_topic)
    else:
        topic = default_topic_arn(target)
    cis_state = read_cis_state(clients, target, topic)
    return plan_cis(target, cis_state, topic, create_topic=not args.alarm_topic), cis_state, topic


def state_digest(target: Target, state: Any, cis_state: Any) -> str:
    """sha256 of the facts a plan was computed from (config only: no clocks, no byte counts)."""
    t = target.trail
    facts: dict[str, Any] = {"trail": [t.arn, t.log_group_arn, t.role_arn, t.is_org],
                             "account": target.account, "org_id": target.org_id}
    lg = state.log_group
    facts["log_group"] = None if lg is None else [lg.name, lg.log_group_class, lg.retention,
                                                  lg.kms_key, sorted(lg.tags.items())]
    r = state.role
    facts["role"] = None if r is None else [r.arn, r.trust, sorted(r.tags.items()), r.inline,
                                            sorted(r.attached)]
    facts["kms_policy"] = state.kms_policy
    if cis_state is not None:
        facts["cis"] = {
            "filters": {n: [f.get("filterPattern"), f.get("metricTransformations")]
                        for n, f in sorted(cis_state.filters.items())},
            "alarms": {n: {k: a.get(k) for k in ("MetricName", "Namespace", "Threshold",
                                                 "AlarmActions", "Period", "Statistic")}
                       for n, a in sorted(cis_state.alarms.items())},
            "topic": cis_state.topic_exists}
    raw = json.dumps(facts, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def make_plan(clients: AwsClients, args: argparse.Namespace) -> tuple[Plan, Target, dict]:
    target, who, notes = resolve_target(clients, args)
    state = read_state(clients, target)
    if state.role is not None and state.role.path != target.role_path:
        target = replace(target, role_path=state.role.path)     # role ARNs keep their path
    plan = build_plan(target, state)
    plan.notes[:0] = notes
    cis_steps, cis_state, topic = _cis_plan(clients, args, target)
    plan.steps += cis_steps
    if cis_state is not None:
        legacy = legacy_alarms(clients, target)
        if legacy:
            plan.notes.append(f"{len(legacy)} CIS alarm(s) with region-wide names from an earlier "
                              f"trailwatch ({legacy[0]}, ...) are left as they are: delete them "
                              "once no trail relies on them (the new set is per log group)")
    subscribe.extend_plan(clients, plan, args)   # --destination
    plan.state_digest = state_digest(target, state, cis_state)
    plan.cis_topic = topic
    return plan, target, who


def plan_json(plan: Plan) -> dict[str, Any]:
    doc = plan.to_json()
    doc["state_digest"] = getattr(plan, "state_digest", None)
    if getattr(plan, "cis_topic", None):
        doc["cis"] = {"topic": plan.cis_topic, "topic_name": topic_name(plan.target)}
    return doc


_SAVED_OPTIONS = ("log_group", "role_name", "retention_days", "kms_key", "stream_scope", "org_id",
                  "trust_org_id", "cis_alarms", "alarm_topic", "accept_trusted_service",
                  "take_over_delivery", "destination", "subscription_role")


def save_plan(plan: Plan, args: argparse.Namespace, path: str) -> None:
    options = {k: getattr(args, k, None) for k in _SAVED_OPTIONS}
    options["trail"] = plan.target.trail.arn
    options["kms_key"] = plan.target.kms_key
    doc = {"format": PLAN_FORMAT, "trailwatch": __version__, "options": options,
           "state_digest": getattr(plan, "state_digest", None), "plan": plan_json(plan)}
    doc["plan_digest"] = plan_file_digest(doc)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


# What each saved option may hold (the CLI's own parsers checked it when the plan was made).
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "trail": (str,), "log_group": (str, type(None)), "role_name": (str, type(None)),
    "retention_days": (int, type(None)), "kms_key": (str, type(None)),
    "stream_scope": (str, type(None)), "org_id": (str, type(None)),
    "trust_org_id": (bool, type(None)),
    "cis_alarms": (bool, type(None)), "alarm_topic": (str, type(None)),
    "accept_trusted_service": (list, type(None)), "take_over_delivery": (bool, type(None)),
    "destination": (str, type(None)), "subscription_role": (str, type(None)),
}
_STEP_KEYS: dict[str, tuple[type, ...]] = {
    "api": (str,), "region": (str,), "params": (dict,), "message": (str,),
    "iam_actions": (list,), "resource": (str,), "destructive": (bool,)}


@dataclass(frozen=True)
class PlanFileKind:
    """What a saved plan of one command family looks like: its format marker, the options it
    carries (key -> the types it may hold; ``required`` ones must be non-empty strings; a list
    option's items must be of ``item_types[key]``; ``choices[key]`` restricts the value as the
    CLI's own parser does) and the command that writes it (for the hints)."""
    format: str
    option_types: dict[str, tuple[type, ...]]
    required: tuple[str, ...]
    command: str                                  # e.g. "trailwatch plan"
    item_types: dict[str, tuple[type, ...]] = field(default_factory=dict)
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)


TRAIL_PLANS = PlanFileKind(PLAN_FORMAT, _OPTION_TYPES, ("trail",), "trailwatch plan")


def _invalid(path: str, why: str, kind: PlanFileKind = TRAIL_PLANS) -> UsageError:
    return UsageError(f"{path} is not a complete trailwatch plan ({kind.format}): {why}",
                      f"pass a file written by `{kind.command} --out`, unchanged; or make a new "
                      "one", code="PlanFileInvalid")


def check_plan_file(saved: Any, path: str, kind: PlanFileKind = TRAIL_PLANS) -> None:
    """Shape checks of a saved plan, before anything in it is used."""
    if not isinstance(saved, dict) or saved.get("format") != kind.format:
        raise _invalid(path, "no format marker", kind)
    options, plan = saved.get("options"), saved.get("plan")
    if not isinstance(options, dict):
        raise _invalid(path, "no options", kind)
    for key, value in options.items():
        if key not in kind.option_types:
            raise _invalid(path, f"option {key!r} is not one a plan carries", kind)
        types = kind.option_types[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _invalid(path, f"option {key!r} has a {type(value).__name__} value", kind)
        items = kind.item_types.get(key)
        if items is not None and isinstance(value, list) and not all(
                isinstance(v, items) and not (isinstance(v, bool) and bool not in items)
                for v in value):
            raise _invalid(path, f"option {key!r} holds a value that is not "
                           f"{' or '.join(t.__name__ for t in items)}", kind)
        if key in kind.choices and value is not None and (
                isinstance(value, bool) or value not in kind.choices[key]):
            raise _invalid(path, f"option {key!r} is not one of "
                           f"{', '.join(map(str, kind.choices[key]))}", kind)
    for key in kind.required:
        if not isinstance(options.get(key), str) or not options[key]:
            raise _invalid(path, f"no {key}", kind)
    if not isinstance(plan, dict) or not isinstance(plan.get("steps"), list):
        raise _invalid(path, "no steps", kind)
    for n, step in enumerate(plan["steps"]):
        if not isinstance(step, dict):
            raise _invalid(path, f"step {n + 1} is not an object", kind)
        for key, types in _STEP_KEYS.items():
            if key in ("resource", "destructive") and key not in step:
                continue
            if not isinstance(step.get(key), types):
                raise _invalid(path, f"step {n + 1} has no valid {key!r}", kind)
        if ":" not in step["api"]:
            raise _invalid(path, f"step {n + 1}: {step['api']!r} is not service:Operation", kind)
    for key in ("state_digest", "plan_digest"):
        if not isinstance(saved.get(key), str):
            raise _invalid(path, f"no {key}", kind)


def _comparable(steps: list[dict[str, Any]]) -> str:
    return json.dumps(steps, sort_keys=True, default=str)


def _edited_hint(kind: PlanFileKind) -> str:
    return (f"make a new plan with `{kind.command} --out FILE`, review it, and apply it "
            "unchanged")


def read_plan_file(path: str, kind: PlanFileKind = TRAIL_PLANS) -> dict[str, Any]:
    """A saved plan file, shape-checked (``PlanFileInvalid``, exit 2) and matching its own
    plan_digest (else ``PlanEdited``, exit 1). Its steps are never run as they are: recompute
    the plan from its options, then :func:`check_recomputed`."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read plan file {path}: {e}",
                         f"pass a file written by `{kind.command} --out`",
                         code="PlanFileInvalid") from None
    check_plan_file(saved, path, kind)
    if saved["plan_digest"] != plan_file_digest(saved):
        raise SetupError(f"{path} was edited after `{kind.command}` wrote it (its steps or "
                         "options no longer match its plan_digest); refusing to apply it",
                         _edited_hint(kind), code="PlanEdited")
    return saved


def check_recomputed(path: str, saved: dict[str, Any], state_digest_now: str | None,
                     steps_now: list[Step], kind: PlanFileKind = TRAIL_PLANS,
                     replan: str | None = None) -> None:
    """Refuse a saved plan whose account changed since (``PlanStale``) or whose steps are not
    the steps trailwatch plans now for its options (``PlanEdited``): the digest is not a
    secret, so what runs must be what trailwatch computes, which is also what apply displays."""
    if state_digest_now != saved["state_digest"]:
        raise SetupError(
            f"the account changed since {path} was made (state digest "
            f"{saved['state_digest']} -> {state_digest_now}); refusing to apply a stale "
            "plan", f"run `{replan or kind.command + ' --out FILE'}` again, review it, then "
            "apply it", code="PlanStale")
    now = [s.to_json() for s in steps_now]
    if _comparable(now) != _comparable(saved["plan"]["steps"]):
        raise SetupError(f"the steps in {path} are not the steps trailwatch plans for its "
                         "options and this account; refusing to apply them",
                         _edited_hint(kind), code="PlanEdited")


def load_saved_plan(clients: AwsClients, args: argparse.Namespace
                    ) -> tuple[Plan, Target, dict]:
    """The plan a saved file describes, recomputed for the account as it is now.

    Refused (exit 1, ``PlanEdited``) when the file no longer matches its own digest, or when its
    steps are not the steps trailwatch plans now for its options (the digest is not a secret:
    what runs must be what trailwatch computes, which is also what apply displays). Refused
    (``PlanStale``) when the account changed since. A file that is not a whole plan is a usage
    error (exit 2, ``PlanFileInvalid``)."""
    path = args.plan_file
    saved = read_plan_file(path, TRAIL_PLANS)
    trail = saved["options"]["trail"]
    if args.trail and args.trail not in (trail, trail.rsplit("/", 1)[-1]):
        raise UsageError(f"--trail {args.trail} is not the plan's trail {trail}",
                         "omit --trail with --plan")
    merged = argparse.Namespace(**vars(args))
    for k, v in saved["options"].items():
        setattr(merged, k, v)
    plan, target, who = make_plan(clients, merged)
    check_recomputed(path, saved, plan.state_digest, plan.steps, TRAIL_PLANS,
                     replan=f"{TRAIL_PLANS.command} --trail {trail} --out {path}")
    return plan, target, who


def refresh_target(clients: AwsClients, target: Target) -> Target:
    return replace(target, trail=find_trail(clients, target.trail.arn))


def plan_file_digest(doc: dict[str, Any]) -> str:
    """sha256 over what a saved plan says it will do: its options, state digest and steps."""
    facts = {"format": doc.get("format"), "options": doc.get("options"),
             "state_digest": doc.get("state_digest"),
             "steps": (doc.get("plan") or {}).get("steps")}
    raw = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()
