"""Issue 21: `trailwatch flow-logs` against moto made strict (setup.demo.logdelivery): shared-bucket
scenarios, AWS's automatic policy attachment, limits, KMS, CloudWatch Logs, verify.

Each test drives the CLI in-process on moto and asserts the outcome in the account: the bucket
policy's statements, the flow logs, and whether the simulated delivery service could write.
"""

from __future__ import annotations

import contextlib
import io
import json

import boto3
import pytest
from moto import mock_aws

from setup.aws import AwsClients
from setup.cli import main
from setup.demo.logdelivery import (
    deliver,
    documented_default_policy,
    strict_log_delivery,
)
from setup.wiring.executor import Executor

REGION = "us-east-1"
BUCKET = "shared-logs"
OTHER_TEAM = {"Sid": "DataTeamRead", "Effect": "Allow",
              "Principal": {"AWS": "arn:aws:iam::111122223333:role/data-team"},
              "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/exports/*"}


@pytest.fixture
def aws():
    with mock_aws(), strict_log_delivery() as strict:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield strict


def c(service: str):
    return boto3.client(service, region_name=REGION)


def vpc() -> str:
    return c("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]


def account() -> str:
    return c("sts").get_caller_identity()["Account"]


def quiet(clients, timeout):
    return Executor(clients, sleep=lambda s: None, propagation_timeout=timeout,
                    progress=lambda m: None)


def tw(*argv: str) -> tuple[int, str, str, AwsClients]:
    out, err = io.StringIO(), io.StringIO()
    clients = AwsClients(region=REGION)
    with contextlib.redirect_stderr(err):
        code = main(["--region", REGION, *argv], out=out, stdin=io.StringIO(""),
                    clients=clients, executor_factory=quiet)
    return code, out.getvalue(), err.getvalue(), clients


def writes(clients: AwsClients) -> list[str]:
    return [op for _, op, _ in clients.mutating_calls()]


def policy() -> dict | None:
    try:
        return json.loads(c("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    except c("s3").exceptions.ClientError:
        return None


def put_policy(*statements: dict) -> None:
    c("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": list(statements)}, separators=(",", ":")))


def sids(doc: dict | None) -> list[str]:
    return [s.get("Sid") for s in (doc or {}).get("Statement", [])]


def flow_logs() -> list[dict]:
    return c("ec2").describe_flow_logs()["FlowLogs"]


def objects(prefix: str = "") -> list[str]:
    return [o["Key"] for o in c("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            .get("Contents", [])]


# ----------------------------------------------------------------------------------- the overwrite

def test_aws_automatic_attachment_overwrites_another_teams_policy(aws):
    """What AWS does on its own (vpc-flow-logs-to-s3.md): the strict layer reproduces it, so the
    tests below are meaningful. Another team's statement is gone after a plain CreateFlowLogs."""
    put_policy(OTHER_TEAM)
    c("ec2").create_flow_logs(ResourceType="VPC", ResourceIds=[vpc()], TrafficType="ALL",
                              LogDestinationType="s3",
                              LogDestination=f"arn:aws:s3:::{BUCKET}/flow/")
    assert policy() == documented_default_policy(BUCKET, "flow", account())
    assert "DataTeamRead" not in sids(policy())
    [attached] = aws.attachments
    assert attached["replaced"]["Statement"] == [OTHER_TEAM]


def test_apply_keeps_another_teams_policy_and_never_triggers_the_overwrite(aws):
    put_policy(OTHER_TEAM)
    v = vpc()
    code, out, err, clients = tw("flow-logs", "apply", "--vpc", v, "--to",
                                 f"s3://{BUCKET}/flow", "--yes")
    assert code == 0, out + err
    # AWS never found the bucket short of delivery permissions, so it replaced nothing: the
    # merged policy went in first, then the flow log
    assert aws.attachments == []
    assert writes(clients) == ["PutBucketPolicy", "CreateFlowLogs"]
    doc = policy()
    assert doc["Statement"][0] == OTHER_TEAM
    write = next(s for s in doc["Statement"] if s["Sid"] == "TrailwatchAWSLogDeliveryWrite")
    acl = next(s for s in doc["Statement"] if s["Sid"] == "TrailwatchAWSLogDeliveryAclCheck")
    assert write["Resource"] == [f"arn:aws:s3:::{BUCKET}/flow/AWSLogs/{account()}/*"]
    assert write["Condition"] == {
        "StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                         "aws:SourceAccount": [account()]},
        "ArnLike": {"aws:SourceArn": [f"arn:aws:logs:{REGION}:{account()}:*"]}}
    assert acl["Resource"] == [f"arn:aws:s3:::{BUCKET}"]
    assert acl["Condition"]["ArnLike"]["aws:SourceArn"] == [f"arn:aws:logs:{REGION}:{account()}:*"]
    [fl] = flow_logs()
    tags = {t["Key"]: t["Value"] for t in fl["Tags"]}
    assert tags["managed-by"] == "trailwatch"
    assert fl["LogDestination"] == f"arn:aws:s3:::{BUCKET}/flow/"
    # delivery works: a file lands under the documented layout
    assert deliver() == {fl["FlowLogId"]: None}
    [key] = objects()
    assert key.startswith(f"flow/AWSLogs/{account()}/vpcflowlogs/{REGION}/")
    assert f"_vpcflowlogs_{REGION}_{fl['FlowLogId']}_" in key


def test_rerun_makes_zero_writes(aws):
    put_policy(OTHER_TEAM)
    v = vpc()
    assert tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}", "--yes")[0] == 0
    code, out, _, clients = tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}",
                               "--yes")
    assert code == 0
    assert writes(clients) == []
    assert "0 changes" in out


