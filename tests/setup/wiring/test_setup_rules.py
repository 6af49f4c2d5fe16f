"""Setup's safety rules, each pinned independently (issue 15's observed survivors).

- ``--propagation-timeout`` defaults to 120 s, Terraform's 2 minutes (aws-facts 2.4, trap 2);
  only "Access denied" ARN errors, throttling and conflicts are retried: a caller's own
  ``AccessDeniedException`` ("access denied" in its message too) is not.
- UpdateTrail is planned when either the group ARN *or* the role differs; a converged trail gets
  none. String and list forms of a policy field are the same policy (no rewrite).
- Control Tower resources are refused by name *and* by tags (the role's included).
- A delegated administrator's log group and role are built in the caller's account (trap 7).
- A new ``--alarm-topic`` is applied to existing CIS alarms (per-log-group names, issue 9).
- Retention is never shortened implicitly; a delegated administrator's change of owner needs
  ``--take-over-delivery`` (issue 9).
- ``remove`` deletes only what trailwatch created (the same rules through the CLI and moto are in
  ``test_setup_rules_moto.py``).
"""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from botocore.stub import Stubber

from setup.aws import AwsClients
from setup.cli import build_parser
from setup.wiring.target import resolve_target
from setup.wiring.executor import Executor, StepFailure, classify_update_trail_error
from setup.wiring.models import TAG_KEY, TAG_VALUE, Target, Trail, stream_policy, trust_policy
from setup.wiring.planner import Plan, Step, build_plan
from setup.wiring.state import CurrentState, LogGroupState, RoleState
from setup.errors import SetupError
from tests.fakes import FakeClients

ACCT = "111111111111"
MGMT = "999999999999"
HOME = "eu-west-1"


def target(trail_group=None, trail_role=None, name="main", **kw):
    trail = Trail(name, f"arn:aws:cloudtrail:{HOME}:{ACCT}:trail/{name}", HOME, ACCT, False, True,
                  trail_group, trail_role)
    return Target(trail=trail, account=ACCT, log_group=f"CloudTrail/{name}",
                  role_name=f"trailwatch-cwl-{name}", **kw)


def converged(t: Target, policy=None, role_tags=None, group_tags=None) -> CurrentState:
    return CurrentState(
        log_group=LogGroupState(t.log_group, t.log_group_arn, "STANDARD", t.retention_days, None,
                                dict(group_tags if group_tags is not None else t.tags)),
        role=RoleState(t.role_name, t.role_arn, trust_policy(),
                       dict(role_tags if role_tags is not None else t.tags),
                       {t.policy_name: policy if policy is not None else stream_policy(t)}))


def apis(plan):
    return [s.operation for s in plan.steps]


# ----------------------------------------------------------------------- planner comparisons

def test_converged_trail_plans_no_update_trail():
    t0 = target()
    t = target(t0.log_group_arn, t0.role_arn)
    assert apis(build_plan(t, converged(t))) == []


def test_update_trail_planned_when_only_the_role_differs():
    t0 = target()
    t = target(t0.log_group_arn, f"arn:aws:iam::{ACCT}:role/someone-elses-role")
    plan = build_plan(t, converged(t))
    assert apis(plan) == ["UpdateTrail"]
    (step,) = plan.steps
    assert step.params["CloudWatchLogsRoleArn"] == t.role_arn
    assert step.params["CloudWatchLogsLogGroupArn"] == t.log_group_arn
    assert step.params["Name"] == t.trail.arn and step.region == HOME


def test_update_trail_planned_when_only_the_group_differs():
    t0 = target()
    t = target(t0.log_group_arn_bare, t0.role_arn)      # the bare ARN: trap 1
    plan = build_plan(t, converged(t))
    assert apis(plan) == ["UpdateTrail"]
    assert plan.steps[0].params["CloudWatchLogsLogGroupArn"].endswith(":*")


def test_string_and_list_policy_forms_are_the_same_policy():
    t0 = target()
    t = target(t0.log_group_arn, t0.role_arn)
    as_strings = copy.deepcopy(stream_policy(t))
    for stmt in as_strings["Statement"]:
        stmt["Action"] = stmt["Action"][0]
        if len(stmt["Resource"]) == 1:
            stmt["Resource"] = stmt["Resource"][0]
    assert as_strings != stream_policy(t)
    assert apis(build_plan(t, converged(t, policy=as_strings))) == []
    # ... but a different resource is a different policy
    changed = copy.deepcopy(stream_policy(t))
    changed["Statement"][1]["Resource"] = ["arn:aws:logs:*:*:log-group:other:*"]
    assert apis(build_plan(t, converged(t, policy=changed))) == ["PutRolePolicy"]


