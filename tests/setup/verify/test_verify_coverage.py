"""verify: coverage, freshness and policy evaluation that matches IAM (moto in-process).

Each test here reproduces a defect observed in issue 10 (false passes, false fails, lenient
freshness) and fails on the code before the fix."""

from __future__ import annotations

import datetime as dt
import io
import json

import boto3
import pytest
from moto import mock_aws

from setup.aws import AwsClients
from setup.cli import main
from setup.wiring.models import Target, Trail, stream_policy, trust_policy
from setup.verify import checks as verify
from setup.verify import Context

ACCT = "123456789012"
REGION = "us-east-1"
GROUP = "CloudTrail/main"
ROLE = "trailwatch-cwl-main"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        yield


def make(multi=True, org=False, boundary: dict | None = None, inline: dict | None = None,
         managed: dict | None = None, kms: str | None = None) -> Target:
    ct = boto3.client("cloudtrail", region_name=REGION)
    ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=multi,
                    IsOrganizationTrail=org)
    ct.start_logging(Name="main")
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=GROUP, **({"kmsKeyId": kms} if kms else {}))
    iam = boto3.client("iam")
    kw = {}
    if boundary is not None:
        kw["PermissionsBoundary"] = iam.create_policy(
            PolicyName="boundary", PolicyDocument=json.dumps(boundary))["Policy"]["Arn"]
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust_policy()), **kw)
    trail = Trail("main", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main", REGION, ACCT, org,
                  multi, f"arn:aws:logs:{REGION}:{ACCT}:log-group:{GROUP}:*",
                  f"arn:aws:iam::{ACCT}:role/{ROLE}")
    target = Target(trail=trail, account=ACCT, log_group=GROUP, role_name=ROLE)
    if inline is None and managed is None:
        inline = stream_policy(target)
    if inline is not None:
        iam.put_role_policy(RoleName=ROLE, PolicyName="delivery", PolicyDocument=json.dumps(inline))
    if managed is not None:
        arn = iam.create_policy(PolicyName="managed-delivery",
                                PolicyDocument=json.dumps(managed))["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=ROLE, PolicyArn=arn)
    return target


def check(target: Target, fn, **ctx) -> verify.CheckResult:
    return fn(Context(AwsClients(region=REGION), target, now=lambda: NOW, **ctx))


def allow_logs(resource: str = "*") -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": resource}]}


# ----------------------------------------------------------------------------------- policy

def test_permissions_boundary_without_logs_is_not_a_pass(aws):
    boundary = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    r = check(make(boundary=boundary), verify.role_stream_policy)
    assert r.status == "FAIL"
    assert "permissions boundary" in r.message and "boundary" in r.remediation


def test_permissions_boundary_that_allows_logs_passes(aws):
    r = check(make(boundary=allow_logs()), verify.role_stream_policy)
    assert r.status == "PASS" and "within boundary" in r.message


def test_grant_in_attached_managed_policy_is_not_a_fail(aws):
    target = Target(trail=Trail("main", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main", REGION,
                                ACCT, False, True), account=ACCT,
                    log_group=GROUP, role_name=ROLE)
    r = check(make(managed=stream_policy(target)), verify.role_stream_policy)
    assert r.status == "PASS", r.message
    assert "1 managed policy" in r.message


def test_explicit_deny_in_managed_policy_wins_over_inline_allow(aws):
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "logs:PutLogEvents", "Resource": "*"}]}
    target = make(inline=allow_logs(), managed=deny)
    r = check(target, verify.role_stream_policy)
    assert r.status == "FAIL" and "explicit Deny" in r.message


def test_overflow_stream_names_are_evaluated(aws):
    exact = f"arn:aws:logs:{REGION}:{ACCT}:log-group:{GROUP}:log-stream:{ACCT}_CloudTrail_{REGION}"
    r = check(make(inline=allow_logs(exact)), verify.role_stream_policy)
    assert r.status == "FAIL"
    assert f"{ACCT}_CloudTrail_{REGION}_1" in r.message and "_<n>" in r.message


