"""verify's subscription.filters check looks at each destination for real (issue 14).
Observed before: it said "destinations reachable" for a Kinesis or destination subscription
without checking anything."""

from __future__ import annotations

import datetime as dt
import io
import json

import boto3
import pytest
from moto import mock_aws

from setup.aws import AwsClients
from setup.cli import main
from setup.demo.localaws import strict_destinations

REGION, ACCT, AUDIT = "us-east-1", "123456789012", "999999999999"
GROUP = "CloudTrail/main"
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "sts:AssumeRole",
    "Condition": {"StringLike": {"aws:SourceArn": f"arn:aws:logs:{REGION}:{ACCT}:*"}}}]}


@pytest.fixture
def aws(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws(), strict_destinations():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        assert verify_run(["apply", "--trail", "main", "--yes"])[0] == 0
        yield


def verify_run(argv):
    out = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(argv, out=out, clients=AwsClients(region=REGION), stdin=io.StringIO(""))
    return code, out.getvalue()


def subscription_check():
    code, out = verify_run(["verify", "--trail", "main", "--output", "json"])
    (check,) = [c for c in json.loads(out)["checks"] if c["id"] == "subscription.filters"]
    return check


def stream(name="trail-events", key=None):
    k = boto3.client("kinesis", region_name=REGION)
    k.create_stream(StreamName=name, ShardCount=1)
    if key:
        k.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=key)
    return k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def role(name, statements):
    iam = boto3.client("iam")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="put", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))
    return arn


def subscribe(dest, role_arn=None, name="siem"):
    kw = {"roleArn": role_arn} if role_arn else {}
    boto3.client("logs", region_name=REGION).put_subscription_filter(
        logGroupName=GROUP, filterName=name, filterPattern="", destinationArn=dest, **kw)


def test_same_account_kinesis_role_that_can_put_passes(aws):
    arn = stream()
    subscribe(arn, role("cwl", [{"Effect": "Allow", "Action": "kinesis:PutRecord",
                                 "Resource": arn}]))
    c = subscription_check()
    assert c["status"] == "PASS" and "can kinesis:PutRecord" in c["message"], c


def test_same_account_kinesis_role_that_cannot_put_fails(aws):
    arn = stream()
    other = arn.replace("trail-events", "something-else")
    subscribe(arn, role("cwl", [{"Effect": "Allow", "Action": "kinesis:PutRecord",
                                 "Resource": other}]))
    c = subscription_check()
    assert c["status"] == "FAIL" and "may not kinesis:PutRecord" in c["message"], c
    assert arn in c["remediation"]


def test_explicit_deny_and_missing_role_fail(aws):
    arn = stream()
    subscribe(arn, role("cwl", [{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"},
                                {"Effect": "Deny", "Action": "kinesis:PutRecord",
                                 "Resource": arn}]))
    assert subscription_check()["status"] == "FAIL"
    subscribe(arn, f"arn:aws:iam::{ACCT}:role/nobody", name="siem")
    c = subscription_check()
    assert c["status"] == "FAIL" and "does not exist" in c["message"], c


def test_kms_encrypted_stream_needs_generate_data_key(aws):
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    arn = stream(key=key)
    subscribe(arn, role("cwl", [{"Effect": "Allow", "Action": "kinesis:PutRecord",
                                 "Resource": arn}]))
    c = subscription_check()
    assert c["status"] == "FAIL" and "kms:GenerateDataKey" in c["message"], c
    boto3.client("iam").put_role_policy(RoleName="cwl", PolicyName="kms", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                                                 "Action": "kms:GenerateDataKey",
                                                 "Resource": key}]}))
    assert subscription_check()["status"] == "PASS"


def audit_logs():
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{AUDIT}:role/admin", RoleSessionName="test")["Credentials"]
    return boto3.client("logs", region_name=REGION, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def cross_account_destination():
    logs = audit_logs()
    dest = logs.put_destination(destinationName="tw", targetArn=f"arn:aws:kinesis:{REGION}:"
                                f"{AUDIT}:stream/tw", roleArn=f"arn:aws:iam::{AUDIT}:role/cwl")[
        "destination"]["arn"]
    logs.put_destination_policy(destinationName="tw", accessPolicy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": [ACCT]},
                                                "Action": "logs:PutSubscriptionFilter",
                                                "Resource": dest}]}))
    return dest


def test_cross_account_destination_says_what_it_cannot_check(aws):
    subscribe(cross_account_destination(), name="trailwatch-subscribe-main")
    c = subscription_check()
    assert c["status"] == "PASS", c
    assert f"account {AUDIT}" in c["message"] and "cannot be checked from here" in c["message"]
    assert "no delivery errors" in c["message"]


def test_cross_account_destination_with_delivery_errors_fails(aws):
    subscribe(cross_account_destination(), name="trailwatch-subscribe-main")
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/Logs", MetricData=[{
            "MetricName": "DeliveryErrors", "Value": 7,
            "Timestamp": dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1),
            "Dimensions": [{"Name": "LogGroupName", "Value": GROUP},
                           {"Name": "DestinationType", "Value": "Kinesis"},
                           {"Name": "FilterName", "Value": "trailwatch-subscribe-main"}]}])
    c = subscription_check()
    assert c["status"] == "FAIL" and "7 delivery error(s)" in c["message"], c
    assert AUDIT in c["remediation"]


def test_same_account_destination_role_is_evaluated(aws):
    arn = stream()
    logs = boto3.client("logs", region_name=REGION)
    weak = role("cwl", [{"Effect": "Allow", "Action": "kinesis:DescribeStream", "Resource": arn}])
    dest = logs.put_destination(destinationName="local", targetArn=arn, roleArn=weak)[
        "destination"]["arn"]
    subscribe(dest)
    c = subscription_check()
    assert c["status"] == "FAIL" and "destination local" in c["message"], c


def test_cross_account_lambda_is_not_a_target(aws):
    from setup.verify.destinations import check_filter
    from setup.wiring.models import Target, Trail
    t = Target(trail=Trail("main", "arn", REGION, ACCT, False, True), account=ACCT,
               log_group=GROUP, role_name="r")
    f = check_filter(AwsClients(region=REGION), t, {
        "filterName": "x", "destinationArn": f"arn:aws:lambda:{REGION}:{AUDIT}:function:p"},
        dt.datetime.now(dt.timezone.utc))
    assert f.status == "FAIL" and "not a cross-account target" in f.message
