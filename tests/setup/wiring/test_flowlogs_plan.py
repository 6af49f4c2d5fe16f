"""Issue 21: the pure half of `trailwatch flow-logs` (setup.wiring.flowlogs): the seeds' statements,
Sid-insensitive merging and un-merging, condition evaluation, the plan's order and refusals."""

from __future__ import annotations

import json

import pytest

from setup.errors import SetupError, UsageError
from setup.wiring import flowlogs as fw

ACCT, REGION = "123456789012", "eu-west-1"


def target(spec: str = "s3://logs-bucket/flow", **kw) -> fw.FlowTarget:
    return fw.FlowTarget(ACCT, REGION, "aws", kw.pop("resources", (("VPC", "vpc-0123456789abcdef0"),)),
                         fw.parse_destination(spec), **kw)


def test_statements_are_the_seeds_scoped_and_conditioned():
    write, acl = fw.s3_delivery_statements(target())
    assert write["Sid"] == "AWSLogDeliveryWrite" and acl["Sid"] == "AWSLogDeliveryAclCheck"
    assert write["Principal"] == acl["Principal"] == {"Service": "delivery.logs.amazonaws.com"}
    assert write["Action"] == "s3:PutObject" and acl["Action"] == "s3:GetBucketAcl"
    assert write["Resource"] == [f"arn:aws:s3:::logs-bucket/flow/AWSLogs/{ACCT}/*"]
    assert acl["Resource"] == ["arn:aws:s3:::logs-bucket"]
    assert write["Condition"]["StringEquals"] == {"s3:x-amz-acl": "bucket-owner-full-control",
                                                  "aws:SourceAccount": [ACCT]}
    for st in (write, acl):
        assert st["Condition"]["ArnLike"] == {"aws:SourceArn": [f"arn:aws:logs:{REGION}:{ACCT}:*"]}


def test_partition_comes_from_the_target():
    t = fw.FlowTarget(ACCT, "cn-north-1", "aws-cn", (), fw.parse_destination("s3://cn-bucket"))
    write, acl = fw.s3_delivery_statements(t)
    assert write["Resource"] == [f"arn:aws-cn:s3:::cn-bucket/AWSLogs/{ACCT}/*"]
    assert acl["Condition"]["ArnLike"]["aws:SourceArn"] == [f"arn:aws-cn:logs:cn-north-1:{ACCT}:*"]


def test_kms_statement_is_the_documented_one_with_both_conditions():
    st = fw.kms_key_statement(target())
    assert st["Sid"] == "Allow Logs Delivery to use the key"
    assert st["Action"] == ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*",
                            "kms:GenerateDataKey*", "kms:DescribeKey"]
    assert st["Condition"] == fw.confused_deputy(target())


@pytest.mark.parametrize("spec, bucket, prefix", [
    ("s3://b-1", "b-1", ""), ("s3://b-1/", "b-1", ""), ("s3://b-1/a/b/", "b-1", "a/b")])
def test_destination_parsing(spec, bucket, prefix):
    d = fw.parse_destination(spec)
    assert (d.kind, d.bucket, d.prefix) == ("s3", bucket, prefix)


@pytest.mark.parametrize("spec", ["s3://b-1/AWSLogs", "s3://b-1/x/AWSLogs/y", "s3://B_1",
                                  "bucket", "log-group:", "log-group:aws/x"])
def test_bad_destinations_are_usage_errors(spec):
    with pytest.raises(UsageError):
        fw.parse_destination(spec)


def test_fields_and_record_versions():
    assert fw.record_version(None) == 2
    assert fw.record_version(fw.log_format(fw.parse_fields("version,vpc-id"))) == 3
    assert fw.record_version(fw.log_format(fw.parse_fields("${version} ${az-id}"))) == 4
    assert fw.record_version(fw.log_format(fw.parse_fields("version flow-direction"))) == 5
    with pytest.raises(UsageError):
        fw.parse_fields("version,version")


