"""`plan --check-permissions` simulates iam:PassRole the way each call passes the role (issue 24
item 7): UpdateTrail passes the delivery role to CloudTrail, PutSubscriptionFilter passes the
subscription role to CloudWatch Logs. Observed on 5bb8a96: every PassRole was simulated on the
delivery role with iam:PassedToService=cloudtrail.amazonaws.com, so a caller allowed to pass only
the delivery role (to CloudTrail only) was reported as able to subscribe, and apply failed."""

from __future__ import annotations

from types import SimpleNamespace

from setup.wiring.models import Target, Trail
from setup.wiring.planner import Plan, Step
from setup.wiring.plans import check_permissions, permission_requests

ACCT, REGION = "111122223333", "us-east-1"
DELIVERY = f"arn:aws:iam::{ACCT}:role/trailwatch-cwl-main-{REGION}"
SUBSCRIPTION = f"arn:aws:iam::{ACCT}:role/logs-to-kinesis"


def plan() -> Plan:
    trail = Trail("main", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main", REGION, ACCT,
                  False, True)
    target = Target(trail=trail, account=ACCT, log_group="CloudTrail/main",
                    role_name=f"trailwatch-cwl-main-{REGION}")
    update = Step("cloudtrail", "UpdateTrail", {"Name": trail.arn, "CloudWatchLogsRoleArn":
                                                DELIVERY, "CloudWatchLogsLogGroupArn": "x"},
                  "wire", ("cloudtrail:UpdateTrail", "iam:PassRole"), REGION,
                  resource=trail.arn)
    subscribe = Step("logs", "PutSubscriptionFilter",
                     {"logGroupName": "CloudTrail/main", "filterName": "trailwatch",
                      "filterPattern": "", "roleArn": SUBSCRIPTION,
                      "destinationArn": f"arn:aws:kinesis:{REGION}:{ACCT}:stream/s"},
                     "subscribe", ("logs:PutSubscriptionFilter", "iam:PassRole"), REGION)
    return Plan(target=target, steps=[update, subscribe])


def test_each_passrole_is_requested_on_the_role_its_step_passes():
    reqs = [r for r in permission_requests(plan()) if r[0] == "iam:PassRole"]
    assert sorted(reqs) == sorted([("iam:PassRole", DELIVERY, "cloudtrail.amazonaws.com"),
                                   ("iam:PassRole", SUBSCRIPTION, "logs.amazonaws.com")])


def test_the_simulation_passes_each_role_to_its_own_service():
    calls = []

    class Paginator:
        def paginate(self, **kw):
            calls.append(kw)
            return [{"EvaluationResults": [{"EvalActionName": a, "EvalDecision": "allowed"}
                                           for a in kw["ActionNames"]]}]
    iam = SimpleNamespace(get_paginator=lambda name: Paginator())
    sts = SimpleNamespace(get_caller_identity=lambda: {
        "Account": ACCT, "Arn": f"arn:aws:iam::{ACCT}:user/admin"})
    clients = SimpleNamespace(client=lambda s, r=None: {"iam": iam, "sts": sts}[s])
    missing, warnings = check_permissions(clients, REGION, permission_requests(plan()))
    assert missing == [] and warnings == []
    passes = {(c["ResourceArns"][0], c["ContextEntries"][0]["ContextKeyValues"][0])
              for c in calls if "iam:PassRole" in c["ActionNames"]}
    assert passes == {(DELIVERY, "cloudtrail.amazonaws.com"),
                      (SUBSCRIPTION, "logs.amazonaws.com")}
    for c in calls:
        if "iam:PassRole" in c["ActionNames"]:
            assert c["ActionNames"] == ["iam:PassRole"]    # the context is PassRole's alone