def test_evaluate_role_unit():
    from setup.policy_eval import evaluate_role
    ident = [allow_logs()]
    arn = "arn:aws:logs:us-east-1:1:log-group:g:log-stream:s"
    assert evaluate_role(ident, "logs:PutLogEvents", arn).allowed
    assert not evaluate_role(ident, "logs:PutLogEvents", arn,
                             {"Statement": [{"Effect": "Allow", "Action": "s3:*",
                                             "Resource": "*"}]}).allowed
    d = evaluate_role(ident, "logs:PutLogEvents", arn, {"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "logs:Put*", "Resource": "*"}]})
    assert not d.allowed and d.reason == "boundary-explicit-deny"
    assert not evaluate_role([], "logs:PutLogEvents", arn, allow_logs()).allowed


# ----------------------------------------------------------------------------------- freshness

def _status(delivered: dt.datetime | None):
    class CT:
        def get_trail_status(self, Name):
            return {"IsLogging": True, "LatestCloudWatchLogsDeliveryTime": delivered}
    return CT()


@pytest.mark.parametrize("age,expected", [
    (dt.timedelta(hours=26_461), "FAIL"),
    (dt.timedelta(hours=2, minutes=1), "FAIL"),
    (dt.timedelta(minutes=45), "WARN"),
    (dt.timedelta(minutes=21), "WARN"),
    (dt.timedelta(minutes=5), "PASS"),
])
def test_delivery_freshness_thresholds(age, expected):
    ctx = Context(AwsClients(region=REGION), target_only(), now=lambda: NOW)
    ctx._cache["status"] = _status(NOW - age).get_trail_status("x")
    assert verify.delivery_recent(ctx).status == expected


def test_max_delivery_age_is_configurable():
    ctx = Context(AwsClients(region=REGION), target_only(), now=lambda: NOW,
                  max_delivery_age=dt.timedelta(minutes=30))
    ctx._cache["status"] = _status(NOW - dt.timedelta(minutes=45)).get_trail_status("x")
    r = verify.delivery_recent(ctx)
    assert r.status == "FAIL" and "--max-delivery-age" in r.message


def target_only(multi=True) -> Target:
    trail = Trail("main", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main", REGION, ACCT, False,
                  multi)
    return Target(trail=trail, account=ACCT, log_group=GROUP, role_name=ROLE)


def test_stale_delivery_makes_verify_exit_1(aws, monkeypatch):
    make()
    from moto.cloudtrail.models import cloudtrail_backends
    status = cloudtrail_backends[ACCT][REGION].trails["main"].status
    original = type(status).description
    old = int((dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=26_461)).timestamp())
    monkeypatch.setattr(type(status), "description", lambda self: {
        **original(self), "LatestCloudWatchLogsDeliveryTime": old})
    boto3.client("cloudtrail", region_name=REGION).update_trail(
        Name="main", CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:{ACCT}:log-group:{GROUP}:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCT}:role/{ROLE}")
    out = io.StringIO()
    code = main(["verify", "--trail", "main", "--output", "json"], out=out,
                clients=AwsClients(region=REGION))
    checks = {c["id"]: c for c in json.loads(out.getvalue())["checks"]}
    assert checks["delivery.recent"]["status"] == "FAIL"
    assert code == 1


# ----------------------------------------------------------------------------------- coverage

def _data_events_only(target: Target) -> None:
    boto3.client("cloudtrail", region_name=REGION).put_event_selectors(
        TrailName="main", EventSelectors=[{
            "ReadWriteType": "All", "IncludeManagementEvents": False,
            "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}]}])


def test_data_events_only_trail_warns_without_cis(aws):
    target = make()
    _data_events_only(target)
    r = check(target, verify.trail_management_events)
    assert r.status == "WARN" and "no management events" in r.message


def test_data_events_only_trail_fails_when_cis_requested(aws):
    target = make()
    _data_events_only(target)
    r = check(target, verify.trail_management_events, cis_requested=True)
    assert r.status == "FAIL" and "can never fire" in r.message


def test_data_events_only_trail_fails_cis_filters_when_deployed(aws):
    from setup.wiring.cis_alarms import filter_params
    from handlers.detection.cis import CIS_CONTROLS
    target = make()
    logs = boto3.client("logs", region_name=REGION)
    for c in CIS_CONTROLS:
        logs.put_metric_filter(**filter_params(c, target))
    _data_events_only(target)
    assert check(target, verify.trail_management_events).status == "FAIL"
    r = check(target, verify.cis_metric_filters)
    assert r.status == "FAIL" and "never fire" in r.message


def test_read_only_management_events_fail_with_cis(aws):
    target = make()
    boto3.client("cloudtrail", region_name=REGION).put_event_selectors(
        TrailName="main", EventSelectors=[{"ReadWriteType": "ReadOnly",
                                           "IncludeManagementEvents": True}])
    r = check(target, verify.trail_management_events, cis_requested=True)
    assert r.status == "FAIL" and "ReadOnly" in r.message


def test_advanced_selectors_management_all_passes():
    kinds, notes = verify.management_coverage({"AdvancedEventSelectors": [
        {"Name": "mgmt", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}]})
    assert kinds == {"ReadOnly", "WriteOnly"} and not notes
    kinds, _ = verify.management_coverage({"AdvancedEventSelectors": [
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                            {"Field": "readOnly", "Equals": ["false"]}]}]})
    assert kinds == {"WriteOnly"}
    kinds, _ = verify.management_coverage({"AdvancedEventSelectors": [
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}]})
    assert kinds == set()


def test_single_region_trail(aws):
    target = make(multi=False)
    assert check(target, verify.trail_multi_region).status == "WARN"
    assert check(target, verify.trail_multi_region, cis_requested=True).status == "FAIL"


def test_global_service_events_excluded_warns(aws):
    target = make(multi=False)
    boto3.client("cloudtrail", region_name=REGION).update_trail(
        Name="main", IncludeGlobalServiceEvents=False)
    r = check(target, verify.trail_global_events)
    assert r.status == "WARN" and "IAM" in r.message


def test_kms_key_disabled_fails(aws):
    kms = boto3.client("kms", region_name=REGION)
    meta = kms.create_key()["KeyMetadata"]
    target = make(kms=meta["Arn"])
    assert check(target, verify.log_group_kms).status == "PASS"
    kms.disable_key(KeyId=meta["KeyId"])
    r = check(target, verify.log_group_kms)
    assert r.status == "FAIL" and "Disabled" in r.message


# ----------------------------------------------------------------------------------- SNS

def test_pending_subscription_is_not_a_subscriber():
    class SNS:
        def get_paginator(self, name):
            assert name == "list_subscriptions_by_topic"

            class P:
                def paginate(self, TopicArn):
                    yield {"Subscriptions": [{"SubscriptionArn": "PendingConfirmation",
                                              "Protocol": "email", "Endpoint": "a@example.com"}]}
            return P()

        def list_subscriptions_by_topic(self, TopicArn):   # the old code's call
            return next(self.get_paginator("list_subscriptions_by_topic").paginate(TopicArn))

    class Clients:
        def client(self, service, region=None):
            return SNS()

    ctx = Context(Clients(), target_only())   # type: ignore[arg-type]
    ctx._cache["cis_alarm_topics"] = {"1.1": [f"arn:aws:sns:{REGION}:{ACCT}:alarms"]}
    r = verify.cis_topic_subscribers(ctx)
    assert r.status == "WARN" and "confirmed" in r.message
