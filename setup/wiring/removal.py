"""``trailwatch remove``: detach a trail and delete only what is provably unused.

Before a role, a log group, a CIS filter, an alarm or a topic is deleted, trailwatch reads who
else uses it: DescribeTrails in every region of the partition for the role and the log group
(another trail delivering there keeps it), tags for the CIS resources (see
:mod:`setup.wiring.cis_alarms`). Whatever is kept is listed with the reason. A log group that still holds
events is deleted only when ``--confirm-log-group NAME`` names it. Control Tower resources are
refused exactly as ``apply`` refuses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from setup.aws import AwsClients
from setup.errors import SetupError
from setup.wiring import subscription as subscribe
from setup.wiring.cis_alarms import removal_steps as cis_removal_steps
from setup.wiring.models import (
    POLICY_NAME,
    TAG_KEY,
    TAG_VALUE,
    Target,
    delivery_sids,
    is_owned,
    trail_tag,
)
from setup.wiring.planner import Plan, Step, refuse_control_tower
from setup.wiring.state import (
    CurrentState,
    read_log_group,
    read_role,
    trails_everywhere,
)


@dataclass
class RemoveOptions:
    delete_role: bool = False
    delete_log_group: bool = False
    confirm_log_group: str | None = None


def _group_of(arn: str | None) -> tuple[str, str, str] | None:
    """(region, account, name) of a trail's CloudWatchLogsLogGroupArn."""
    if not arn or arn.count(":") < 6:
        return None
    parts = arn.split(":")
    return parts[3], parts[4], parts[6]


def _role_of(arn: str | None) -> tuple[str, str] | None:
    if not arn or ":role/" not in arn:
        return None
    return arn.split(":")[4], arn.rsplit("/", 1)[1]


def users(trails: list[dict[str, Any]], target: Target) -> tuple[list[str], list[str]]:
    """Other trails using (the log group, the role)."""
    group = (target.region, target.account, target.log_group)
    role = (target.account, target.role_name_in_use)
    g, r = [], []
    for t in trails:
        if t.get("TrailARN") == target.trail.arn:
            continue
        if _group_of(t.get("CloudWatchLogsLogGroupArn")) == group:
            g.append(t["TrailARN"])
        if _role_of(t.get("CloudWatchLogsRoleArn")) == role:
            r.append(t["TrailARN"])
    return g, r


def _holds_events(clients: AwsClients, target: Target, stored_bytes: int) -> bool:
    if stored_bytes:
        return True
    logs = clients.client("logs", target.region)
    streams = logs.describe_log_streams(logGroupName=target.log_group, limit=1).get("logStreams")
    return bool(streams)