def test_two_vpcs_into_one_bucket_then_remove_one_leaves_the_other_delivering(aws):
    put_policy(OTHER_TEAM)
    a, b = vpc(), vpc()
    assert tw("flow-logs", "apply", "--vpc", a, "--to", f"s3://{BUCKET}/flow", "--yes")[0] == 0
    code, _, _, clients = tw("flow-logs", "apply", "--vpc", b, "--to", f"s3://{BUCKET}/flow",
                             "--yes")
    assert code == 0 and writes(clients) == ["CreateFlowLogs"]   # policy already admits it
    before = policy()
    assert sids(before) == ["DataTeamRead", "TrailwatchAWSLogDeliveryWrite", "TrailwatchAWSLogDeliveryAclCheck"]

    code, out, err, clients = tw("flow-logs", "remove", "--vpc", a, "--to",
                                 f"s3://{BUCKET}/flow", "--yes")
    assert code == 0, out + err
    assert writes(clients) == ["DeleteFlowLogs"]
    assert policy() == before
    [left] = flow_logs()
    assert left["ResourceId"] == b
    assert deliver() == {left["FlowLogId"]: None}

    code, out, err, clients = tw("flow-logs", "remove", "--vpc", b, "--to",
                                 f"s3://{BUCKET}/flow", "--yes")
    assert code == 0, out + err
    assert writes(clients) == ["DeleteFlowLogs", "PutBucketPolicy"]
    assert policy()["Statement"] == [OTHER_TEAM]


def test_two_prefixes_share_the_statement_and_removing_one_keeps_the_other(aws):
    a, b = vpc(), vpc()
    assert tw("flow-logs", "apply", "--vpc", a, "--to", f"s3://{BUCKET}/team-a", "--yes")[0] == 0
    assert tw("flow-logs", "apply", "--vpc", b, "--to", f"s3://{BUCKET}/team-b", "--yes")[0] == 0
    write = next(s for s in policy()["Statement"] if s["Sid"] == "TrailwatchAWSLogDeliveryWrite")
    assert sorted(write["Resource"]) == [f"arn:aws:s3:::{BUCKET}/team-{x}/AWSLogs/{account()}/*"
                                         for x in "ab"]
    assert tw("flow-logs", "remove", "--vpc", a, "--to", f"s3://{BUCKET}/team-a", "--yes")[0] == 0
    doc = policy()
    write = next(s for s in doc["Statement"] if s["Sid"] == "TrailwatchAWSLogDeliveryWrite")
    assert write["Resource"] == [f"arn:aws:s3:::{BUCKET}/team-b/AWSLogs/{account()}/*"]
    assert "TrailwatchAWSLogDeliveryAclCheck" in sids(doc)
    [left] = flow_logs()
    assert deliver() == {left["FlowLogId"]: None}


