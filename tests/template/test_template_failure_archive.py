"""Issue 11's template block: the failure archive, the 1 MiB queue, RuleErrors, and RulesFile read
from S3/SSM with access to exactly that object or parameter."""

from __future__ import annotations

import pytest

from tests.template.test_template import cfn  # noqa: F401  (the translated template, module-scoped)


def test_failure_archive_is_private_encrypted_and_expires(cfn):
    bucket = cfn["Resources"]["FailureArchiveBucket"]["Properties"]
    enc = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert enc["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == {
        "Ref": "FailureArchiveRetentionDays"}
    policy = cfn["Resources"]["FailureArchiveBucketPolicy"]["Properties"]["PolicyDocument"]
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queue_size_and_environment_agree(cfn):
    queue = cfn["Resources"]["FailureQueue"]["Properties"]
    env = cfn["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert queue["MaximumMessageSize"] == 1_048_576
    assert int(env["FAILURE_QUEUE_MAX_BYTES"]) == queue["MaximumMessageSize"]
    assert env["FAILURE_ARCHIVE_BUCKET"] == {"Ref": "FailureArchiveBucket"}
    assert env["EXPECTED_CHANGE_PRINCIPALS"] == {"Ref": "ExpectedChangePrincipals"}
    assert cfn["Parameters"]["ExpectedChangePrincipals"]["Default"] == ""


def _policy_statements(cfn):
    role = cfn["Resources"]["ProcessorFunctionRole"]["Properties"]
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_function_may_write_only_failure_records_to_the_archive(cfn):
    (st,) = [s for s in _policy_statements(cfn) if s.get("Sid") == "WriteFailureArchive"]
    assert st["Action"] == ["s3:PutObject"]
    assert st["Resource"] == {"Fn::Sub": "${FailureArchiveBucket.Arn}/failures/*"}


def _select_split(expr, value: str) -> str:
    """Evaluate !Select [i, !Split [sep, !Sub "x${RulesFile}" | !Ref RulesFile]] for a value."""
    index, split = expr["Fn::Select"]
    sep, source = split["Fn::Split"]
    text = ("x" + value) if "Fn::Sub" in source else value
    parts = text.split(sep)
    return parts[int(index)]


@pytest.mark.parametrize("value,s3,ssm", [
    ("", False, False), ("/opt/trailwatch/rules.json", False, False),
    ("s3://my-bucket/trailwatch/rules.json", True, False), ("ssm:/trailwatch/rules", False, True),
    ("/opt/s3://odd", False, False)])
def test_rules_file_conditions_follow_the_documented_forms(cfn, value, s3, ssm):
    conds = cfn["Conditions"]
    for name, want in (("RulesFromS3", s3), ("RulesFromSsm", ssm)):
        has, equals = conds[name]["Fn::And"]
        assert has == {"Condition": "HasRulesFile"}
        lhs, expr = equals["Fn::Equals"]
        assert (value != "" and _select_split(expr, value) == lhs) == want, name


def test_rules_file_read_access_is_exactly_that_object_or_parameter(cfn):
    role = cfn["Resources"]["ProcessorFunctionRole"]["Properties"]
    conditional = [s["Fn::If"] for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]
                   if "Fn::If" in s]
    by_cond = {c: st for c, st, _ in conditional}
    s3 = by_cond["RulesFromS3"]
    assert s3["Action"] == ["s3:GetObject"]
    template, names = s3["Resource"]["Fn::Sub"]
    assert template == "arn:${AWS::Partition}:s3:::${Path}"
    assert _select_split(names["Path"], "s3://my-bucket/trailwatch/rules.json") == \
        "my-bucket/trailwatch/rules.json"
    ssm = by_cond["RulesFromSsm"]
    assert ssm["Action"] == ["ssm:GetParameter"]
    template, names = ssm["Resource"]["Fn::Sub"]
    assert template.endswith(":parameter${Name}")
    assert _select_split(names["Name"], "ssm:/trailwatch/rules") == "/trailwatch/rules"