def removal_plan(clients: AwsClients, target: Target, opts: Any) -> Plan:
    region = target.region
    state = CurrentState(log_group=read_log_group(clients, target),
                         role=read_role(clients, target.role_name_in_use, region))
    refuse_control_tower(target, state)
    owner = _group_of(target.trail.log_group_arn)
    if owner and owner[1] != target.account:
        raise SetupError(
            f"trail {target.trail.name} delivers to log group {owner[2]} in account {owner[1]}, "
            f"not this account ({target.account}); detaching it would stop that account's "
            "filters and subscriptions from receiving events",
            f"run `trailwatch remove` from account {owner[1]}", code="DeliveryOwnedElsewhere")
    trails, unreadable = trails_everywhere(clients, target.partition)
    group_users, role_users = users(trails, target)
    unproven = (f"DescribeTrails failed in {', '.join(unreadable)}: cannot prove it unused"
                if unreadable else "")

    steps, notes = cis_removal_steps(clients, target, group_users + (["(unreadable regions)"]
                                                                     if unreadable else []))
    sub_steps, sub_notes = subscribe.removal_steps(clients, target)
    steps, notes = sub_steps + steps, sub_notes + notes
    t = target.trail
    if t.log_group_arn or t.role_arn:
        steps.append(Step("cloudtrail", "UpdateTrail",
                          {"Name": t.arn, "CloudWatchLogsLogGroupArn": "",
                           "CloudWatchLogsRoleArn": ""},
                          f"detach trail {t.name} from CloudWatch Logs", ("cloudtrail:UpdateTrail",),
                          region, resource=t.arn))
    else:
        notes.append(f"trail {t.name} is not attached to CloudWatch Logs")

    role = state.role
    keep_role_reason = ""
    if role is None:
        if getattr(opts, "delete_role", False):
            notes.append(f"role {target.role_name_in_use} does not exist")
    elif not is_owned(role.tags):
        keep_role_reason = f"not created by trailwatch (no {TAG_KEY}={TAG_VALUE} tag)"
    elif role_users:
        keep_role_reason = f"still used by {', '.join(role_users)}"
    elif unproven:
        keep_role_reason = unproven
    if role is not None and getattr(opts, "delete_role", False) and not keep_role_reason:
        for pname in role.inline:
            steps.append(Step("iam", "DeleteRolePolicy", {"RoleName": role.name,
                                                          "PolicyName": pname},
                              f"delete inline policy {pname}", ("iam:DeleteRolePolicy",), region,
                              resource=role.arn, destructive=True))
        for parn in role.attached:
            steps.append(Step("iam", "DetachRolePolicy", {"RoleName": role.name,
                                                          "PolicyArn": parn},
                              f"detach {parn}", ("iam:DetachRolePolicy",), region,
                              resource=role.arn))
        steps.append(Step("iam", "DeleteRole", {"RoleName": role.name},
                          f"delete role {role.name}", ("iam:DeleteRole",), region,
                          resource=role.arn, destructive=True))
    elif role is not None:
        if getattr(opts, "delete_role", False):
            notes.append(f"role {role.name} kept: {keep_role_reason}")
        steps += _drop_own_statements(role, target, region)

    lg = state.log_group
    if getattr(opts, "delete_log_group", False):
        if lg is None:
            notes.append(f"log group {target.log_group} does not exist")
        elif not is_owned(lg.tags):
            notes.append(f"log group {lg.name} kept: not created by trailwatch (no {TAG_KEY}="
                         f"{TAG_VALUE} tag)")
        elif group_users:
            notes.append(f"log group {lg.name} kept: still used by {', '.join(group_users)}")
        elif unproven:
            notes.append(f"log group {lg.name} kept: {unproven}")
        elif _holds_events(clients, target, lg.stored_bytes) and \
                getattr(opts, "confirm_log_group", None) != lg.name:
            notes.append(f"log group {lg.name} kept: it still holds events; pass "
                         f"--confirm-log-group {lg.name} to delete it with all its events")
        else:
            steps.append(Step("logs", "DeleteLogGroup", {"logGroupName": lg.name},
                              f"delete log group {lg.name} and all its events",
                              ("logs:DeleteLogGroup",), region,
                              resource=target.log_group_arn_bare, destructive=True))
    key, _ = trail_tag(target.trail.arn)
    if lg is not None and key in lg.tags and not any(s.operation == "DeleteLogGroup"
                                                     for s in steps):
        steps.append(Step("logs", "UntagResource", {"resourceArn": target.log_group_arn_bare,
                                                    "tagKeys": [key]},
                          f"untag log group {lg.name} ({key}: no longer serves {t.name})",
                          ("logs:UntagResource",), region, resource=target.log_group_arn_bare))
    return Plan(target=target, steps=steps, notes=notes)


def _drop_own_statements(role: Any, target: Target, region: str) -> list[Step]:
    """A kept role: take this trail's statements (by Sid) and its ownership tag off it."""
    out: list[Step] = []
    ours = set(delivery_sids(target))
    doc = role.inline.get(POLICY_NAME)
    if isinstance(doc, dict):
        stmts = doc.get("Statement", [])
        stmts = [stmts] if isinstance(stmts, dict) else stmts
        kept = [s for s in stmts if not (isinstance(s, dict) and s.get("Sid") in ours)]
        if kept and len(kept) != len(stmts):
            out.append(Step("iam", "PutRolePolicy",
                            {"RoleName": role.name, "PolicyName": POLICY_NAME,
                             "PolicyDocument": json.dumps(dict(doc, Statement=kept))},
                            f"remove trail {target.trail.name}'s statements ({', '.join(sorted(ours))})"
                            f" from {POLICY_NAME}; other statements kept",
                            ("iam:PutRolePolicy",), region, resource=role.arn))
    key, _ = trail_tag(target.trail.arn)
    if key in role.tags:
        out.append(Step("iam", "UntagRole", {"RoleName": role.name, "TagKeys": [key]},
                        f"untag role {role.name} ({key}: no longer serves {target.trail.name})",
                        ("iam:UntagRole",), region, resource=role.arn))
    return out
