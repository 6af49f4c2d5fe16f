"""Policy builders: exact documents for single, org and group scope, in three partitions."""

from __future__ import annotations

import pytest

from setup.wiring.models import (ModelError, Target, Trail, default_role_name, delivery_sids,
                                 expected_stream_arns, kms_key_statement, partition_for_region,
                                 stream_policy, trust_policy, validate_retention)
from setup.policy_eval import evaluate


def target(region="us-east-2", org=False, scope="documented", caller="111111111111",
           owner="111111111111", group="CloudTrail/DefaultLogGroupTest"):
    p = partition_for_region(region)
    trail = Trail(name="t", arn=f"arn:{p}:cloudtrail:{region}:{owner}:trail/t", home_region=region,
                  owner_account=owner, is_org=org, is_multi_region=True)
    return Target(trail=trail, account=caller, log_group=group, role_name="r",
                  stream_scope=scope, org_id="o-exampleorgid" if org else None)


def test_trust_policy_is_exactly_the_documented_one():
    assert trust_policy() == {"Version": "2012-10-17", "Statement": [{
        "Sid": "", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    assert "Condition" not in trust_policy()["Statement"][0]


def test_org_policy_matches_the_user_guide_document():
    """CloudTrail UG, 'policy-cwl-org': the two resources, both actions, verbatim ARNs."""
    res = ["arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail/DefaultLogGroupTest:"
           "log-stream:111111111111_CloudTrail_us-east-2*",
           "arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail/DefaultLogGroupTest:"
           "log-stream:o-exampleorgid_*"]
    t = target(org=True)
    create, put = delivery_sids(t)   # issue 9: trailwatch's own Sids, one pair per trail
    assert create.startswith("TrailwatchCreateLogStream") and create.isalnum() and put.isalnum()
    assert stream_policy(t) == {"Version": "2012-10-17", "Statement": [
        {"Sid": create, "Effect": "Allow", "Action": ["logs:CreateLogStream"], "Resource": res},
        {"Sid": put, "Effect": "Allow", "Action": ["logs:PutLogEvents"], "Resource": res}]}


def test_single_account_policy_has_only_the_account_prefix():
    doc = stream_policy(target())
    for stmt in doc["Statement"]:
        assert stmt["Resource"] == ["arn:aws:logs:us-east-2:111111111111:log-group:"
                                    "CloudTrail/DefaultLogGroupTest:log-stream:"
                                    "111111111111_CloudTrail_us-east-2*"]
    assert {a for s in doc["Statement"] for a in s["Action"]} == {"logs:CreateLogStream",
                                                                 "logs:PutLogEvents"}


def test_group_scope_wildcards_every_stream():
    for stmt in stream_policy(target(scope="group", org=True))["Statement"]:
        assert stmt["Resource"] == ["arn:aws:logs:us-east-2:111111111111:log-group:"
                                    "CloudTrail/DefaultLogGroupTest:log-stream:*"]


@pytest.mark.parametrize("region,partition", [("us-east-1", "aws"), ("cn-north-1", "aws-cn"),
                                              ("us-gov-west-1", "aws-us-gov")])
def test_partition_aware_arns(region, partition):
    t = target(region=region, org=True)
    assert t.log_group_arn == (f"arn:{partition}:logs:{region}:111111111111:log-group:"
                               "CloudTrail/DefaultLogGroupTest:*")
    assert t.role_arn == f"arn:{partition}:iam::111111111111:role/r"
    for res in stream_policy(t)["Statement"][0]["Resource"]:
        assert res.startswith(f"arn:{partition}:logs:{region}:111111111111:")


def test_delegated_admin_adds_the_trail_owner_prefix():
    t = target(org=True, caller="222222222222", owner="111111111111")
    res = stream_policy(t)["Statement"][0]["Resource"]
    assert [r.split(":log-stream:")[1] for r in res] == [
        "222222222222_CloudTrail_us-east-2*", "111111111111_CloudTrail_us-east-2*",
        "o-exampleorgid_*"]
    assert all(":222222222222:log-group:" in r for r in res)   # group lives with the caller


def test_policy_covers_the_exact_stream_names_cloudtrail_uses():
    t = target(org=True)
    docs = [stream_policy(t)]
    arns = expected_stream_arns(t, ["333333333333"]) + [
        expected_stream_arns(t, [])[0] + "_2"]   # high-volume extra stream "_number"
    for arn in arns:
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            assert evaluate(docs, action, arn).allowed, (action, arn)
    single = [stream_policy(target())]
    member = expected_stream_arns(t, ["333333333333"])[1]
    assert not evaluate(single, "logs:PutLogEvents", member).allowed   # trap 4


def test_kms_statement_uses_regional_principal_and_bare_arn():
    stmt = kms_key_statement(target())
    assert stmt["Principal"] == {"Service": "logs.us-east-2.amazonaws.com"}
    arn = stmt["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    assert arn.endswith(":log-group:CloudTrail/DefaultLogGroupTest") and not arn.endswith(":*")


def test_role_name_default_is_bounded_and_stable():
    assert default_role_name("org") == "trailwatch-cwl-org"
    # issue 9: the CLI passes the home region, so same-named trails in two regions differ
    assert default_role_name("org", "us-east-1") == "trailwatch-cwl-org-us-east-1"
    assert default_role_name("org", "us-east-1") != default_role_name("org", "eu-west-1")
    long = default_role_name("x" * 128)
    assert len(long) == 64 and long == default_role_name("x" * 128)
    assert default_role_name("x" * 128) != default_role_name("x" * 127 + "y")


def test_retention_only_accepts_cloudwatch_values():
    assert validate_retention(365) == 365
    with pytest.raises(ModelError, match="one of"):
        validate_retention(364)


def test_policy_evaluator_deny_wins_and_wildcards():
    doc = {"Statement": [
        {"Effect": "Allow", "Action": "logs:*", "Resource": "arn:x:log-stream:a?c*"},
        {"Effect": "Deny", "Action": "logs:PutLogEvents", "Resource": "arn:x:log-stream:abcd"}]}
    assert evaluate([doc], "logs:CreateLogStream", "arn:x:log-stream:abcd").allowed
    assert evaluate([doc], "LOGS:createlogstream", "arn:x:log-stream:aXc").allowed
    assert not evaluate([doc], "logs:PutLogEvents", "arn:x:log-stream:abcd").allowed
    assert not evaluate([doc], "logs:CreateLogStream", "arn:x:log-stream:ac").allowed
