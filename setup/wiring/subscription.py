"""Subscription filters as plan steps: trailwatch's filter on the trail's log group, sending
events to a (cross-account) CloudWatch Logs destination or a same-account Lambda, Kinesis or
Firehose stream. A log group has at most 2 filters; others' filters are never replaced.
"""

from __future__ import annotations

import argparse
from typing import Any

from botocore.exceptions import ClientError

from setup.errors import SetupError, error_code
from setup.wiring.models import Target
from setup.wiring.planner import Plan, Step

FILTER_PREFIX = "trailwatch-subscribe-"
FILTER_NAME_MAX = 512
MAX_FILTERS = 2
SERVICES = ("logs", "lambda", "kinesis", "firehose")


def filter_name(trail_name: str) -> str:
    return (FILTER_PREFIX + trail_name)[:FILTER_NAME_MAX]


def is_ours(name: str) -> bool:
    return name.startswith(FILTER_PREFIX)


def parse_destination(arn: str) -> dict[str, str]:
    """service, region, account and kind of a subscription destination ARN (or SetupError)."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn" or parts[2] not in SERVICES or \
            not parts[4].isdigit() or len(parts[4]) != 12:
        raise SetupError(f"--destination {arn!r} is not a destination ARN",
                         "pass the DestinationArn output of the audit account's stack "
                         "(arn:aws:logs:REGION:ACCOUNT:destination:NAME), or a Lambda function, "
                         "Kinesis stream or Firehose stream ARN of this account")
    service, region, account, resource = parts[2], parts[3], parts[4], parts[5]
    kind = {"logs": "destination", "lambda": "function", "kinesis": "stream",
            "firehose": "deliverystream"}[service]
    if not resource.startswith(kind):
        raise SetupError(f"--destination {arn!r}: a {service} destination must be a {kind} ARN",
                         "copy the ARN from the stack output or the console")
    return {"service": service, "region": region, "account": account, "resource": resource}


def read_filters(clients: Any, target: Target) -> list[dict[str, Any]]:
    logs = clients.client("logs", target.region)
    try:
        return logs.describe_subscription_filters(
            logGroupName=target.log_group).get("subscriptionFilters", [])
    except ClientError as e:
        if error_code(e) == "ResourceNotFoundException":
            return []          # the log group does not exist yet: apply creates it first
        raise


def plan_subscription(target: Target, destination: str, current: list[dict[str, Any]],
                      role_arn: str | None = None) -> tuple[list[Step], list[str]]:
    """Steps (0 or 1) and notes that make the log group send everything to ``destination``."""
    d = parse_destination(destination)
    if d["region"] != target.region:
        raise SetupError(f"the destination is in {d['region']} but the log group "
                         f"{target.log_group} is in {target.region}: a subscription destination "
                         "must be in the log group's Region",
                         f"deploy the audit stack in {target.region} and use its DestinationArn")
    cross = d["account"] != target.account
    if cross and d["service"] != "logs":
        raise SetupError(f"{d['service']} is not a cross-account subscription target: only a "
                         "CloudWatch Logs destination (Kinesis or Firehose behind it) is",
                         "deploy the template with SourceMode=destination in the audit account "
                         "and pass its DestinationArn output")
    if d["service"] in ("kinesis", "firehose") and not role_arn:
        raise SetupError(f"a same-account {d['service']} target needs the role CloudWatch Logs "
                         "assumes to put records", "pass --subscription-role ROLE_ARN")
    name = filter_name(target.trail.name)
    params: dict[str, Any] = {"logGroupName": target.log_group, "filterName": name,
                              "filterPattern": "", "destinationArn": destination}
    actions: tuple[str, ...] = ("logs:PutSubscriptionFilter",)
    notes: list[str] = []
    # A cross-account destination whose access policy grants an organization needs a role in
    # this (sender) account, which CloudWatch Logs assumes to check the sender (CloudWatch Logs
    # guide, "Step 2: (Only if using an organization) Create an IAM role"): trust
    # logs.amazonaws.com, allow logs:PutLogEvents on this log group.
    if role_arn and (d["service"] != "logs" or cross):
        params["roleArn"] = role_arn
        actions += ("iam:PassRole",)
    elif cross:
        notes.append("if the destination's access policy grants an organization (the audit "
                     "stack's SourceOrganizationId), pass --subscription-role with a role in this "
                     "account trusted by logs.amazonaws.com and allowed logs:PutLogEvents on "
                     f"{target.log_group}; a policy that lists this account needs none")
    same = [f for f in current if f.get("destinationArn") == destination
            and not f.get("filterPattern") and (not role_arn or f.get("roleArn") == role_arn)]
    if same:
        return [], [f"the log group already sends every event to {destination} (filter "
                    f"{same[0]['filterName']}): nothing to do"]
    mine = next((f for f in current if f.get("filterName") == name), None)
    if mine is not None:
        if mine.get("destinationArn") == destination:
            what = f"UPDATE subscription filter {name}: CloudWatch Logs assumes {role_arn}"
        else:
            what = (f"REPLACE subscription filter {name}: {mine.get('destinationArn')} -> "
                    f"{destination} (events stop flowing to the old destination)")
        return [Step("logs", "PutSubscriptionFilter", params, what, actions, target.region)], \
            notes
    if len(current) >= MAX_FILTERS:
        listed = "; ".join(f"{f.get('filterName')} -> {f.get('destinationArn')}" for f in current)
        raise SetupError(f"log group {target.log_group} already has {len(current)} subscription "
                         f"filters, the limit of {MAX_FILTERS} (it cannot be raised): {listed}",
                         "remove one of them, or fan them out from a single Kinesis stream or "
                         "destination; trailwatch does not replace filters it did not create")
    where = "another account's destination" if cross else f"{d['service']} target"
    return [Step("logs", "PutSubscriptionFilter", params,
                 f"subscribe log group {target.log_group} to {where} {destination} "
                 f"(filter {name}, all events; {len(current) + 1} of {MAX_FILTERS} filters)",
                 actions, target.region)], notes


def removal_steps(clients: Any, target: Target) -> tuple[list[Step], list[str]]:
    """Delete trailwatch's own subscription filter(s); leave everyone else's."""
    steps, notes = [], []
    for f in read_filters(clients, target):
        name = f.get("filterName", "")
        if is_ours(name):
            steps.append(Step("logs", "DeleteSubscriptionFilter",
                              {"logGroupName": target.log_group, "filterName": name},
                              f"DELETE subscription filter {name} -> {f.get('destinationArn')} "
                              "(events stop flowing to it)", ("logs:DeleteSubscriptionFilter",),
                              target.region))
        else:
            notes.append(f"subscription filter {name} was not created by trailwatch: left in "
                         "place")
    return steps, notes


def extend_plan(clients: Any, plan: Plan, args: argparse.Namespace) -> None:
    """Append the subscription step when --destination was given (plan and apply)."""
    destination = getattr(args, "destination", None)
    if not destination:
        return
    steps, notes = plan_subscription(plan.target, destination, read_filters(clients, plan.target),
                                     getattr(args, "subscription_role", None))
    plan.steps += steps
    plan.notes += notes