def test_retention_is_compared_not_assumed():
    """Issue 9: an adopted group keeps its retention unless --retention-days is given; a given
    value is compared with the group's, and shortening (never-expire included) is destructive."""
    t0 = target()
    t = target(t0.log_group_arn, t0.role_arn)
    st = converged(t)
    st.log_group.retention = 30
    plan = build_plan(t, st)
    assert apis(plan) == [] and any("30 days" in n for n in plan.notes)
    for want, have, destructive in [(365, 30, False), (7, 30, True), (3653, None, True)]:
        t = target(t0.log_group_arn, t0.role_arn, retention_days=want)
        st = converged(t)
        st.log_group.retention = have
        (step,) = build_plan(t, st).steps
        assert step.operation == "PutRetentionPolicy" and step.region == HOME
        assert step.params == {"logGroupName": t.log_group, "retentionInDays": want}
        assert step.destructive is destructive, (want, have)
    t = target(t0.log_group_arn, t0.role_arn, retention_days=30)
    st = converged(t)
    st.log_group.retention = 30
    assert apis(build_plan(t, st)) == []


@pytest.mark.parametrize("where", ["role", "group"])
def test_control_tower_tags_are_refused(where):
    t0 = target()
    t = target(t0.log_group_arn, t0.role_arn)
    ct = {"aws-controltower/managed": "true"}
    st = converged(t, role_tags=ct) if where == "role" else converged(t, group_tags=ct)
    with pytest.raises(SetupError):
        build_plan(t, st)


def test_control_tower_names_are_refused():
    t = target(name="aws-controltower-BaselineCloudTrail")
    with pytest.raises(SetupError):
        build_plan(t, CurrentState(None, None))


def test_untagged_user_resources_are_not_control_tower():
    t0 = target()
    t = target(t0.log_group_arn, t0.role_arn)
    assert apis(build_plan(t, converged(t, role_tags={"team": "sec"}, group_tags={}))) == []


# ----------------------------------------------------------------------- delegated administrator

def resolve(responses, trail_arg, *extra):
    clients = FakeClients(HOME, responses)
    args = build_parser().parse_args(["plan", "--trail", trail_arg, *extra])
    return resolve_target(clients, args)[0]


def da_world(group_arn=None, role_arn=None):
    trail_arn = f"arn:aws:cloudtrail:{HOME}:{MGMT}:trail/org"
    t = {"Name": "org", "TrailARN": trail_arn, "HomeRegion": HOME, "IsOrganizationTrail": True,
         "IsMultiRegionTrail": True}
    if group_arn:
        t["CloudWatchLogsLogGroupArn"] = group_arn
    if role_arn:
        t["CloudWatchLogsRoleArn"] = role_arn
    return trail_arn, {
        ("cloudtrail", "describe_trails"): {"trailList": [t]},
        ("sts", "get_caller_identity"): {"Account": ACCT,
                                         "Arn": f"arn:aws:sts::{ACCT}:assumed-role/admin/me"},
        ("organizations", "describe_organization"): {"Organization": {"Id": "o-abcdefghij"}},
    }


def test_delegated_admin_builds_group_and_role_in_its_own_account():
    trail_arn, world = da_world()
    t = resolve(world, trail_arn)
    assert t.account == ACCT and t.trail.owner_account == MGMT
    assert f":{ACCT}:log-group:" in t.log_group_arn and f"::{ACCT}:role/" in t.role_arn
    assert t.log_group_arn.split(":")[3] == HOME


def test_delegated_admin_does_not_adopt_the_management_accounts_group_or_role():
    mgmt_group = f"arn:aws:logs:{HOME}:{MGMT}:log-group:MgmtTrailGroup:*"
    trail_arn, world = da_world(mgmt_group, f"arn:aws:iam::{MGMT}:role/MgmtRole")
    # Issue 9: moving delivery away from the management account's group is a change of owner,
    # refused unless asked for knowingly.
    with pytest.raises(SetupError) as info:
        resolve(world, trail_arn)
    assert info.value.code == "DeliveryOwnedElsewhere" and "MgmtTrailGroup" in str(info.value)
    t = resolve(world, trail_arn, "--take-over-delivery")
    assert t.log_group != "MgmtTrailGroup" and f":{ACCT}:" in t.log_group_arn
    assert t.role_name != "MgmtRole" and f"::{ACCT}:role/" in t.role_arn
    plan = build_plan(t, CurrentState(None, None))
    (ut,) = [s for s in plan.steps if s.operation == "UpdateTrail"]
    assert ut.params["Name"] == trail_arn                  # by ARN: the trail is not ours
    assert ut.params["CloudWatchLogsLogGroupArn"] == t.log_group_arn
    assert ut.destructive                                  # shown as such in the plan


