"""Issue 9, without AWS: merged delivery policies, semantic comparison, trust findings,
retention, role paths, partitions and plan steps that round-trip through a saved plan."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setup.wiring.models import (Target, Trail, covers_delivery, delivery_sids, grants,
                                 merge_delivery_policy, partition_for_region, stream_policy,
                                 trust_findings, trust_policy)
from setup.wiring.planner import Step, build_plan
from setup.wiring.state import CurrentState, LogGroupState, RoleState
from setup.errors import SetupError

ACCT = "111111111111"


def target(name="main", region="us-east-1", partition="aws", **kw) -> Target:
    trail = Trail(name=name, arn=f"arn:{partition}:cloudtrail:{region}:{ACCT}:trail/{name}",
                  home_region=region, owner_account=ACCT, is_org=False, is_multi_region=True)
    return Target(trail=trail, account=ACCT, log_group=f"CloudTrail/{name}", role_name="shared",
                  **kw)


def role(t: Target, inline=None, trust=None, tags=None, path="/") -> RoleState:
    return RoleState("shared", f"arn:aws:iam::{ACCT}:role{path}shared", trust or trust_policy(),
                     dict(t.tags) if tags is None else tags, inline or {}, path=path)


def group(t: Target, retention=365) -> LogGroupState:
    return LogGroupState(t.log_group, t.log_group_arn, "STANDARD", retention, None, dict(t.tags))


# ----------------------------------------------------------------------------------- policies

def test_merge_keeps_other_trails_and_other_sids_and_replaces_only_ours():
    a, b = target("a"), target("b")
    other = {"Sid": "TeamX", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    stale = dict(stream_policy(a)["Statement"][0], Resource=["arn:aws:logs:old"])
    doc = {"Version": "2012-10-17", "Statement": [other, stale] + stream_policy(b)["Statement"]}
    merged = merge_delivery_policy(doc, a)
    sids = [s.get("Sid") for s in merged["Statement"]]
    assert sids == ["TeamX", *delivery_sids(b), *delivery_sids(a)]
    assert covers_delivery(merged, a) and covers_delivery(merged, b)
    assert merge_delivery_policy(merged, a) == merged          # idempotent


statement = st.fixed_dictionaries({
    "Sid": st.from_regex(r"[A-Za-z0-9]{0,12}", fullmatch=True),
    "Effect": st.sampled_from(["Allow", "Deny"]),
    "Action": st.one_of(st.sampled_from(["s3:*", "logs:PutLogEvents", "ec2:Describe*"]),
                        st.lists(st.sampled_from(["sqs:SendMessage", "logs:CreateLogStream"]),
                                 min_size=1, max_size=2)),
    "Resource": st.sampled_from(["*", ["arn:aws:s3:::b/*"], "arn:aws:logs:us-east-1:1:x"])})


@settings(max_examples=200, deadline=None)
@given(st.lists(statement, max_size=6))
def test_merge_preserves_every_foreign_statement(others):
    t = target()
    ours = set(delivery_sids(t))
    others = [s for s in others if s["Sid"] not in ours]
    merged = merge_delivery_policy({"Version": "2012-10-17", "Statement": others}, t)
    assert merged["Statement"][:len(others)] == others
    assert grants(stream_policy(t)) <= grants(merged)


def test_semantic_comparison_ignores_sid_order_and_string_or_list():
    t = target()
    (res,) = stream_policy(t)["Statement"][0]["Resource"]
    console = {"Statement": [
        {"Sid": "AWSCloudTrailPutLogEvents20141101", "Effect": "Allow",
         "Action": "logs:PutLogEvents", "Resource": res},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream"], "Resource": [res]}]}
    combined = {"Statement": {"Effect": "Allow", "Action": ["logs:CreateLogStream",
                                                            "logs:PutLogEvents"], "Resource": res}}
    assert covers_delivery(console, t) and covers_delivery(combined, t)
    conditional = {"Statement": [dict(s, Condition={"Bool": {"aws:SecureTransport": "true"}})
                                 for s in console["Statement"]]}
    assert not covers_delivery(conditional, t)
    with_deny = {"Statement": console["Statement"] + [
        {"Effect": "Deny", "Action": "logs:*", "Resource": "*"}]}
    assert not covers_delivery(with_deny, t)
    plan = build_plan(t, CurrentState(group(t), role(t, {"console": console})))
    assert [s.api for s in plan.steps] == ["cloudtrail:UpdateTrail"]   # no policy write


def test_second_trail_on_a_shared_role_merges_into_the_first_ones_policy():
    a, b = target("a"), target("b")
    state = CurrentState(None, role(a, {"trailwatch-cloudtrail-delivery": stream_policy(a)}))
    plan = build_plan(b, state)
    put = [s for s in plan.steps if s.operation == "PutRolePolicy"][0]
    doc = json.loads(put.params["PolicyDocument"])
    assert covers_delivery(doc, a) and covers_delivery(doc, b)
    assert "TagRole" in [s.operation for s in plan.steps]       # b's ownership tag added


# ----------------------------------------------------------------------------------- trust

@pytest.mark.parametrize("stmt,kind", [
    ({"Effect": "Deny", "Principal": {"Service": "cloudtrail.amazonaws.com"},
      "Action": "sts:AssumeRole"}, "deny"),
    ({"Effect": "Deny", "Principal": "*", "Action": "sts:*"}, "deny"),
    ({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}, "foreign"),
    ({"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}, "foreign"),
    ({"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::222222222222:root"]},
      "Action": "sts:AssumeRole"}, "foreign"),
    ({"Effect": "Allow", "Principal": {"Federated": "cognito-identity.amazonaws.com"},
      "Action": "sts:AssumeRoleWithWebIdentity"}, "foreign"),
    ({"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"},
      "Action": "sts:AssumeRole"}, "foreign"),
    ({"Effect": "Allow", "Principal": {"Service": ["cloudtrail.amazonaws.com",
                                                   "lambda.amazonaws.com"]},
      "Action": "sts:AssumeRole"}, "foreign"),
    ({"Effect": "Deny", "Principal": {"Service": "ec2.amazonaws.com"},
      "Action": "sts:AssumeRole"}, None),
])
def test_trust_findings(stmt, kind):
    doc = trust_policy()
    doc["Statement"].append(stmt)
    f = trust_findings(doc)
    assert bool(f.denies) == (kind == "deny") and bool(f.foreign) == (kind == "foreign")
    t = target()
    state = CurrentState(group(t), role(t, trust=doc))
    if kind is None:
        build_plan(t, state)
    else:
        with pytest.raises(SetupError) as e:
            build_plan(t, state)
        assert e.value.code == ("TrustExplicitDeny" if kind == "deny" else "TrustTooBroad")


def test_accepted_service_is_a_warning_but_aws_star_never():
    doc = trust_policy()
    doc["Statement"].append({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com",
                                                              "AWS": "*"},
                             "Action": "sts:AssumeRole"})
    f = trust_findings(doc, ("ec2.amazonaws.com", "*"))
    assert f.accepted == ["ec2.amazonaws.com"] and f.foreign == ["AWS: *"]


# ----------------------------------------------------------------------------------- retention

@pytest.mark.parametrize("have,want,step,destructive", [
    (None, None, None, False),        # never expire stays never expire
    (3653, None, None, False),        # 10 years stays 10 years
    (30, None, None, False),
    (3653, 365, "was 3653 days -> 365 days", True),
    (None, 365, "was never expire -> 365 days", True),
    (30, 365, "was 30 days -> 365 days", False),
    (365, 365, None, False),
])
def test_retention_is_never_shortened_implicitly(have, want, step, destructive):
    t = replace(target(), retention_days=want)
    plan = build_plan(t, CurrentState(group(t, have), role(t, {"p": stream_policy(t)})))
    steps = [s for s in plan.steps if s.operation == "PutRetentionPolicy"]
    if step is None:
        assert steps == []
    else:
        (s,) = steps
        assert step in s.message and s.destructive is destructive
        assert s.to_json()["destructive"] is destructive


def test_new_group_gets_365_days():
    t = target()
    plan = build_plan(t, CurrentState(None, None))
    (s,) = [s for s in plan.steps if s.operation == "PutRetentionPolicy"]
    assert s.params["retentionInDays"] == 365 and not s.destructive


# ----------------------------------------------------------------------------------- references

def test_update_trail_uses_the_roles_arn_with_its_path():
    t = target()
    state = CurrentState(group(t), role(t, {"p": stream_policy(t)}, path="/service-role/"))
    (ut,) = [s for s in build_plan(t, state).steps if s.operation == "UpdateTrail"]
    assert ut.params["CloudWatchLogsRoleArn"] == f"arn:aws:iam::{ACCT}:role/service-role/shared"
    assert replace(t, role_path="/service-role/").role_arn == ut.params["CloudWatchLogsRoleArn"]


@pytest.mark.parametrize("region,partition", [("cn-northwest-1", "aws-cn"),
                                              ("us-gov-east-1", "aws-us-gov"),
                                              ("eu-isoe-west-1", "aws-iso-e"),
                                              ("us-isof-south-1", "aws-iso-f")])
def test_partition_from_botocore_and_from_the_trail_arn(region, partition):
    assert partition_for_region(region) == partition
    t = target(region=region, partition=partition)
    assert t.log_group_arn.startswith(f"arn:{partition}:logs:{region}:")
    assert t.role_arn.startswith(f"arn:{partition}:iam::")


def test_steps_round_trip_through_a_saved_plan():
    t = replace(target(), retention_days=30)
    plan = build_plan(t, CurrentState(group(t, 3653), None))
    again = [Step.from_json(json.loads(json.dumps(s.to_json()))) for s in plan.steps]
    assert again == plan.steps


def _apply_role_writes(plan, state: CurrentState) -> None:
    """What AWS would hold after the plan's IAM writes (enough to re-plan)."""
    for s in plan.steps:
        if s.operation == "PutRolePolicy":
            state.role.inline[s.params["PolicyName"]] = json.loads(s.params["PolicyDocument"])


