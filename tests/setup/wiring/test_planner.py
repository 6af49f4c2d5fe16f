"""The planner, without AWS: fresh, partial, converged, brownfield org upgrade, refusals."""

from __future__ import annotations

import json

import pytest

from setup.wiring.models import TAG_KEY, TAG_VALUE, Target, Trail, stream_policy, trust_policy
from setup.wiring.planner import build_plan
from setup.wiring.state import CurrentState, LogGroupState, RoleState
from setup.errors import SetupError

ACCT = "111111111111"


def make_target(org=False, kms=None, trail_group=None, trail_role=None, name="main",
                group="CloudTrail/main", role="trailwatch-cwl-main"):
    trail = Trail(name=name, arn=f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/{name}",
                  home_region="us-east-1", owner_account=ACCT, is_org=org, is_multi_region=True,
                  log_group_arn=trail_group, role_arn=trail_role)
    return Target(trail=trail, account=ACCT, log_group=group, role_name=role,
                  org_id="o-abc1234567" if org else None, kms_key=kms)


def converged_state(t: Target, policy=None) -> CurrentState:
    lg = LogGroupState(t.log_group, t.log_group_arn, "STANDARD", t.retention_days or 365, None,
                       dict(t.tags))
    role = RoleState(t.role_name, t.role_arn, trust_policy(), dict(t.tags),
                     {"trailwatch-cloudtrail-delivery": policy or stream_policy(t)})
    return CurrentState(lg, role)


def apis(plan):
    return [s.api for s in plan.steps]