def test_equivalent_statements_under_other_sids_make_no_policy_write(aws):
    from setup.wiring import flowlogs as fw
    target = fw.FlowTarget(account(), REGION, "aws", (), fw.Destination("s3", bucket=BUCKET))
    renamed = [dict(s, Sid=f"ConsoleMade{i}") for i, s in
               enumerate(fw.s3_delivery_statements(target))]
    put_policy(OTHER_TEAM, *renamed)
    code, _, _, clients = tw("flow-logs", "apply", "--vpc", vpc(), "--to", f"s3://{BUCKET}",
                             "--yes")
    assert code == 0 and writes(clients) == ["CreateFlowLogs"]


def test_remove_never_touches_equivalent_statements_someone_else_wrote(aws):
    """Observed (review): the same two statements written by another team (here for Route 53
    resolver query logs, which deliver through the same service) made apply write nothing, and
    then remove deleted the whole bucket policy: their delivery broke."""
    from setup.wiring import flowlogs as fw
    target = fw.FlowTarget(account(), REGION, "aws", (), fw.Destination("s3", bucket=BUCKET))
    resolver = [dict(s, Sid=f"ResolverQueryLogs{i}") for i, s in
                enumerate(fw.s3_delivery_statements(target))]
    put_policy(OTHER_TEAM, *resolver)
    before = policy()
    the_vpc = vpc()
    code, _, _, clients = tw("flow-logs", "apply", "--vpc", the_vpc, "--to", f"s3://{BUCKET}",
                             "--yes")
    assert code == 0 and writes(clients) == ["CreateFlowLogs"]
    code, out, _, clients = tw("flow-logs", "remove", "--vpc", the_vpc, "--to", f"s3://{BUCKET}",
                               "--yes")
    assert code == 0, out
    assert writes(clients) == ["DeleteFlowLogs"]
    assert policy() == before


def test_a_foreign_statement_of_the_same_shape_is_never_edited(aws):
    """Someone else's delivery statement for another prefix stays as it is: trailwatch adds its
    own statement for its prefix (not a resource in theirs), and remove takes only that away."""
    from setup.wiring import flowlogs as fw
    root = fw.FlowTarget(account(), REGION, "aws", (), fw.Destination("s3", bucket=BUCKET))
    theirs = [dict(s, Sid=f"WafLogs{i}") for i, s in enumerate(fw.s3_delivery_statements(root))]
    put_policy(*theirs)
    the_vpc = vpc()
    assert tw("flow-logs", "apply", "--vpc", the_vpc, "--to", f"s3://{BUCKET}/flow",
              "--yes")[0] == 0
    doc = policy()
    assert doc["Statement"][:2] == theirs
    ours = [s for s in doc["Statement"] if s["Sid"].startswith("Trailwatch")]
    resources = [r for s in ours for r in (s["Resource"] if isinstance(s["Resource"], list)
                                           else [s["Resource"]])]
    assert resources == [f"arn:aws:s3:::{BUCKET}/flow/AWSLogs/{account()}/*"]  # AclCheck: theirs
    assert tw("flow-logs", "remove", "--vpc", the_vpc, "--to", f"s3://{BUCKET}/flow",
              "--yes")[0] == 0
    assert policy()["Statement"] == theirs


def test_a_foreign_statement_holding_the_seed_sid_is_kept_and_ours_gets_its_own(aws):
    theirs = dict(OTHER_TEAM, Sid="TrailwatchAWSLogDeliveryWrite")
    put_policy(theirs)
    assert tw("flow-logs", "apply", "--vpc", vpc(), "--to", f"s3://{BUCKET}", "--yes")[0] == 0
    doc = policy()
    assert doc["Statement"][0] == theirs
    assert len(set(sids(doc))) == 3 and all(s.startswith("TrailwatchAWSLogDelivery") for s in sids(doc))