@settings(max_examples=150, deadline=None)
@given(st.lists(statement, max_size=5), st.booleans(), st.sampled_from(["a", "b", "c"]))
def test_any_shared_policy_converges_and_keeps_the_other_trails_access(others, b_first, name):
    """Whatever else the shared policy holds (Denies included), applying trail A and then
    trail B (either order) converges: a third plan writes nothing and both stay covered unless
    a foreign Deny hits them (reported, never 'fixed' by rewriting)."""
    a, b = target("a"), target(name if name != "a" else "b")
    others = [s for s in others if not s["Sid"].startswith("Trailwatch")]
    t0 = a if not b_first else b
    state = CurrentState(None, role(t0, {"trailwatch-cloudtrail-delivery":
                                         {"Version": "2012-10-17", "Statement": others}}))
    for t in ((b, a) if b_first else (a, b)):
        _apply_role_writes(build_plan(t, state), state)
    for t in (a, b):
        again = build_plan(t, state)
        assert [s for s in again.steps if s.operation == "PutRolePolicy"] == []
        doc = state.role.inline["trailwatch-cloudtrail-delivery"]
        assert grants(stream_policy(t)) <= grants(doc)
    assert state.role.inline["trailwatch-cloudtrail-delivery"]["Statement"][:len(others)] == others