def test_fresh_account_plans_everything_in_order():
    plan = build_plan(make_target(), CurrentState(None, None))
    assert apis(plan) == ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "iam:CreateRole",
                          "iam:PutRolePolicy", "cloudtrail:UpdateTrail"]
    create = plan.steps[0].params
    # issue 9: ownership tag per trail beside managed-by=trailwatch
    assert create["logGroupClass"] == "STANDARD" and create["tags"] == {
        TAG_KEY: TAG_VALUE, "trailwatch:trail:78472df6": f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/main"}
    ut = plan.steps[-1].params
    assert ut["CloudWatchLogsLogGroupArn"].endswith(":log-group:CloudTrail/main:*")
    assert ut["Name"] == f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/main"
    assert json.loads(plan.steps[2].params["AssumeRolePolicyDocument"]) == trust_policy()
    assert all(s.message for s in plan.steps)
    assert "iam:PassRole" in plan.iam_actions and "cloudtrail:UpdateTrail" in plan.iam_actions


def test_converged_setup_plans_nothing():
    t = make_target(trail_group=f"arn:aws:logs:us-east-1:{ACCT}:log-group:CloudTrail/main:*",
                    trail_role=f"arn:aws:iam::{ACCT}:role/trailwatch-cwl-main")
    assert build_plan(t, converged_state(t)).steps == []


def test_partial_setup_plans_only_what_is_missing():
    from dataclasses import replace
    t = replace(make_target(), retention_days=365)   # issue 9: only an explicit value changes it
    state = converged_state(t)
    state.log_group.retention = 30
    state.role.inline.clear()
    plan = build_plan(t, state)
    assert apis(plan) == ["logs:PutRetentionPolicy", "iam:PutRolePolicy", "cloudtrail:UpdateTrail"]
    assert "was 30 days -> 365 days" in plan.steps[0].message and not plan.steps[0].destructive


def test_brownfield_org_upgrade_shows_the_policy_diff_adding_the_o_id():
    single = make_target(org=False)
    org = make_target(org=True, trail_group=single.log_group_arn, trail_role=single.role_arn)
    state = converged_state(org, policy=stream_policy(single))
    state.role.inline = {"console-cwl-policy": stream_policy(single)}   # adopted, other name
    state.role.tags = {}
    plan = build_plan(org, state)
    assert apis(plan) == ["iam:PutRolePolicy"]
    step = plan.steps[0]
    assert step.params["PolicyName"] == "console-cwl-policy"   # updated in place
    added = [ln for ln in step.diff.splitlines() if ln.startswith("+") and not ln.startswith("++")]
    removed = [ln for ln in step.diff.splitlines() if ln.startswith("-") and not ln.startswith("--")]
    oid = "log-group:CloudTrail/main:log-stream:o-abc1234567_*"
    assert sum(oid in ln for ln in added) == 2 and not any(oid in ln for ln in removed)
    assert any("not tagged by trailwatch" in n for n in plan.notes)


def test_role_without_cloudtrail_trust_gets_a_statement_added():
    from dataclasses import replace
    # issue 9: another service in the trust is accepted only knowingly (and reported as WARN)
    t = replace(make_target(), accepted_services=("ec2.amazonaws.com",))
    state = converged_state(t)
    other = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    state.role.trust = other
    plan = build_plan(t, state)
    step = [s for s in plan.steps if s.operation == "UpdateAssumeRolePolicy"][0]
    merged = json.loads(step.params["PolicyDocument"])
    assert merged["Statement"][0] == other["Statement"][0]
    assert merged["Statement"][1]["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert any(n.startswith("WARN") and "ec2.amazonaws.com" in n for n in plan.notes)


@pytest.mark.parametrize("where", ["trail", "group", "role", "group-tag"])
def test_control_tower_resources_are_refused(where):
    kw = {"trail": {"name": "aws-controltower-BaselineCloudTrail"},
          "group": {"group": "aws-controltower/CloudTrailLogs"},
          "role": {"role": "aws-controltower-CloudWatchLogsRole"}, "group-tag": {}}[where]
    t = make_target(**kw)
    state = converged_state(t)
    if where == "group-tag":
        state.log_group.tags["aws-controltower:managed"] = "true"
    with pytest.raises(SetupError, match="Control Tower"):
        build_plan(t, state)


def test_infrequent_access_group_is_refused():
    t = make_target()
    state = converged_state(t)
    state.log_group.log_group_class = "INFREQUENT_ACCESS"
    with pytest.raises(SetupError, match="subscription filters"):
        build_plan(t, state)


KEY = "arn:aws:kms:us-east-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_kms_key_without_logs_statement_is_refused_with_the_statement_to_add():
    t = make_target(kms=KEY)
    state = CurrentState(None, None, kms_policy={"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
         "Action": "kms:*", "Resource": "*"}]})
    with pytest.raises(SetupError) as info:
        build_plan(t, state)
    stmt = json.loads(info.value.remediation.split("\n", 1)[1])
    assert stmt["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    assert stmt["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"] == \
        t.log_group_arn_bare


@pytest.mark.parametrize("condition", [
    None,
    {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                   "arn:aws:logs:us-east-1:111111111111:log-group:CloudTrail/main"}},
    {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:111111111111:*"}},
])
def test_kms_key_with_documented_statement_is_accepted(condition):
    t = make_target(kms=KEY)
    stmt = {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
            "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                       "kms:Describe*"], "Resource": "*"}
    if condition:
        stmt["Condition"] = condition
    plan = build_plan(t, CurrentState(None, None, kms_policy={"Statement": [stmt]}))
    assert plan.steps[0].params["kmsKeyId"] == KEY


@pytest.mark.parametrize("bad", [
    {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                   "arn:aws:logs:us-east-1:111111111111:log-group:CloudTrail/main:*"}},  # trap 17
    {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                   "arn:aws:logs:us-east-1:111111111111:log-group:Other"}},
])
def test_kms_key_with_wrong_condition_is_refused(bad):
    t = make_target(kms=KEY)
    stmt = {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
            "Action": "kms:*", "Resource": "*", "Condition": bad}
    with pytest.raises(SetupError):
        build_plan(t, CurrentState(None, None, kms_policy={"Statement": [stmt]}))


def test_global_logs_principal_is_not_enough():
    t = make_target(kms=KEY)
    stmt = {"Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "kms:*",
            "Resource": "*"}
    with pytest.raises(SetupError):
        build_plan(t, CurrentState(None, None, kms_policy={"Statement": [stmt]}))