def test_trail_in_another_home_region_is_driven_there():
    trail_arn, world = da_world()
    clients = FakeClients("us-east-1", world)
    args = build_parser().parse_args(["plan", "--trail", trail_arn])
    t = resolve_target(clients, args)[0]
    assert t.region == HOME
    assert all(r == HOME for r, _ in clients.calls_to("cloudtrail", "describe_trails"))


# ----------------------------------------------------------------------- executor retries

def test_propagation_timeout_defaults_to_two_minutes():
    for cmd in ("apply",):
        args = build_parser().parse_args([cmd, "--trail", "main"])
        assert args.propagation_timeout == 120
    assert Executor(AwsClients(region="us-east-1")).propagation_timeout == 120


def _stubbed(errors, timeout=120.0):
    client = boto3.client("cloudtrail", region_name=HOME)
    stub = Stubber(client)
    for code, msg in errors:
        stub.add_client_error("update_trail", service_error_code=code, service_message=msg,
                              http_status_code=400)
    stub.add_response("update_trail", {"Name": "main"})
    clients = AwsClients(region=HOME)
    clients._clients[("cloudtrail", HOME)] = client
    clock, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s
    t = target()
    plan = Plan(target=t, steps=[Step("cloudtrail", "UpdateTrail",
                                      {"Name": t.trail.arn,
                                       "CloudWatchLogsLogGroupArn": t.log_group_arn,
                                       "CloudWatchLogsRoleArn": t.role_arn},
                                      "point trail", ("cloudtrail:UpdateTrail",), HOME)])
    ex = Executor(clients, sleep=sleep, monotonic=lambda: clock[0], propagation_timeout=timeout,
                  progress=lambda m: None)
    return ex, stub, plan, sleeps


@pytest.mark.parametrize("code", ["AccessDeniedException", "AccessDenied"])
def test_callers_own_access_denied_is_not_retried(code):
    ex, stub, plan, sleeps = _stubbed([(code, "User: x is not authorized: access denied")])
    with stub, pytest.raises(StepFailure) as info:
        ex.run(plan)
    assert sleeps == [] and info.value.code == code
    assert not classify_update_trail_error(code, "Access denied")[0]


def test_default_budget_retries_iam_propagation_for_about_two_minutes():
    denied = ("InvalidCloudWatchLogsRoleArnException",
              "Access denied. Check the trust relationships for your role.")
    ex, stub, plan, sleeps = _stubbed([denied] * 6)
    with stub:
        ex.run(plan)
    assert len(sleeps) == 6 and 60 <= sum(sleeps) <= 120


def test_default_budget_gives_up_after_two_minutes():
    denied = ("InvalidCloudWatchLogsLogGroupArnException",
              "Access denied. Verify in IAM that the role has adequate permissions.")
    ex, stub, plan, sleeps = _stubbed([denied] * 40)
    with stub, pytest.raises(StepFailure):
        ex.run(plan)
    assert sum(sleeps) <= 120 and sum(sleeps) >= 60
    # aws-facts 2.4: exponential backoff 2, 4, 8, 16 ... s, capped at 15-20 s
    assert sleeps[:4] == [2, 4, 8, 16] and 15 <= max(sleeps) <= 20


# ----------------------------------------------------------------------- CIS alarm topic

def test_plan_cis_rewrites_alarms_pointing_at_another_topic():
    from setup.wiring.cis_alarms import CisState, alarm_params, plan_cis
    from handlers.detection.cis import CIS_CONTROLS
    t = target()
    old, new = (f"arn:aws:sns:{HOME}:{ACCT}:old", f"arn:aws:sns:{HOME}:{ACCT}:new")
    from setup.wiring.cis_alarms import filter_params
    # issue 9: names carry the log group's id, trailwatch-cis-<gid>-<control>-<metric>
    name = {c: f"trailwatch-cis-{t.group_id}-{c.cis}-{c.metric_name}" for c in CIS_CONTROLS}
    state = CisState(filters={name[c]: filter_params(c, t) for c in CIS_CONTROLS},
                     alarms={name[c]: alarm_params(c, old, t) for c in CIS_CONTROLS},
                     topic_exists=True)
    assert plan_cis(t, state, old, create_topic=False) == []
    steps = plan_cis(t, state, new, create_topic=False)
    assert [s.operation for s in steps] == ["PutMetricAlarm"] * len(CIS_CONTROLS)
    assert all(s.params["AlarmActions"] == [new] for s in steps)
    assert [s.params["AlarmName"] for s in steps] == [name[c] for c in CIS_CONTROLS]