def test_ctrl_c_during_the_propagation_retry_is_a_report_not_a_traceback():
    import boto3
    from botocore.stub import Stubber

    from setup.aws import AwsClients
    from setup.wiring.executor import Executor, StepInterrupted
    from setup.wiring.planner import Plan

    t = target()
    clients = AwsClients(session=boto3.Session(region_name="us-east-1",
                                               aws_access_key_id="k", aws_secret_access_key="s"))
    ct = clients.client("cloudtrail", "us-east-1")
    stub = Stubber(ct)
    stub.add_client_error("update_trail", "InvalidCloudWatchLogsRoleArnException",
                          "Access denied. Check the trust relationships for your role.")

    def interrupted_sleep(seconds):
        raise KeyboardInterrupt
    first = Step("logs", "CreateLogGroup", {}, "m", (), "us-east-1")
    update = Step("cloudtrail", "UpdateTrail", {"Name": t.trail.arn}, "point", (), "us-east-1")
    later = Step("sns", "CreateTopic", {}, "topic", (), "us-east-1")
    ex = Executor(clients, sleep=interrupted_sleep, progress=lambda m: None)
    ex._call = lambda step, _real=ex._call: None if step is first else _real(step)
    with stub, pytest.raises(StepInterrupted) as e:
        ex.run(Plan(target=t, steps=[first, update, later]))
    report = e.value.report()
    assert "done     logs:CreateLogGroup" in report
    assert "INTERRUPTED cloudtrail:UpdateTrail" in report and "not run  sns:CreateTopic" in report


def test_a_merge_past_the_iam_inline_size_limit_is_refused_before_any_write():
    big = {"Version": "2012-10-17", "Statement": [
        {"Sid": f"Other{i}", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::bucket-{i:04d}/" + "x" * 60} for i in range(63)]}
    t = target()
    assert len(json.dumps(big, separators=(",", ":"))) < 10_240
    with pytest.raises(SetupError) as e:
        build_plan(t, CurrentState(group(t), role(t, {"trailwatch-cloudtrail-delivery": big})))
    assert e.value.code == "PolicySizeLimit"