def test_a_policy_that_would_pass_20_kb_is_refused_before_any_write(aws):
    big: list[dict] = []
    while len(json.dumps({"Version": "2012-10-17", "Statement": big},
                         separators=(",", ":"))) < 20 * 1024 - 600:
        big.append(dict(OTHER_TEAM, Sid=f"Big{len(big)}",
                        Resource=f"arn:aws:s3:::{BUCKET}/{'x' * 150}{len(big)}/*"))
    put_policy(*big[:-1])       # just under the limit: the merge would pass it
    code, out, _err, clients = tw("flow-logs", "apply", "--vpc", vpc(), "--to",
                                 f"s3://{BUCKET}", "--yes", "--output", "json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "PolicySizeLimit"
    assert writes(clients) == []


def test_strict_layer_refuses_a_bucket_policy_over_20_kb(aws):
    big = [dict(OTHER_TEAM, Sid=f"Big{i}", Resource=f"arn:aws:s3:::{BUCKET}/{'x' * 200}{i}/*")
           for i in range(100)]
    with pytest.raises(c("s3").exceptions.ClientError, match="MalformedPolicy"):
        put_policy(*big)


def test_aws_managed_key_is_refused_with_the_reason(aws):
    c("s3").put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    code, out, _err, _clients = tw("flow-logs", "plan", "--vpc", vpc(), "--to", f"s3://{BUCKET}",
                                 "--output", "json")
    assert code == 1
    e = json.loads(out)["error"]
    assert e["code"] == "AwsManagedKey" and "customer managed key" in e["message"]


def test_customer_key_policy_is_printed_or_applied(aws):
    key = c("kms").create_key()["KeyMetadata"]["Arn"]
    c("s3").put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                          "KMSMasterKeyID": key}}]})
    v = vpc()
    _, out, _, _ = tw("flow-logs", "plan", "--vpc", v, "--to", f"s3://{BUCKET}", "--output",
                         "json")
    doc = json.loads(out)
    assert doc["kms_key_statement"]["Principal"] == {"Service": ["delivery.logs.amazonaws.com"]}
    assert doc["kms_key_statement"]["Condition"]["StringEquals"]["aws:SourceAccount"] == [account()]
    assert any("KEY policy" in n for n in doc["notes"])
    assert "PutKeyPolicy" not in [s["api"].split(":")[1] for s in doc["steps"]]
    # printed only: delivery fails until the key admits the service
    assert tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}", "--yes")[0] == 1
    assert "key policy" in deliver()[flow_logs()[0]["FlowLogId"]]
    _code, out, _err, clients = tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}",
                                 "--kms-key-policy", "apply", "--yes")
    assert writes(clients) == ["PutKeyPolicy"]
    assert deliver() == {flow_logs()[0]["FlowLogId"]: None}


def test_control_tower_bucket_is_refused(aws):
    c("s3").create_bucket(Bucket="aws-controltower-logs-123456789012-us-east-1")
    code, out, _, clients = tw("flow-logs", "apply", "--vpc", vpc(), "--to",
                               "s3://aws-controltower-logs-123456789012-us-east-1", "--yes",
                               "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "ControlTower"
    assert writes(clients) == []


@pytest.mark.parametrize("argv", [
    ["--vpc", "vpc-0123456789abcdef0", "--to", f"s3://{BUCKET}/AWSLogs"],
    ["--vpc", "vpc-0123456789abcdef0"],
    ["--vpc", "nope", "--to", f"s3://{BUCKET}"],
    ["--to", f"s3://{BUCKET}"],
    ["--vpc", "vpc-0123456789abcdef0", "--to", "log-group:g", "--per-hour-partition"],
    ["--vpc", "vpc-0123456789abcdef0", "--to", f"s3://{BUCKET}", "--fields", "version,bogus"],
])
def test_usage_errors_exit_2(aws, argv):
    assert tw("flow-logs", "plan", *argv)[0] == 2


def test_options_reach_the_flow_log_and_the_key_layout(aws):
    v = vpc()
    code, out, err, _ = tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}/fl",
                           "--hive-compatible-prefixes", "--per-hour-partition", "--file-format",
                           "parquet", "--fields",
                           "version,account-id,interface-id,srcaddr,dstaddr,vpc-id,flow-direction",
                           "--yes")
    assert code == 0, out + err
    [fl] = flow_logs()
    assert fl["DestinationOptions"] == {"FileFormat": "parquet", "HiveCompatiblePartitions": True,
                                        "PerHourPartition": True}
    assert fl["LogFormat"] == ("${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} "
                               "${vpc-id} ${flow-direction}")
    deliver()
    [key] = objects()
    assert key.startswith(f"fl/AWSLogs/aws-account-id={account()}/aws-service=vpcflowlogs/"
                          f"aws-region={REGION}/year=")
    assert "/hour=" in key and key.endswith(".log.parquet")