def test_merge_keeps_others_and_is_idempotent():
    other = {"Sid": "Other", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": "arn:aws:s3:::logs-bucket/*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    current = {"Version": "2012-10-17", "Id": "keep-me", "Statement": [other]}
    wanted = fw.s3_delivery_statements(target())
    merged = fw.merge_statements(current, wanted)
    assert merged["Id"] == "keep-me" and merged["Statement"][0] == other
    assert len(merged["Statement"]) == 3
    assert fw.merge_statements(merged, wanted) == merged
    assert fw.has_statements(merged, wanted) and not fw.has_statements(current, wanted)


def test_merge_is_sid_insensitive_and_string_or_list_insensitive():
    wanted = fw.s3_delivery_statements(target())
    console = [dict(s, Sid=f"S{i}", Resource=s["Resource"][0]) for i, s in enumerate(wanted)]
    current = {"Version": "2012-10-17", "Statement": console}
    assert fw.has_statements(current, wanted)


def test_a_second_prefix_extends_the_resource_and_unmerge_takes_only_it_out():
    a, b = target("s3://logs-bucket/a"), target("s3://logs-bucket/b")
    both = fw.merge_statements(fw.merge_statements(None, fw.s3_delivery_statements(a)),
                               fw.s3_delivery_statements(b))
    assert len(both["Statement"]) == 2
    assert both["Statement"][0]["Resource"] == [a.object_arn, b.object_arn]
    left = fw.unmerge_statements(both, fw.s3_delivery_statements(a))
    assert left["Statement"][0]["Resource"] == [b.object_arn]


def test_another_region_gets_its_own_conditioned_statements():
    a = target()
    b = fw.FlowTarget(ACCT, "us-east-2", "aws", (), a.destination)
    both = fw.merge_statements(fw.merge_statements(None, fw.s3_delivery_statements(a)),
                               fw.s3_delivery_statements(b))
    assert len(both["Statement"]) == 4
    assert len({s["Sid"] for s in both["Statement"]}) == 4      # Sids stay unique


def test_unmerge_of_everything_is_none():
    wanted = fw.s3_delivery_statements(target())
    assert fw.unmerge_statements(fw.merge_statements(None, wanted), wanted) is None


def test_condition_evaluation_admits_only_the_right_context():
    policy = {"Statement": fw.s3_delivery_statements(target())}
    t = target()
    assert fw.bucket_admits_delivery(policy, t) == []
    other_account = fw.FlowTarget("999999999999", REGION, "aws", (), t.destination)
    assert fw.bucket_admits_delivery(policy, other_account)       # confused deputy: refused
    other_region = fw.FlowTarget(ACCT, "us-east-2", "aws", (), t.destination)
    assert fw.bucket_admits_delivery(policy, other_region)
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": "arn:aws:s3:::logs-bucket/*"}
    assert fw.bucket_admits_delivery({"Statement": policy["Statement"] + [deny]}, t)


def test_unconditioned_grants_are_found():
    loose = {"Sid": "Loose", "Effect": "Allow",
             "Principal": {"Service": "delivery.logs.amazonaws.com"},
             "Action": "s3:GetBucketAcl", "Resource": "arn:aws:s3:::logs-bucket"}
    assert fw.unconditioned_grants({"Statement": [loose] + fw.s3_delivery_statements(target())}) \
        == ["Loose"]


def test_plan_writes_the_policy_before_the_flow_log_and_converges():
    t = target()
    plan = fw.build_plan(t, fw.FlowState())
    assert [s.api for s in plan.steps] == ["s3:PutBucketPolicy", "ec2:CreateFlowLogs"]
    create = plan.steps[1].params
    assert create["LogDestination"] == "arn:aws:s3:::logs-bucket/flow/"
    assert create["DestinationOptions"] == {"FileFormat": "plain-text",
                                            "HiveCompatiblePartitions": False,
                                            "PerHourPartition": False}
    assert "LogFormat" not in create            # default: version 2 fields
    done = fw.FlowState(bucket_policy=json.loads(plan.steps[0].params["Policy"]),
                        flow_logs=[{"FlowLogId": "fl-1", "ResourceId": "vpc-0123456789abcdef0",
                                    "LogDestinationType": "s3",
                                    "LogDestination": "arn:aws:s3:::logs-bucket/flow",
                                    "LogFormat": fw.DEFAULT_FORMAT, "TrafficType": "ALL"}])
    assert fw.build_plan(t, done).steps == []


def test_plan_refuses_over_20_kb_and_aws_managed_keys_and_control_tower():
    big = {"Version": "2012-10-17", "Statement": [
        {"Sid": f"S{i}", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::logs-bucket/{'x' * 200}/{i}"} for i in range(64)]}
    assert fw.policy_bytes(big) < fw.BUCKET_POLICY_LIMIT
    with pytest.raises(SetupError) as e:
        fw.build_plan(target(), fw.FlowState(bucket_policy=big))
    assert e.value.code == "PolicySizeLimit"
    with pytest.raises(SetupError) as e:
        fw.build_plan(target(), fw.FlowState(sse="aws:kms", kms_key="arn:aws:kms:k",
                                             kms_manager="AWS"))
    assert e.value.code == "AwsManagedKey"
    with pytest.raises(SetupError) as e:
        fw.build_plan(target("s3://aws-controltower-logs-1"), fw.FlowState())
    assert e.value.code == "ControlTower"


def test_removal_marks_destructive_and_keeps_unowned_flow_logs():
    t = target()
    fl = {"LogDestinationType": "s3", "LogDestination": t.destination_arn,
          "ResourceId": "vpc-0123456789abcdef0"}
    state = fw.FlowState(bucket_policy=fw.merge_statements(None, fw.s3_delivery_statements(t)),
                         flow_logs=[dict(fl, FlowLogId="fl-mine",
                                         Tags=[{"Key": "managed-by", "Value": "trailwatch"}])])
    plan = fw.removal_plan(t, state)
    assert [(s.api, s.destructive) for s in plan.steps] == [("ec2:DeleteFlowLogs", True),
                                                            ("s3:DeleteBucketPolicy", True)]
    state.flow_logs = [dict(fl, FlowLogId="fl-theirs", Tags=[])]
    plan = fw.removal_plan(t, state)
    assert plan.steps == [] and any("not created by trailwatch" in n for n in plan.notes)


def test_role_trust_and_policy_for_a_log_group():
    t = target("log-group:vpc-flow")
    trust = fw.role_trust_policy(t)["Statement"][0]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"] == \
        f"arn:aws:ec2:{REGION}:{ACCT}:vpc-flow-log/*"
    resources = {r for s in fw.role_policy(t)["Statement"] for r in s["Resource"]}
    assert resources == {t.log_group_arn, f"{t.log_group_arn}:*"}
    plan = fw.build_plan(t, fw.FlowState())
    assert [s.api for s in plan.steps] == ["logs:CreateLogGroup", "logs:PutRetentionPolicy",
                                           "iam:CreateRole", "iam:PutRolePolicy",
                                           "ec2:CreateFlowLogs"]
    assert plan.steps[-1].params["DeliverLogsPermissionArn"] == t.role_arn
    assert "iam:PassRole" in plan.steps[-1].iam_actions


def test_log_destination_has_the_documented_forms():
    assert target("s3://logs-bucket").destination_arn == "arn:aws:s3:::logs-bucket"
    assert target("s3://logs-bucket/a/b").destination_arn == "arn:aws:s3:::logs-bucket/a/b/"
    assert target("s3://logs-bucket").object_arn == f"arn:aws:s3:::logs-bucket/AWSLogs/{ACCT}/*"
    assert target("s3://logs-bucket", hive=True).key_prefix == (
        f"AWSLogs/aws-account-id={ACCT}/aws-service=vpcflowlogs/aws-region={REGION}/")
    assert target("s3://logs-bucket/p").key_prefix == f"p/AWSLogs/{ACCT}/vpcflowlogs/{REGION}/"


def test_an_adopted_role_trusted_by_anyone_else_is_refused():
    t = target("log-group:vpc-flow", role_name="shared")
    ec2_too = {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                              "Principal": {"Service": ["vpc-flow-logs.amazonaws.com",
                                                        "ec2.amazonaws.com"]}}]}
    role = fw.RoleState("shared", f"arn:aws:iam::{ACCT}:role/shared", ec2_too, {}, {})
    with pytest.raises(SetupError) as e:
        fw.build_plan(t, fw.FlowState(role=role))
    assert e.value.code == "TrustTooBroad" and "ec2.amazonaws.com" in e.value.message
    only_flow_logs = {"Statement": [dict(ec2_too["Statement"][0],
                                         Principal={"Service": "vpc-flow-logs.amazonaws.com"})]}
    plan = fw.build_plan(t, fw.FlowState(role=fw.RoleState(
        "shared", role.arn, only_flow_logs, {}, {})))
    # an unconditioned trust is extended with trailwatch's conditioned statement, never replaced
    update = next(s for s in plan.steps if s.operation == "UpdateAssumeRolePolicy")
    doc = json.loads(update.params["PolicyDocument"])
    assert doc["Statement"][0] == only_flow_logs["Statement"][0] and len(doc["Statement"]) == 2


def test_an_unsuccessful_create_is_a_failed_step_not_a_success():
    """CreateFlowLogs answers HTTP 200 with the failures in Unsuccessful."""
    from setup.wiring.executor import StepFailure
    from setup.wiring.flowlogs_aws import FlowExecutor
    from tests.fakes import FakeClients
    fake = FakeClients(responses={("ec2", "create_flow_logs"): {
        "FlowLogIds": [], "Unsuccessful": [{"ResourceId": "vpc-0123456789abcdef0", "Error": {
            "Code": "400", "Message": "LogDestination: bucket does not exist."}}]}})
    plan = fw.build_plan(target(), fw.FlowState())
    with pytest.raises(StepFailure) as e:
        FlowExecutor(fake, progress=lambda m: None).run(plan)
    assert e.value.step.operation == "CreateFlowLogs"
    assert "does not exist" in e.value.message
    assert [s.operation for s in e.value.done] == ["PutBucketPolicy"]
