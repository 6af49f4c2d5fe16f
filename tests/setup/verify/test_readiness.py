"""Issue 21: `trailwatch readiness`, on moto: an empty account FAILs with the fixing command; a
ready one passes; read-only; per Region; a source that cannot be read is a WARN, not a crash."""

from __future__ import annotations

import contextlib
import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from setup.aws import AwsClients
from setup.cli import main
from setup.verify.readiness import run_readiness

REGION = "us-east-1"


@pytest.fixture
def aws():
    with mock_aws():
        yield


def c(service: str, region: str = REGION):
    return boto3.client(service, region_name=region)


def tw(*argv: str) -> tuple[int, dict, AwsClients]:
    out, err = io.StringIO(), io.StringIO()
    clients = AwsClients(region=REGION)
    with contextlib.redirect_stderr(err):
        code = main(["--region", REGION, "readiness", *argv, "--output", "json"], out=out,
                    stdin=io.StringIO(""), clients=clients)
    assert out.getvalue(), err.getvalue()
    return code, json.loads(out.getvalue()), clients


def by_id(doc: dict, region: str | None = REGION) -> dict[str, dict]:
    return {x["id"]: x for x in doc["checks"]
            if x["details"]["region"] in (region, "global")}


def make_ready(region: str = REGION) -> None:
    s3 = c("s3", region)
    s3.create_bucket(Bucket="trail-bucket")
    s3.create_bucket(Bucket="access-logs")
    s3.put_bucket_policy(Bucket="access-logs", Policy=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
                       "Action": "s3:PutObject", "Resource": "arn:aws:s3:::access-logs/*"}]}))
    for b in ("trail-bucket", "access-logs"):
        s3.put_bucket_logging(Bucket=b, BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": "access-logs", "TargetPrefix": f"{b}/"}})
    logs = c("logs", region)
    logs.create_log_group(logGroupName="CloudTrail/audit")
    iam = c("iam")
    role = iam.create_role(RoleName="ct", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    group = logs.describe_log_groups()["logGroups"][0]["arn"]
    ct = c("cloudtrail", region)
    ct.create_trail(Name="audit", S3BucketName="trail-bucket", IsMultiRegionTrail=True,
                    EnableLogFileValidation=True, CloudWatchLogsLogGroupArn=group,
                    CloudWatchLogsRoleArn=role)
    ct.put_event_selectors(TrailName="audit", EventSelectors=[
        {"ReadWriteType": "All", "IncludeManagementEvents": True}])   # AWS's default selector
    ct.start_logging(Name="audit")
    cfg = c("config", region)
    cfg.put_configuration_recorder(ConfigurationRecorder={
        "name": "default", "roleARN": role,
        "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True}})
    cfg.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": "trail-bucket"})
    cfg.start_configuration_recorder(ConfigurationRecorderName="default")
    ec2 = c("ec2", region)
    for v in ec2.describe_vpcs()["Vpcs"]:
        ec2.create_flow_logs(ResourceType="VPC", ResourceIds=[v["VpcId"]], TrafficType="ALL",
                             LogDestinationType="s3", LogDestination="arn:aws:s3:::trail-bucket")


def test_an_empty_account_fails_with_the_fixing_commands(aws):
    c("s3").create_bucket(Bucket="no-logging")
    code, doc, clients = tw()
    assert code == 1
    checks = by_id(doc)
    assert checks["cloudtrail.multi_region"]["status"] == "FAIL"
    assert checks["config.recorder"]["status"] == "FAIL"
    assert "put-configuration-recorder" in checks["config.recorder"]["remediation"]
    assert checks["s3.access_logging"]["status"] == "FAIL"
    assert "no-logging" in checks["s3.access_logging"]["message"]
    assert checks["vpc.flow_logs"]["status"] == "FAIL"        # moto's default VPC
    assert checks["vpc.flow_logs"]["remediation"].startswith(
        f"trailwatch flow-logs apply --region {REGION} --vpc vpc-")
    assert checks["waf.logging"]["status"] == "PASS"          # no web ACLs
    assert clients.mutating_calls() == []                    # read-only
    assert doc["summary"]["fail"] >= 4


def test_a_ready_account_passes(aws):
    make_ready()
    code, doc, clients = tw()
    checks = by_id(doc)
    assert code == 0, [x for x in doc["checks"] if x["status"] == "FAIL"]
    for cid in ("cloudtrail.multi_region", "cloudtrail.management_events",
                "cloudtrail.log_file_validation", "cloudtrail.cloudwatch_logs", "config.recorder",
                "config.all_resources", "config.delivery_channel", "s3.access_logging",
                "vpc.flow_logs", "waf.logging"):
        assert checks[cid]["status"] == "PASS", checks[cid]
    assert "record version 2" in checks["vpc.flow_logs"]["message"]
    assert clients.mutating_calls() == []


def test_waf_web_acl_without_logging_fails(aws):
    w = c("wafv2")
    w.create_web_acl(Name="shop", Scope="REGIONAL", DefaultAction={"Allow": {}},
                     VisibilityConfig={"SampledRequestsEnabled": False,
                                       "CloudWatchMetricsEnabled": False, "MetricName": "shop"})
    _code, doc, _ = tw()
    check = by_id(doc)["waf.logging"]
    assert check["status"] == "FAIL" and "shop" in check["message"]
    assert "put-logging-configuration" in check["remediation"]


def test_each_region_is_reported_and_a_stopped_recorder_fails(aws):
    make_ready()
    code, doc, _ = tw("--regions", f"{REGION},eu-west-1")
    assert doc["regions"] == [REGION, "eu-west-1"]
    eu = by_id(doc, "eu-west-1")
    assert eu["config.recorder"]["status"] == "FAIL"      # Config is per Region
    assert eu["vpc.flow_logs"]["status"] == "FAIL"
    assert by_id(doc)["config.recorder"]["status"] == "PASS"
    assert code == 1


def test_an_unreadable_source_is_a_warn_not_a_crash(aws, monkeypatch):
    clients = AwsClients(region=REGION)
    cfg = clients.client("config", REGION)

    def denied(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                          "DescribeConfigurationRecorders")
    monkeypatch.setattr(cfg, "describe_configuration_recorders", denied)
    results = {r.id: r for r in run_readiness(clients, [REGION])}
    assert results["config.recorder"].status == "WARN"
    assert "config:DescribeConfigurationRecorders" in results["config.recorder"].remediation


def test_a_few_hundred_buckets_are_read_concurrently(aws):
    s3 = c("s3")
    for i in range(300):
        s3.create_bucket(Bucket=f"b-{i:03d}")
    _code, doc, clients = tw()
    check = by_id(doc)["s3.access_logging"]
    assert "300 of 300" in check["message"]
    assert len(check["details"]["buckets"]) == 300
    assert [op for _, op, _ in clients.calls].count("GetBucketLogging") == 300


def test_a_single_region_trail_covers_only_its_own_region(aws):
    """A single-Region trail is visible only from its home Region: readiness asks every Region."""
    s3 = c("s3", "eu-west-1")
    s3.create_bucket(Bucket="eu-trail-bucket",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ct = c("cloudtrail", "eu-west-1")
    ct.create_trail(Name="eu-only", S3BucketName="eu-trail-bucket")
    ct.start_logging(Name="eu-only")
    code, doc, _ = tw("--regions", f"{REGION},eu-west-1")
    regional = {(x["details"]["region"], x["id"]): x["status"] for x in doc["checks"]}
    assert regional[(REGION, "cloudtrail.region")] == "FAIL"
    assert ("eu-west-1", "cloudtrail.region") not in regional          # covered
    assert regional[("global", "cloudtrail.multi_region")] == "FAIL"
    assert code == 1


def test_throttled_buckets_are_a_warn_and_the_rest_are_still_judged(aws, monkeypatch):
    """Throttling that outlasts botocore's retries is reported per bucket, never a crash."""
    s3 = c("s3")
    for name in ("calm-1", "calm-2", "busy-1"):
        s3.create_bucket(Bucket=name)
    clients = AwsClients(region=REGION)
    client = clients.client("s3", REGION)
    real = client.get_bucket_logging

    def throttled(**kw):
        if kw["Bucket"].startswith("busy"):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}},
                              "GetBucketLogging")
        return real(**kw)
    monkeypatch.setattr(client, "get_bucket_logging", throttled)
    results = {r.id: r for r in run_readiness(clients, [REGION])}
    assert results["s3.access_logging"].status == "FAIL"
    assert results["s3.access_logging"].details["buckets"] == ["calm-1", "calm-2"]
    assert results["s3.access_logging_unreadable"].status == "WARN"
    assert "busy-1" in results["s3.access_logging_unreadable"].message


@pytest.mark.parametrize("call", ["get_trail_status", "get_event_selectors",
                                  "get_logging_configuration"])
def test_a_timed_out_read_is_a_warn_not_a_crash(aws, monkeypatch, call):
    """Review F6 (exp6): a BotoCoreError (ReadTimeoutError) from GetTrailStatus,
    GetEventSelectors or GetLoggingConfiguration escaped and failed the whole watchdog run."""
    from botocore.exceptions import ReadTimeoutError
    make_ready()
    c("wafv2").create_web_acl(Name="shop", Scope="REGIONAL", DefaultAction={"Allow": {}},
                              VisibilityConfig={"SampledRequestsEnabled": False,
                                                "CloudWatchMetricsEnabled": False,
                                                "MetricName": "shop"})
    clients = AwsClients(region=REGION)
    service = "wafv2" if call == "get_logging_configuration" else "cloudtrail"

    def timeout(**_):
        raise ReadTimeoutError(endpoint_url=f"https://{service}.{REGION}.amazonaws.com")
    monkeypatch.setattr(clients.client(service, REGION), call, timeout)
    results = {r.id + "." + r.details["region"]: r for r in run_readiness(clients, [REGION])}
    check = {"get_trail_status": "cloudtrail.trail.global",
             "get_event_selectors": "cloudtrail.management_events.global",
             "get_logging_configuration": f"waf.logging.{REGION}"}[call]
    assert results[check].status == "WARN" and "ReadTimeoutError" in results[check].message
    if call == "get_trail_status":      # unknown status: a WARN, not a FAIL alert
        assert results["cloudtrail.multi_region.global"].status == "WARN"
        assert results[f"cloudtrail.region.{REGION}"].status == "WARN"