def test_saved_plan_applies_exactly_and_a_stale_one_is_refused(aws, tmp_path):
    v = vpc()
    f = tmp_path / "p.json"
    assert tw("flow-logs", "plan", "--vpc", v, "--to", f"s3://{BUCKET}", "--out", str(f))[0] == 0
    stale = tmp_path / "stale.json"
    assert tw("flow-logs", "plan", "--vpc", v, "--to", f"s3://{BUCKET}", "--out",
              str(stale))[0] == 0
    code, out, err, clients = tw("flow-logs", "apply", "--plan", str(f), "--yes")
    assert code == 0, out + err
    assert writes(clients) == ["PutBucketPolicy", "CreateFlowLogs"]
    code, out, _, clients = tw("flow-logs", "apply", "--plan", str(stale), "--yes", "--output",
                               "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "PlanStale"
    assert writes(clients) == []


def test_all_vpcs_covers_every_vpc_of_the_region(aws):
    mine = {vpc(), vpc()}
    code, out, err, _ = tw("flow-logs", "apply", "--all-vpcs", "--to", f"s3://{BUCKET}", "--yes")
    assert code == 0, out + err
    have = {fl["ResourceId"] for fl in flow_logs()}
    assert mine <= have
    assert have == {v["VpcId"] for v in c("ec2").describe_vpcs()["Vpcs"]}


def test_verify_names_a_broken_bucket_policy_and_the_fix(aws):
    v = vpc()
    assert tw("flow-logs", "apply", "--vpc", v, "--to", f"s3://{BUCKET}", "--yes")[0] == 0
    deliver()
    code, out, _, _ = tw("flow-logs", "verify", "--vpc", v, "--to", f"s3://{BUCKET}", "--output",
                         "json")
    checks = {x["id"]: x for x in json.loads(out)["checks"]}
    assert code == 0, checks
    assert checks["delivery.recent"]["status"] == "PASS"
    put_policy(OTHER_TEAM)      # someone replaced the policy
    deliver()
    code, out, _, _ = tw("flow-logs", "verify", "--vpc", v, "--to", f"s3://{BUCKET}", "--output",
                         "json")
    checks = {x["id"]: x for x in json.loads(out)["checks"]}
    assert code == 1
    assert checks["destination.policy"]["status"] == "FAIL"
    assert checks["flowlogs.status"]["status"] == "FAIL"
    assert "Access error" in checks["flowlogs.status"]["message"]
    assert f"trailwatch flow-logs apply --region {REGION} --vpc {v} --to s3://{BUCKET}" in \
        checks["destination.policy"]["remediation"]


def test_verify_warns_on_an_unconditioned_grant(aws):
    v = vpc()
    put_policy(*documented_default_policy(BUCKET, "", account())["Statement"])
    c("ec2").create_flow_logs(ResourceType="VPC", ResourceIds=[v], TrafficType="ALL",
                              LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{BUCKET}/")
    deliver()
    _code, out, _, _ = tw("flow-logs", "verify", "--vpc", v, "--to", f"s3://{BUCKET}", "--output",
                         "json")
    checks = {x["id"]: x for x in json.loads(out)["checks"]}
    assert checks["destination.policy"]["status"] == "WARN"
    assert "confused deputy" in checks["destination.policy"]["message"]


def test_flow_logs_to_a_log_group_with_a_confused_deputy_safe_role(aws):
    v = vpc()
    code, out, err, clients = tw("flow-logs", "apply", "--vpc", v, "--to", "log-group:vpc-flow",
                                 "--yes")
    assert code == 0, out + err
    assert writes(clients) == ["CreateLogGroup", "PutRetentionPolicy", "CreateRole",
                               "PutRolePolicy", "CreateFlowLogs"]
    [fl] = flow_logs()
    role_name = fl["DeliverLogsPermissionArn"].rsplit("/", 1)[1]
    role = c("iam").get_role(RoleName=role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    [st] = trust["Statement"]
    assert st["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert st["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account()},
        "ArnLike": {"aws:SourceArn": f"arn:aws:ec2:{REGION}:{account()}:vpc-flow-log/*"}}
    pol = c("iam").get_role_policy(RoleName=role_name, PolicyName="trailwatch-flowlogs-delivery")
    resources = {r for s in pol["PolicyDocument"]["Statement"] for r in s["Resource"]}
    assert resources == {f"arn:aws:logs:{REGION}:{account()}:log-group:vpc-flow",
                         f"arn:aws:logs:{REGION}:{account()}:log-group:vpc-flow:*"}
    assert deliver() == {fl["FlowLogId"]: None}
    code, out, _, _ = tw("flow-logs", "verify", "--vpc", v, "--to", "log-group:vpc-flow",
                         "--output", "json")
    assert code == 0, out
    code, _, _, clients = tw("flow-logs", "apply", "--vpc", v, "--to", "log-group:vpc-flow",
                             "--yes")
    assert code == 0 and writes(clients) == []


@pytest.mark.parametrize("dest, needed", [
    ("s3://shared-logs/flow", [("logs:CreateLogDelivery", "*"),
                               ("s3:PutBucketPolicy", "arn:aws:s3:::shared-logs"),
                               ("s3:GetBucketPolicy", "arn:aws:s3:::shared-logs")]),
    ("log-group:vpc-flow", [("iam:PassRole", "ROLE"), ("iam:CreateRole", "ROLE"),
                            ("logs:CreateLogGroup", "GROUP")])])
def test_check_permissions_simulates_the_seeds_caller_permissions(dest, needed):
    """--check-permissions asks IAM about the documented caller permissions, on their resources,
    and simulates iam:PassRole as passed to vpc-flow-logs.amazonaws.com (not CloudTrail)."""
    from setup.cli.flowlogs import permission_requests
    from setup.wiring import flowlogs as fw
    from setup.wiring.plans import check_permissions
    from tests.fakes import FakeClients

    def simulate(**kw):
        return {"EvaluationResults": [{"EvalActionName": a, "EvalDecision": "implicitDeny"
                                       if a == "logs:CreateLogDelivery" else "allowed"}
                                      for a in kw["ActionNames"]]}
    fake = FakeClients(responses={
        ("sts", "get_caller_identity"): {"Account": "123456789012",
                                         "Arn": "arn:aws:iam::123456789012:user/ops"},
        ("iam", "simulate_principal_policy"): simulate})
    t = fw.FlowTarget("123456789012", REGION, "aws", (("VPC", "vpc-0123456789abcdef0"),),
                      fw.parse_destination(dest))
    reqs = permission_requests(fw.build_plan(t, fw.FlowState()))
    for action, res in needed:
        res = {"ROLE": t.role_arn, "GROUP": t.log_group_arn}.get(res, res)
        assert (action, res) in reqs
    missing, warnings = check_permissions(fake, REGION, reqs, passed_to=fw.FLOW_LOGS_SERVICE)
    assert warnings == []
    assert missing == (["logs:CreateLogDelivery"] if dest.startswith("s3") else [])
    passes = [kw for _, kw in fake.calls_to("iam", "simulate_principal_policy")
              if "iam:PassRole" in kw["ActionNames"]]
    for kw in passes:
        assert kw["ContextEntries"][0]["ContextKeyValues"] == ["vpc-flow-logs.amazonaws.com"]
    assert bool(passes) == dest.startswith("log-group")


def test_subnets_and_network_interfaces_get_their_own_flow_logs(aws):
    ec2 = c("ec2")
    v = vpc()
    subnet = ec2.create_subnet(VpcId=v, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    code, out, err, clients = tw("flow-logs", "apply", "--subnet", subnet, "--eni", eni, "--to",
                                 f"s3://{BUCKET}", "--yes")
    assert code == 0, out + err
    assert {(fl["ResourceId"]) for fl in flow_logs()} == {subnet, eni}
    assert writes(clients) == ["PutBucketPolicy", "CreateFlowLogs", "CreateFlowLogs"]


def test_a_missing_bucket_is_named_before_any_write(aws):
    code, out, _, clients = tw("flow-logs", "apply", "--vpc", vpc(), "--to", "s3://no-such-bkt",
                               "--yes", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "NoSuchBucket"
    assert writes(clients) == []


def test_log_group_kms_key_must_admit_cloudwatch_logs(aws):
    from setup.wiring.models import kms_key_statement
    kms = c("kms")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    v = vpc()
    code, out, _, clients = tw("flow-logs", "apply", "--vpc", v, "--to", "log-group:vpc-flow",
                               "--kms-key", key, "--yes", "--output", "json")
    err = json.loads(out)["error"]
    assert code == 1 and err["code"] == "KmsKeyPolicy"
    assert "logs.us-east-1.amazonaws.com" in err["remediation"]
    assert writes(clients) == []
    group_arn = f"arn:aws:logs:{REGION}:{account()}:log-group:vpc-flow"
    stmt = kms_key_statement(type("T", (), {"region": REGION, "log_group_arn_bare": group_arn}))
    doc = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    doc["Statement"].append(stmt)
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(doc))
    code, out, err, _ = tw("flow-logs", "apply", "--vpc", v, "--to", "log-group:vpc-flow",
                           "--kms-key", key, "--yes")
    assert code == 0, out + err
    [group] = c("logs").describe_log_groups(logGroupNamePrefix="vpc-flow")["logGroups"]
    assert group["kmsKeyId"] == key


def test_remove_works_after_the_bucket_was_deleted(aws):
    c("s3").create_bucket(Bucket="short-lived")
    v = vpc()
    assert tw("flow-logs", "apply", "--vpc", v, "--to", "s3://short-lived", "--yes")[0] == 0
    c("s3").delete_bucket_policy(Bucket="short-lived")
    c("s3").delete_bucket(Bucket="short-lived")
    code, out, err, clients = tw("flow-logs", "remove", "--vpc", v, "--to", "s3://short-lived",
                                 "--yes")
    assert code == 0, out + err
    assert writes(clients) == ["DeleteFlowLogs"]
    assert flow_logs() == []
    assert "no longer exists" in out


def test_verify_evaluates_managed_policies_and_the_boundary_of_the_role(aws):
    """A role set up by hand with a managed policy delivers; verify must say so, and must see a
    permissions boundary that stops it."""
    from setup.wiring import flowlogs as fw
    iam, logs = c("iam"), c("logs")
    v = vpc()
    logs.create_log_group(logGroupName="by-hand")
    t = fw.FlowTarget(account(), REGION, "aws", (("VPC", v),), fw.parse_destination(
        "log-group:by-hand"), role_name="by-hand-role")
    role = iam.create_role(RoleName="by-hand-role", AssumeRolePolicyDocument=json.dumps(
        fw.role_trust_policy(t)))["Role"]["Arn"]
    managed = iam.create_policy(PolicyName="flow-logs-write", PolicyDocument=json.dumps(
        fw.role_policy(t)))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="by-hand-role", PolicyArn=managed)
    c("ec2").create_flow_logs(ResourceType="VPC", ResourceIds=[v], TrafficType="ALL",
                              LogGroupName="by-hand", DeliverLogsPermissionArn=role)
    # no --role-name: verify reads the role the flow log was created with
    argv = ("flow-logs", "verify", "--vpc", v, "--to", "log-group:by-hand", "--output", "json")
    checks = {x["id"]: x for x in json.loads(tw(*argv)[1])["checks"]}
    assert checks["destination.policy"]["status"] == "PASS", checks["destination.policy"]
    boundary = iam.create_policy(PolicyName="no-logs", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                 "Resource": "*"}]}))["Policy"]["Arn"]
    iam.put_role_permissions_boundary(RoleName="by-hand-role", PermissionsBoundary=boundary)
    checks = {x["id"]: x for x in json.loads(tw(*argv)[1])["checks"]}
    assert checks["destination.policy"]["status"] == "FAIL"


def test_a_declined_prompt_changes_nothing_and_is_not_success(aws):
    """As for the trail commands: declining exits 1; no terminal and no --yes is a usage error
    (exit 2) whose fix is the same command with --yes. Observed: flow-logs exited 0 on "n"."""
    class Tty(io.StringIO):
        def isatty(self):
            return True
    the_vpc = vpc()
    out = io.StringIO()
    clients = AwsClients(region=REGION)
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["--region", REGION, "flow-logs", "apply", "--vpc", the_vpc, "--to",
                     f"s3://{BUCKET}"], out=out, stdin=Tty("n\n"), clients=clients,
                    executor_factory=quiet)
    assert code == 1 and "not confirmed" in out.getvalue()
    assert writes(clients) == [] and policy() is None
    code, _, err, clients = tw("flow-logs", "apply", "--vpc", the_vpc, "--to", f"s3://{BUCKET}")
    assert code == 2 and "--yes" in err and writes(clients) == []