def test_adopted_group_gets_kms_associated():
    t = make_target(kms=KEY)
    state = converged_state(t)
    state.kms_policy = {"Statement": [{"Effect": "Allow", "Principal": {
        "Service": "logs.us-east-1.amazonaws.com"}, "Action": "kms:*", "Resource": "*"}]}
    assert "logs:AssociateKmsKey" in apis(build_plan(t, state))


# ---- trap 17, more cases (issue 15): each statement judged on its own, key policy required

LOGS_STMT = {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
             "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                        "kms:Describe*"], "Resource": "*",
             "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                                         "arn:aws:logs:us-east-1:111111111111:log-group:"
                                         "CloudTrail/main"}}}


@pytest.mark.parametrize("policy", [None, {}, {"Statement": []}])
def test_kms_key_without_a_readable_policy_is_refused(policy):
    with pytest.raises(SetupError):
        build_plan(make_target(kms=KEY), CurrentState(None, None, kms_policy=policy))


@pytest.mark.parametrize("before", [
    {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:ScheduleKeyDeletion",
     "Resource": "*"},
    {"Effect": "Allow", "Principal": {"Service": "logs.eu-west-1.amazonaws.com"},
     "Action": "kms:*", "Resource": "*"},
    {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
     "Action": "kms:Describe*", "Resource": "*"},
    {"Effect": "Allow", "Principal": {"Service": "logs.us-east-1.amazonaws.com"},
     "Action": "kms:*", "Resource": "*", "Condition": {"ArnEquals": {
         "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:111111111111:log-group:x"}}},
])
def test_documented_statement_after_unrelated_ones_is_found(before):
    plan = build_plan(make_target(kms=KEY),
                      CurrentState(None, None, kms_policy={"Statement": [before, LOGS_STMT]}))
    assert plan.steps[0].params["kmsKeyId"] == KEY
    with pytest.raises(SetupError):      # ... and the unrelated one alone is not enough
        build_plan(make_target(kms=KEY), CurrentState(None, None,
                                                      kms_policy={"Statement": [before]}))


def test_statement_that_cannot_encrypt_is_not_enough():
    stmt = dict(LOGS_STMT, Action=["kms:Decrypt*", "kms:Describe*"])
    with pytest.raises(SetupError):
        build_plan(make_target(kms=KEY), CurrentState(None, None,
                                                      kms_policy={"Statement": [stmt]}))


@pytest.mark.parametrize("op,value,ok", [
    ("StringEquals", "arn:aws:logs:us-east-1:111111111111:log-group:CloudTrail/main", True),
    ("StringLike", "arn:aws:logs:us-east-1:111111111111:log-group:CloudTrail/*", True),
    ("ArnLike", "arn:aws:logs:us-east-1:111111111111:log-group:Other*", False),
    ("ArnEquals", "arn:aws:logs:us-east-1:222222222222:log-group:CloudTrail/main", False),
    ("StringNotEquals", "arn:aws:logs:us-east-1:111111111111:log-group:CloudTrail/main", False),
])
def test_kms_condition_operators(op, value, ok):
    stmt = dict(LOGS_STMT, Condition={op: {"kms:EncryptionContext:aws:logs:arn": value}})
    state = CurrentState(None, None, kms_policy={"Statement": stmt})   # a single object
    if ok:
        assert build_plan(make_target(kms=KEY), state).steps
    else:
        with pytest.raises(SetupError):
            build_plan(make_target(kms=KEY), state)


def test_statements_with_string_or_missing_principals_are_skipped_not_fatal():
    odd = [{"Effect": "Allow", "Principal": "*", "Action": "kms:Describe*", "Resource": "*"},
           {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]
    plan = build_plan(make_target(kms=KEY),
                      CurrentState(None, None, kms_policy={"Statement": odd + [LOGS_STMT]}))
    assert plan.steps[0].params["kmsKeyId"] == KEY