# ----------------------------------------------------------------------- remove

def _alarm(name):
    return {"AlarmName": name, "AlarmArn": f"arn:aws:cloudwatch:{HOME}:{ACCT}:alarm:{name}"}


def test_removal_steps_touch_only_trailwatch_resources_unit():
    from setup.wiring.cis_alarms import removal_steps
    t = target()
    ours = f"trailwatch-cis-{t.group_id}-4.1-UnauthorizedAPICalls"
    untagged = f"trailwatch-cis-{t.group_id}-4.3-RootAccountUsage"
    topic = f"arn:aws:sns:{HOME}:{ACCT}:trailwatch-cis-{t.group_id}"
    owned = {"Tags": [{"Key": TAG_KEY, "Value": TAG_VALUE}]}
    clients = FakeClients(HOME, {
        ("logs", "describe_metric_filters"): {"metricFilters": [
            {"filterName": ours}, {"filterName": "my-root-filter"},
            {"filterName": "trailwatch-cis-0badc0de-4.1-UnauthorizedAPICalls"}]},  # another group's
        ("cloudwatch", "describe_alarms"): lambda **kw: {"MetricAlarms": [
            _alarm(a) for a in [ours, untagged, "my-alarm"]
            if a.startswith(kw.get("AlarmNamePrefix", ""))]},
        ("cloudwatch", "list_tags_for_resource"): lambda **kw: (
            owned if kw["ResourceARN"].endswith(ours) else {"Tags": []}),
        ("sns", "get_topic_attributes"): {"Attributes": {}},
        ("sns", "list_tags_for_resource"): {"Tags": [{"Key": "team", "Value": "sec"}]},
    })
    steps, notes = removal_steps(clients, t, [])
    assert any(topic in n for n in notes)                      # says why the topic stays
    assert any(untagged in n for n in notes)                   # ... and why the alarm stays
    deleted = [json.dumps(s.params) for s in steps]
    assert not any(x in d for d in deleted for x in ("my-root-filter", "my-alarm", "0badc0de"))
    assert "DeleteTopic" not in [s.operation for s in steps]
    assert [s.params for s in steps if s.operation == "DeleteAlarms"] == [{"AlarmNames": [ours]}]
    assert "DeleteMetricFilter" in [s.operation for s in steps]
    assert all(s.destructive for s in steps)
    clients.responses[("sns", "list_tags_for_resource")] = owned
    assert "DeleteTopic" in [s.operation for s in removal_steps(clients, t, [])[0]]
    # a log group still serving another trail keeps its CIS resources (issue 9: provably unused)
    steps, notes = removal_steps(clients, t, ["arn:aws:cloudtrail:eu-west-1:1:trail/other"])
    assert steps == [] and any("trail/other" in n for n in notes)


@pytest.mark.parametrize("code,message,retry", [
    ("InvalidCloudWatchLogsLogGroupArnException",
     "Access denied. Verify in IAM that the role has adequate permissions.", True),
    ("InvalidCloudWatchLogsLogGroupArnException", "Access denied. Check the permissions for your "
     "role.", True),
    ("InvalidCloudWatchLogsRoleArnException",
     "Access denied. Check the trust relationships for your role.", True),
    ("ConflictException", "wait a few minutes", True),
    ("ThrottlingException", "Rate exceeded", True),
    ("TooManyRequestsException", "slow down", True),
    ("InvalidCloudWatchLogsLogGroupArnException",
     "Check the log group ARN: CloudTrail can't validate it.", False),
    ("InvalidCloudWatchLogsLogGroupArnException",
     "CloudTrail cannot validate the specified log group ARN.", False),
    ("InvalidCloudWatchLogsRoleArnException", "The role is invalid", False),
    ("CloudWatchLogsDeliveryUnavailableException", "Cannot set a CloudWatch Logs delivery", False),
    ("InvalidHomeRegionException", "home region", False),
    ("TrailNotFoundException", "Unknown trail", False),
    ("AccessDeniedException", "access denied", False),
    ("InsufficientDependencyServiceAccessPermissionException", "Access denied", False),
])
def test_update_trail_retry_classification(code, message, retry):
    """aws-facts 2.4: retry only IAM propagation ("Access denied" on the two ARN errors),
    conflicts and throttling; every other error stops with an explanation."""
    retryable, why = classify_update_trail_error(code, message)
    assert retryable is retry and why


