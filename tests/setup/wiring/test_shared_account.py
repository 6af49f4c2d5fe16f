"""Issue 9: trailwatch in a shared account, driven through the CLI against a moto server.

Several trails, several teams: every write is owned (tagged per trail, merged by Sid), every delete
is proven unused (DescribeTrails in every region, tags), nothing is shortened or widened
implicitly, and the CLI's contract (exit codes, JSON errors, global options, Ctrl-C) holds.
Most tests call ``setup.cli.main`` in-process with AWS_ENDPOINT_URL pointing at the server (the
same HTTP path a user's run takes); the Ctrl-C, region and packaging tests run the CLI as a
subprocess.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import boto3
import pytest

from setup.aws import AwsClients
from setup.cli import main
from setup.wiring.executor import Executor
from setup.wiring.models import trust_policy

ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.stop()


@pytest.fixture
def server(moto_server, monkeypatch):
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", data=b"",
                                                  method="POST")).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
    return moto_server


def client(service: str, region: str = REGION):
    return boto3.client(service, region_name=region)


def account() -> str:
    return client("sts").get_caller_identity()["Account"]


def make_trail(name: str, region: str = REGION, logging: bool = True,
               multi_region: bool = False) -> str:
    """CIS needs a multi-region trail (verify FAILs a single-region one when CIS alarms are on)."""
    ct = client("cloudtrail", region)
    arn = ct.create_trail(Name=name, S3BucketName="trail-bucket", IsMultiRegionTrail=multi_region)[
        "TrailARN"]
    if logging:
        ct.start_logging(Name=arn)
    return arn


def quiet_executor(clients, timeout):
    return Executor(clients, sleep=lambda s: None, propagation_timeout=timeout,
                    progress=lambda m: None)


def tw(*argv: str, clients: AwsClients | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv), out=out, stdin=io.StringIO(""), clients=clients,
                    executor_factory=quiet_executor)
    return code, out.getvalue(), err.getvalue()


def checks(*argv: str) -> tuple[int, dict[str, dict]]:
    code, out, err = tw("verify", *argv, "--output", "json")
    assert out, err
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


def fails(*argv: str) -> list[str]:
    code, results = checks(*argv)
    bad = [f"{k}: {v['message']}" for k, v in results.items() if v["status"] == "FAIL"]
    assert (code == 1) == bool(bad)
    return bad


def role_exists(name: str) -> bool:
    try:
        client("iam").get_role(RoleName=name)
        return True
    except client("iam").exceptions.NoSuchEntityException:
        return False


def groups(prefix: str = "") -> list[str]:
    return [g["logGroupName"] for g in client("logs").describe_log_groups(
        logGroupNamePrefix=prefix)["logGroups"]] if prefix else \
        [g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]]


# ----------------------------------------------------------------------------------- ownership

@pytest.mark.parametrize("order", [("team-a", "team-b"), ("team-b", "team-a")])
def test_two_trails_share_a_role_with_two_groups_in_either_order(server, order):
    """The flip-flop: each apply used to rewrite the shared inline policy for its own group."""
    for name in ("team-a", "team-b"):
        make_trail(name)
    for name in order:
        code, out, err = tw("apply", "--trail", name, "--yes", "--role-name", "shared",
                            "--log-group", f"CloudTrail/{name}")
        assert code == 0, out + err
    assert fails("--trail", "team-a") == [] and fails("--trail", "team-b") == []
    doc = client("iam").get_role_policy(RoleName="shared",
                                        PolicyName="trailwatch-cloudtrail-delivery")
    sids = [s["Sid"] for s in doc["PolicyDocument"]["Statement"]]
    assert len(sids) == 4 and len(set(sids)) == 4
    tags = {t["Key"]: t["Value"] for t in client("iam").list_role_tags(RoleName="shared")["Tags"]}
    assert tags["managed-by"] == "trailwatch"
    assert {v for k, v in tags.items() if k.startswith("trailwatch:trail")} == {
        f"arn:aws:cloudtrail:{REGION}:{account()}:trail/team-a",
        f"arn:aws:cloudtrail:{REGION}:{account()}:trail/team-b"}
    # both converged: a re-run writes nothing
    for name in ("team-a", "team-b"):
        clients = AwsClients(region=REGION)
        assert tw("apply", "--trail", name, "--yes", clients=clients)[0] == 0
        assert clients.mutating_calls() == []


def test_remove_one_of_two_trails_sharing_role_and_group_keeps_what_the_other_uses(server):
    for name in ("team-a", "team-b"):
        make_trail(name)
        assert tw("apply", "--trail", name, "--yes", "--role-name", "shared", "--log-group",
                  "CloudTrail/shared")[0] == 0
    client("logs").create_log_stream(logGroupName="CloudTrail/shared",
                                      logStreamName=f"{account()}_CloudTrail_{REGION}")
    code, out, err = tw("remove", "--trail", "team-a", "--yes", "--delete-role", "--delete-log-group",
                        "--confirm-log-group", "CloudTrail/shared")
    assert code == 0, out + err
    assert "role shared kept: still used by" in out and "trail/team-b" in out
    assert "log group CloudTrail/shared kept: still used by" in out
    assert role_exists("shared") and groups("CloudTrail/shared") == ["CloudTrail/shared"]
    assert not client("cloudtrail").get_trail(Name="team-a")["Trail"].get("CloudWatchLogsRoleArn")
    assert fails("--trail", "team-b") == []
    # a's statements are gone from the shared policy, b's remain
    doc = client("iam").get_role_policy(RoleName="shared",
                                        PolicyName="trailwatch-cloudtrail-delivery")
    assert len(doc["PolicyDocument"]["Statement"]) == 2
    group_arn = f"arn:aws:logs:{REGION}:{account()}:log-group:CloudTrail/shared"
    owners = {v for k, v in client("logs").list_tags_for_resource(resourceArn=group_arn)[
        "tags"].items() if k.startswith("trailwatch:trail")}
    assert owners == {f"arn:aws:cloudtrail:{REGION}:{account()}:trail/team-b"}


def test_remove_sees_a_user_in_another_region(server):
    make_trail("team-a")
    make_trail("far", region="eu-west-1")
    assert tw("apply", "--trail", "team-a", "--yes", "--role-name", "shared")[0] == 0
    far = f"arn:aws:cloudtrail:eu-west-1:{account()}:trail/far"
    assert tw("apply", "--trail", far, "--yes", "--role-name", "shared")[0] == 0
    code, out, _ = tw("remove", "--trail", "team-a", "--yes", "--delete-role", "--delete-log-group")
    assert code == 0 and role_exists("shared") and f"still used by {far}" in out
    assert groups("CloudTrail/team-a") == []         # a's own group: unused, no events -> deleted


def test_remove_deletes_a_group_with_events_only_when_confirmed(server):
    make_trail("team-a")
    assert tw("apply", "--trail", "team-a", "--yes")[0] == 0
    client("logs").create_log_stream(logGroupName="CloudTrail/team-a", logStreamName="s")
    code, out, _ = tw("remove", "--trail", "team-a", "--yes", "--delete-log-group")
    assert code == 0 and "--confirm-log-group CloudTrail/team-a" in out
    assert groups("CloudTrail/team-a") == ["CloudTrail/team-a"]
    code, out, _ = tw("remove", "--trail", "team-a", "--yes", "--delete-log-group",
                      "--confirm-log-group", "CloudTrail/team-a")
    assert code == 0 and groups("CloudTrail/team-a") == []


def test_same_named_trails_in_two_regions_get_their_own_roles(server):
    east = make_trail("main")
    west = make_trail("main", region="eu-west-1")
    assert tw("apply", "--trail", east, "--yes")[0] == 0
    assert tw("apply", "--trail", west, "--yes")[0] == 0
    r_east = client("cloudtrail").get_trail(Name=east)["Trail"]["CloudWatchLogsRoleArn"]
    r_west = client("cloudtrail", "eu-west-1").get_trail(Name=west)["Trail"][
        "CloudWatchLogsRoleArn"]
    assert r_east != r_west
    assert fails("--trail", east) == [] and fails("--trail", west) == []


# ----------------------------------------------------------------------------------- CIS

def _alarms(prefix: str = "trailwatch-cis-") -> list[dict]:
    return client("cloudwatch").describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]


def test_two_trails_with_cis_alarms_remove_one_keeps_the_other(server):
    for name in ("team-a", "team-b"):
        make_trail(name, multi_region=True)
        code, out, err = tw("apply", "--trail", name, "--yes", "--cis-alarms")
        assert code == 0, out + err
    b_alarms = {a["AlarmName"]: a["AlarmActions"] for a in _alarms()
                if a["MetricName"] in _metrics("CloudTrail/team-b")}
    assert len(b_alarms) == 15 and len(_alarms()) == 30
    topics_before = {t["TopicArn"] for t in client("sns").list_topics()["Topics"]}
    assert len(topics_before) == 2                      # one topic per log group
    assert tw("remove", "--trail", "team-a", "--yes")[0] == 0
    after = {a["AlarmName"]: a["AlarmActions"] for a in _alarms()}
    assert after == b_alarms
    (b_topic,) = set(sum(b_alarms.values(), []))
    assert {t["TopicArn"] for t in client("sns").list_topics()["Topics"]} == {b_topic}
    _, results = checks("--trail", "team-b")
    assert results["cis.metric_filters"]["status"] == "PASS"
    assert results["cis.alarms"]["status"] == "PASS"


def _metrics(group: str) -> set[str]:
    return {f["metricTransformations"][0]["metricName"] for f in client("logs").describe_metric_filters(
        logGroupName=group)["metricFilters"]}


def test_remove_of_a_trail_without_cis_leaves_other_alarms_and_topic(server):
    make_trail("team-a", multi_region=True)
    make_trail("team-b", multi_region=True)
    assert tw("apply", "--trail", "team-b", "--yes", "--cis-alarms")[0] == 0
    assert tw("apply", "--trail", "team-a", "--yes")[0] == 0
    before = sorted(a["AlarmName"] for a in _alarms())
    topics = client("sns").list_topics()["Topics"]
    assert tw("remove", "--trail", "team-a", "--yes", "--delete-role", "--delete-log-group")[0] == 0
    assert sorted(a["AlarmName"] for a in _alarms()) == before and len(before) == 15
    assert client("sns").list_topics()["Topics"] == topics


def test_legacy_region_wide_alarms_are_reported_not_touched(server):
    make_trail("team-a", multi_region=True)
    legacy = "trailwatch-cis-4.3-RootAccountUsage"
    client("cloudwatch").put_metric_alarm(
        AlarmName=legacy, MetricName="RootAccountUsage", Namespace="CISBenchmark",
        Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold")
    code, out, _ = tw("apply", "--trail", "team-a", "--yes", "--cis-alarms")
    assert code == 0 and "region-wide names from an earlier trailwatch" in out
    assert tw("remove", "--trail", "team-a", "--yes")[0] == 0
    assert [a["AlarmName"] for a in _alarms()] == [legacy]


def test_cis_on_another_trail_never_retargets_existing_alarms(server):
    make_trail("team-b", multi_region=True)
    make_trail("team-c", multi_region=True)
    assert tw("apply", "--trail", "team-b", "--yes", "--cis-alarms")[0] == 0
    before = {a["AlarmName"]: a["AlarmActions"] for a in _alarms()}
    mine = client("sns").create_topic(Name="team-c")["TopicArn"]
    assert tw("apply", "--trail", "team-c", "--yes", "--cis-alarms", "--alarm-topic", mine)[0] == 0
    after = {a["AlarmName"]: a["AlarmActions"] for a in _alarms()}
    assert {k: v for k, v in after.items() if k in before} == before
    assert sum(1 for v in after.values() if v == [mine]) == 15


@pytest.mark.parametrize("where", ["other-region", "other-account", "missing", "not-an-arn"])
def test_alarm_topic_elsewhere_is_refused(server, where):
    make_trail("team-c", multi_region=True)
    acct = account()
    topic = {"other-region": client("sns", "eu-west-1").create_topic(Name="x")["TopicArn"],
             "other-account": "arn:aws:sns:us-east-1:999999999999:x",
             "missing": f"arn:aws:sns:us-east-1:{acct}:nope",
             "not-an-arn": "secops"}[where]
    code, out, err = tw("apply", "--trail", "team-c", "--yes", "--cis-alarms", "--alarm-topic", topic,
                        "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"].startswith("AlarmTopic")
    assert _alarms() == [] and groups("CloudTrail/team-c") == []    # refused before any write


# ----------------------------------------------------------------------------------- refusals

def test_control_tower_remove_is_refused(server):
    arn = make_trail("aws-controltower-BaselineCloudTrail")
    acct = account()
    client("logs").create_log_group(logGroupName="aws-controltower/CloudTrailLogs")
    client("iam").create_role(RoleName="aws-controltower-CloudWatchLogsRole",
                              AssumeRolePolicyDocument=json.dumps(trust_policy()))
    client("cloudtrail").update_trail(
        Name=arn, CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{acct}:log-group:"
                                            "aws-controltower/CloudTrailLogs:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{acct}:role/aws-controltower-CloudWatchLogsRole")
    code, out, err = tw("remove", "--trail", arn, "--yes", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "ControlTower"
    assert "Control Tower" in err
    assert client("cloudtrail").get_trail(Name=arn)["Trail"].get("CloudWatchLogsRoleArn")


def _trust_role(name: str, extra: list[dict]) -> None:
    doc = trust_policy()
    doc["Statement"] += extra
    client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(doc))


def test_explicit_deny_in_trust_is_reported_and_never_grown(server):
    make_trail("team-a")
    deny = {"Effect": "Deny", "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "sts:AssumeRole"}
    _trust_role("denied", [deny])
    for _ in range(3):
        code, out, err = tw("apply", "--trail", "team-a", "--yes", "--role-name", "denied",
                            "--output", "json")
        assert code == 1 and json.loads(out)["error"]["code"] == "TrustExplicitDeny"
        assert '"Effect": "Deny"' in json.loads(out)["error"]["remediation"]
    trust = client("iam").get_role(RoleName="denied")["Role"]["AssumeRolePolicyDocument"]
    assert len(trust["Statement"]) == 2
    _, results = checks("--trail", "team-a", "--role-name", "denied")
    assert results["role.trust"]["status"] == "FAIL" and "Deny" in results["role.trust"][
        "remediation"]


@pytest.mark.parametrize("principal", [{"AWS": "*"}, {"AWS": "arn:aws:iam::999999999999:root"},
                                       {"Service": "ec2.amazonaws.com"}])
def test_foreign_principal_in_trust_is_refused_and_fails_verify(server, principal):
    make_trail("team-a")
    _trust_role("wide", [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}])
    code, out, err = tw("apply", "--trail", "team-a", "--yes", "--role-name", "wide")
    assert code == 1 and "will not grant it write access" in err
    assert client("iam").list_role_policies(RoleName="wide")["PolicyNames"] == []
    acct = account()   # wired by someone else: verify must FAIL the trust check
    client("logs").create_log_group(logGroupName="g")
    client("cloudtrail").update_trail(
        Name="team-a", CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{acct}:log-group:g:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{acct}:role/wide")
    _, results = checks("--trail", "team-a")
    assert results["role.trust"]["status"] == "FAIL"


def test_other_service_only_with_explicit_flag_then_warn(server):
    make_trail("team-a")
    _trust_role("ec2too", [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole"}])
    admin = client("iam").create_policy(PolicyName="AdministratorAccess", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                 "Resource": "*"}]}))["Policy"]["Arn"]
    client("iam").attach_role_policy(RoleName="ec2too", PolicyArn=admin)
    code, out, err = tw("apply", "--trail", "team-a", "--yes", "--role-name", "ec2too",
                        "--accept-trusted-service", "ec2.amazonaws.com")
    assert code == 0, out + err
    assert "WARN: role ec2too also trusts ec2.amazonaws.com" in out
    assert "WARN: adopted role ec2too has other policies" in out and "AdministratorAccess" in out
    _, results = checks("--trail", "team-a", "--accept-trusted-service", "ec2.amazonaws.com")
    assert results["role.trust"]["status"] == "WARN"
    assert checks("--trail", "team-a")[1]["role.trust"]["status"] == "FAIL"


# ----------------------------------------------------------------------------------- no surprises

@pytest.mark.parametrize("have", [3653, None])
def test_adopted_retention_is_kept_and_shortening_is_destructive(server, have):
    make_trail("team-a")
    client("logs").create_log_group(logGroupName="keep")
    if have:
        client("logs").put_retention_policy(logGroupName="keep", retentionInDays=have)
    assert tw("apply", "--trail", "team-a", "--yes", "--log-group", "keep")[0] == 0
    (g,) = client("logs").describe_log_groups(logGroupNamePrefix="keep")["logGroups"]
    assert g.get("retentionInDays") == have
    code, out, _ = tw("plan", "--trail", "team-a", "--log-group", "keep", "--retention-days", "30",
                      "--output", "json")
    (step,) = [s for s in json.loads(out)["steps"] if s["api"] == "logs:PutRetentionPolicy"]
    assert step["destructive"] is True
    assert f"was {f'{have} days' if have else 'never expire'} -> 30 days" in step["message"]
    code, out, _ = tw("plan", "--trail", "team-a", "--log-group", "keep", "--retention-days", "30")
    assert "[DESTRUCTIVE]" in out and "DESTRUCTIVE" in out.split("Plan:")[1].splitlines()[0]


def test_role_path_is_kept(server):
    make_trail("team-a")
    client("iam").create_role(RoleName="cwl", Path="/service-role/",
                              AssumeRolePolicyDocument=json.dumps(trust_policy()))
    assert tw("apply", "--trail", "team-a", "--yes", "--role-name", "cwl")[0] == 0
    assert client("cloudtrail").get_trail(Name="team-a")["Trail"]["CloudWatchLogsRoleArn"] == \
        f"arn:aws:iam::{account()}:role/service-role/cwl"
    clients = AwsClients(region=REGION)   # adopted from the trail: converged, path and all
    assert tw("apply", "--trail", "team-a", "--yes", clients=clients)[0] == 0
    assert clients.mutating_calls() == []


def test_console_policy_differing_only_in_sid_and_form_makes_no_write(server):
    arn = make_trail("team-a")
    acct = account()
    res = f"arn:aws:logs:{REGION}:{acct}:log-group:CloudTrail/team-a:log-stream:{acct}_CloudTrail_{REGION}*"
    client("logs").create_log_group(logGroupName="CloudTrail/team-a")
    client("logs").put_retention_policy(logGroupName="CloudTrail/team-a", retentionInDays=365)
    client("iam").create_role(RoleName="CloudTrail_CloudWatchLogs_Role",
                              AssumeRolePolicyDocument=json.dumps(trust_policy()))
    console = {"Version": "2012-10-17", "Statement": [   # reversed order, strings, other Sids
        {"Sid": "AWSCloudTrailPutLogEvents20141101", "Effect": "Allow",
         "Action": "logs:PutLogEvents", "Resource": res},
        {"Sid": "AWSCloudTrailCreateLogStream2014110", "Effect": "Allow",
         "Action": ["logs:CreateLogStream"], "Resource": [res]}]}
    client("iam").put_role_policy(RoleName="CloudTrail_CloudWatchLogs_Role",
                                  PolicyName="oneClick_CloudTrail_CloudWatchLogs_Role",
                                  PolicyDocument=json.dumps(console))
    client("cloudtrail").update_trail(
        Name=arn, CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{acct}:log-group:CloudTrail/team-a:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{acct}:role/CloudTrail_CloudWatchLogs_Role")
    clients = AwsClients(region=REGION)
    code, out, err = tw("apply", "--trail", "team-a", "--yes", clients=clients)
    assert code == 0, out + err
    assert clients.mutating_calls() == [] and "0 changes" in out


def test_kms_key_alias_is_resolved_and_checked(server):
    make_trail("team-a")
    acct = account()
    kms = client("kms")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{acct}:root"}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Allow", "Principal": {"Service": f"logs.{REGION}.amazonaws.com"},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                    "kms:Describe*"], "Resource": "*",
         "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                   f"arn:aws:logs:{REGION}:{acct}:*"}}}]}
    key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]
    kms.create_alias(AliasName="alias/audit", TargetKeyId=key["KeyId"])
    for form in ("alias/audit", f"arn:aws:kms:{REGION}:{acct}:alias/audit", key["KeyId"]):
        code, out, err = tw("plan", "--trail", "team-a", "--kms-key", form, "--output", "json")
        assert code == 0, err
        assert json.loads(out)["log_group"]["kms_key"] == key["Arn"]
        (create,) = [s for s in json.loads(out)["steps"] if s["api"] == "logs:CreateLogGroup"]
        assert create["params"]["kmsKeyId"] == key["Arn"]
    kms.disable_key(KeyId=key["KeyId"])
    code, out, err = tw("plan", "--trail", "team-a", "--kms-key", "alias/audit", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "KmsKeyUnusable"
    code, out, _ = tw("plan", "--trail", "team-a", "--kms-key",
                      f"arn:aws:kms:eu-west-1:{acct}:key/{key['KeyId']}", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "KmsKeyWrongRegion"


def test_delegated_admin_take_over_needs_the_flag(server):
    arn = make_trail("org")
    client("cloudtrail").update_trail(   # delivers to the management account's group
        Name=arn, CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:999999999999:log-group:mgmt:*",
        CloudWatchLogsRoleArn="arn:aws:iam::999999999999:role/mgmt-cwl")
    code, out, err = tw("apply", "--trail", "org", "--yes", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "DeliveryOwnedElsewhere"
    assert "would stop receiving events" in json.loads(out)["error"]["message"]
    assert groups() == []
    code, out, _ = tw("plan", "--trail", "org", "--take-over-delivery")
    assert code == 0 and "CHANGE OF OWNER" in out and "999999999999" in out
    code, out, _ = tw("remove", "--trail", "org", "--yes", "--output", "json")
    assert code == 1 and json.loads(out)["error"]["code"] == "DeliveryOwnedElsewhere"
    assert client("cloudtrail").get_trail(Name="org")["Trail"]["CloudWatchLogsLogGroupArn"]


# ----------------------------------------------------------------------------------- plan files

def test_saved_plan_is_applied_exactly(server, tmp_path):
    make_trail("team-a", multi_region=True)
    path = tmp_path / "plan.json"
    code, out, err = tw("plan", "--trail", "team-a", "--cis-alarms", "--out", str(path))
    assert code == 0, err
    saved = json.loads(path.read_text())
    assert saved["state_digest"].startswith("sha256:") and saved["plan"]["steps"]
    assert '"Statement"' in out        # the full policy documents, not just a summary
    clients = AwsClients(region=REGION)
    code, out, err = tw("apply", "--plan", str(path), "--yes", clients=clients)
    assert code == 0, out + err
    ops = [op for _, op, _ in clients.mutating_calls()]
    assert ops == [s["api"].split(":")[1] for s in saved["plan"]["steps"]]
    assert fails("--trail", "team-a") == []


def test_saved_plan_is_refused_after_a_change(server, tmp_path):
    make_trail("team-a")
    path = tmp_path / "plan.json"
    assert tw("plan", "--trail", "team-a", "--out", str(path))[0] == 0
    client("logs").create_log_group(logGroupName="CloudTrail/team-a")   # someone else acts meanwhile
    clients = AwsClients(region=REGION)
    code, out, err = tw("apply", "--plan", str(path), "--yes", "--output", "json",
                        clients=clients)
    assert code == 1 and json.loads(out)["error"]["code"] == "PlanStale"
    assert "changed" in err and clients.mutating_calls() == []
    # the fix is a command to paste: the plan's own trail and file
    remediation = json.loads(out)["error"]["remediation"]
    assert f"trailwatch plan --trail arn:aws:cloudtrail:{REGION}:" in remediation
    assert f"--out {path}" in remediation


# ----------------------------------------------------------------------------------- CLI contract

def test_apply_exits_1_when_its_verify_fails_on_a_stopped_trail(server):
    make_trail("team-a", logging=False)
    code, out, err = tw("apply", "--trail", "team-a", "--yes")
    assert "FAIL  trail.logging" in out and code == 1


def test_json_errors_on_stdout_and_text_on_stderr(server):
    code, out, err = tw("plan", "--trail", "nope", "--output", "json")
    doc = json.loads(out)
    assert code == 1 and set(doc["error"]) == {"code", "message", "remediation"}
    assert doc["error"]["code"] == "TrailNotFoundException" and "nope" in err
    code, out, err = tw("--output", "json", "plan", "--trail", "x", "--retention-days", "42")
    assert code == 2 and json.loads(out)["error"]["code"] == "UsageError" and "42" in err


@pytest.mark.parametrize("argv", [
    ["verify", "--trail", "team-a", "--retention-days", "30"],
    ["verify", "--trail", "team-a", "--cis-alarms"],
    ["verify", "--trail", "team-a", "--kms-key", "alias/x"],
    ["remove", "--trail", "team-a", "--kms-key", "alias/x"],
    ["remove", "--trail", "team-a", "--stream-scope", "group"],
    ["remove", "--trail", "team-a", "--org-id", "o-abcdefghij"],
    ["plan", "--trail", "team-a", "--role-name", "bad name!"],
    ["plan", "--trail", "team-a", "--log-group", "has space"],
    ["plan", "--trail", "team-a", "--role-name", "x" * 65],
])
def test_flags_a_command_does_not_use_and_bad_names_are_usage_errors(server, argv):
    clients = AwsClients(region=REGION)
    assert tw(*argv, clients=clients)[0] == 2
    assert clients.calls == []


def test_global_options_before_or_after_the_subcommand(server):
    make_trail("team-a")
    for argv in (["--region", REGION, "--output", "json", "plan", "--trail", "team-a"],
                 ["plan", "--trail", "team-a", "--region", REGION, "--output", "json"],
                 ["--output", "json", "plan", "--region", REGION, "--trail", "team-a"]):
        code, out, err = tw(*argv)
        assert code == 0, err
        assert json.loads(out)["trail"]["name"] == "team-a"


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "setup.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_region_from_aws_region_or_default_and_missing_is_usage_error(server):
    make_trail("far", region="eu-west-1")
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        r = _cli("plan", "--trail", "far", "--output", "json", env=_subprocess_env(**{var: "eu-west-1"}))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["trail"]["home_region"] == "eu-west-1"
    r = _cli("--output", "json", "verify", "--trail", "far", env=_subprocess_env())
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "NoRegion"
    assert "AWS_REGION" in r.stderr


# ----------------------------------------------------------------------------------- Ctrl-C

class _HangingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to moto, except CloudTrail UpdateTrail, which it holds until released."""

    upstream = ""
    hit = threading.Event()
    release = threading.Event()

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-Amz-Target", "").endswith(".UpdateTrail"):
            type(self).hit.set()
            type(self).release.wait(60)
            return
        host = self.upstream.split("//")[1]
        conn = http.client.HTTPConnection(host, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_ctrl_c_during_apply_reports_done_in_flight_not_run_and_exits_130(server):
    make_trail("team-a", multi_region=True)
    _HangingProxy.upstream = server
    _HangingProxy.hit.clear()
    _HangingProxy.release.clear()
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HangingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = _subprocess_env(AWS_DEFAULT_REGION=REGION,
                          AWS_ENDPOINT_URL_CLOUDTRAIL=f"http://127.0.0.1:{proxy.server_port}")
    proc = subprocess.Popen([sys.executable, "-m", "setup.cli", "apply", "--trail", "team-a", "--yes",
                             "--cis-alarms"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        while not _HangingProxy.hit.wait(0.2):   # no clock: wait for the call, or an early exit
            if proc.poll() is not None:
                raise AssertionError(f"apply ended before UpdateTrail: {proc.communicate()}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        _HangingProxy.release.set()
        if proc.poll() is None:
            proc.kill()
        proxy.shutdown()
        proxy.server_close()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "done     logs:CreateLogGroup" in err and "done     iam:PutRolePolicy" in err
    assert "INTERRUPTED cloudtrail:UpdateTrail" in err
    assert "not run  sns:CreateTopic" in err and "not run  logs:PutMetricFilter" in err


# ----------------------------------------------------------------------------------- packaging

_BLOCK = ("import sys\n"
          "class _Block:\n"
          "    def find_spec(self, name, path=None, target=None):\n"
          "        if name.split('.')[0] in {BLOCKED}:\n"
          "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
          "sys.meta_path.insert(0, _Block())\n")


def test_cli_works_without_extras_and_demo_names_its_extra(tmp_path):
    blocked = {"moto", "pytest", "hypothesis", "werkzeug", "flask", "awscli", "cfnlint"}
    (tmp_path / "sitecustomize.py").write_text(_BLOCK.format(BLOCKED=sorted(blocked)))
    env = _subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    r = _cli("--help", env=env)
    assert r.returncode == 0 and "plan" in r.stdout
    r = _cli("plan", "--trail", "x", "--retention-days", "42", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _cli("demo", env=env)
    assert r.returncode == 2 and "pip install 'trailwatch[demo]'" in r.stderr
    assert "Traceback" not in r.stderr
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "demo = [" in pyproject


def test_demo_and_cli_do_not_import_each_other():
    import ast
    imported = set()
    demo_files = sorted((ROOT / "setup" / "demo").glob("*.py"))
    assert len(demo_files) >= 5
    for path in demo_files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
    assert not {m for m in imported if m and (m == "setup.cli" or m.startswith("setup.cli."))}
    r = subprocess.run([sys.executable, "-c", "import sys, setup.cli; "
                        "print('setup.demo' in sys.modules)"], capture_output=True, text=True,
                       env=_subprocess_env(), timeout=60)
    assert r.stdout.strip() == "False", r.stderr


# ----------------------------------------------------------------------------------- permissions

def test_check_permissions_denied_simulation_is_a_warning_not_an_abort(server):
    from botocore.exceptions import ClientError
    make_trail("team-a", multi_region=True)
    clients = AwsClients(region=REGION)
    iam = clients.client("iam", REGION)

    def denied(**kw):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed to "
                                     "simulate"}}, "SimulatePrincipalPolicy")
    iam.simulate_principal_policy = denied
    code, out, err = tw("plan", "--trail", "team-a", "--check-permissions", "--cis-alarms",
                        clients=clients)
    assert code == 0 and "WARN: could not simulate permissions (AccessDenied" in out
    assert "cloudtrail:UpdateTrail" in out          # the plan itself is still shown


def test_check_permissions_covers_apply_and_verify_calls_with_resources(server):
    make_trail("team-a", multi_region=True)
    clients = AwsClients(region=REGION)
    iam = clients.client("iam", REGION)
    calls = []

    def simulate(**kw):
        calls.append(kw)
        return {"IsTruncated": False, "EvaluationResults": [
            {"EvalActionName": a, "EvalDecision": "allowed"} for a in kw["ActionNames"]]}
    iam.simulate_principal_policy = simulate
    code, out, _ = tw("plan", "--trail", "team-a", "--check-permissions", "--cis-alarms",
                      "--output", "json", clients=clients)
    assert code == 0 and json.loads(out)["missing_permissions"] == []
    asked = {(a, (c.get("ResourceArns") or ["*"])[0]) for c in calls for a in c["ActionNames"]}
    acct = account()
    group = f"arn:aws:logs:{REGION}:{acct}:log-group:CloudTrail/team-a"
    for action in ("logs:CreateLogGroup", "logs:PutMetricFilter", "logs:DescribeMetricFilters",
                   "logs:DescribeSubscriptionFilters", "logs:PutRetentionPolicy"):
        assert (action, group) in asked, action
    trail = f"arn:aws:cloudtrail:{REGION}:{acct}:trail/team-a"
    assert ("cloudtrail:UpdateTrail", trail) in asked and ("cloudtrail:GetTrailStatus", trail) in asked
    for action in ("cloudwatch:PutMetricAlarm", "sns:CreateTopic", "sns:ListSubscriptionsByTopic",
                   "cloudwatch:DescribeAlarms", "iam:CreateRole", "iam:PutRolePolicy",
                   "iam:PassRole", "sts:GetCallerIdentity"):
        assert any(a == action for a, _ in asked), action