@pytest.mark.parametrize("code,phrase", [
    ("InvalidHomeRegionException", "home region"),
    ("CloudWatchLogsDeliveryUnavailableException", "Region"),
    ("TrailNotFoundException", "ARN"),
])
def test_non_retryable_update_trail_errors_say_what_to_do(code, phrase):
    assert phrase in classify_update_trail_error(code, "x")[1]
    assert ":*" in classify_update_trail_error("InvalidCloudWatchLogsLogGroupArnException",
                                               "CloudTrail can't validate it")[1]


def test_removal_steps_are_exact_api_calls_in_the_home_region():
    from setup.wiring.cis_alarms import removal_steps
    t = target()
    gid = t.group_id
    topic = f"arn:aws:sns:{HOME}:{ACCT}:trailwatch-cis-{gid}"
    a41, a43 = (f"trailwatch-cis-{gid}-4.1-UnauthorizedAPICalls",
                f"trailwatch-cis-{gid}-4.3-RootAccountUsage")
    tagged = {"Tags": [{"Key": TAG_KEY, "Value": TAG_VALUE}]}
    clients = FakeClients("us-east-1", {
        ("logs", "describe_metric_filters"): {"metricFilters": [
            {"filterName": a43}, {"filterName": a41}]},
        ("cloudwatch", "describe_alarms"): {"MetricAlarms": [_alarm(a41), _alarm(a43)]},
        ("cloudwatch", "list_tags_for_resource"): tagged,
        ("sns", "get_topic_attributes"): {"Attributes": {}},
        ("sns", "list_tags_for_resource"): tagged,
    })
    steps, _ = removal_steps(clients, t, [])
    assert [(s.service, s.operation, s.params, s.region) for s in steps] == [
        ("logs", "DeleteMetricFilter", {"logGroupName": t.log_group, "filterName": a41}, HOME),
        ("logs", "DeleteMetricFilter", {"logGroupName": t.log_group, "filterName": a43}, HOME),
        ("cloudwatch", "DeleteAlarms", {"AlarmNames": [a41, a43]}, HOME),
        ("sns", "DeleteTopic", {"TopicArn": topic}, HOME),
    ]
    assert all(s.message for s in steps)
    assert [s.iam_actions for s in steps] == [("logs:DeleteMetricFilter",)] * 2 + [
        ("cloudwatch:DeleteAlarms",), ("sns:DeleteTopic",)]      # what --check-permissions lists
    assert {r for r, _ in clients.calls_to("sns", "get_topic_attributes")} == {HOME}
    assert clients.calls_to("sns", "list_tags_for_resource") == [(HOME, {"ResourceArn": topic})]
    assert [kw["TopicArn"] for _, kw in clients.calls_to("sns", "get_topic_attributes")] == [topic]
    assert {r for r, _ in clients.calls_to("cloudwatch", "describe_alarms")} == {HOME}
    # nothing of ours left: no steps, and a missing topic is not an error
    from tests.fakes import client_error
    empty = FakeClients("us-east-1", {("sns", "get_topic_attributes"):
                                      client_error("NotFound", "no topic")})
    assert removal_steps(empty, t, [])[0] == []


@pytest.mark.parametrize("code,message,phrase,not_phrase", [
    ("InvalidCloudWatchLogsRoleArnException", "The role is invalid", "trust policy", ":*"),
    ("InvalidCloudWatchLogsLogGroupArnException", "CloudTrail cannot validate the ARN", ":*",
     "trust policy"),
    ("InvalidHomeRegionException", "cannot validate: wrong region", "home region", ":*"),
    ("AccessDeniedException", "no", "check-permissions", "IAM has not propagated"),
    ("AccessDenied", "no", "check-permissions", "IAM has not propagated"),
    ("KmsKeyNotFoundException", "no key", "refused", "check-permissions"),
    ("InvalidCloudWatchLogsRoleArnException", "Access denied. Check the trust relationships",
     "propagated", "check-permissions"),
])
def test_each_update_trail_error_gets_its_own_explanation(code, message, phrase, not_phrase):
    why = classify_update_trail_error(code, message)[1]
    assert phrase in why and not_phrase not in why
