"""`trailwatch subscribe` and `apply/plan/remove --destination` (issue 14) against a moto server
with two accounts: the management account owns the organization trail's log group, the audit
account owns the CloudWatch Logs destination. moto is made strict about destinations
(setup.demo.localaws: the destination must exist, be in the log group's Region and admit the caller)."""

from __future__ import annotations

import io
import json

import boto3
import pytest

from setup.aws import AwsClients
from setup.cli import main
from setup.wiring.executor import Executor
from setup.demo.localaws import strict_destinations
from setup.wiring.subscription import filter_name

REGION = "us-east-1"
MGMT = "123456789012"
TRAIL = "org-trail"
GROUP = f"CloudTrail/{TRAIL}"
OURS = filter_name(TRAIL)


@pytest.fixture
def server(monkeypatch):
    from moto.server import ThreadedMotoServer
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    import urllib.request   # moto's state is process-global: start from an empty AWS
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset",
                                                  method="POST")).read()
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    try:
        with strict_destinations():
            yield
    finally:
        urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset",
                                                      method="POST")).read()
        srv.stop()


def audit_session(account: str) -> boto3.Session:
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
        RoleSessionName="test")["Credentials"]
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=REGION)


@pytest.fixture
def world(server):
    org = boto3.client("organizations", region_name=REGION)
    org_id = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    audit = org.create_account(Email="audit@example.com", AccountName="audit")[
        "CreateAccountStatus"]["AccountId"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="trail-bucket")
    ct = boto3.client("cloudtrail", region_name=REGION)
    ct.create_trail(Name=TRAIL, S3BucketName="trail-bucket", IsMultiRegionTrail=True,
                    IsOrganizationTrail=True)
    ct.start_logging(Name=TRAIL)
    code, out = run(["apply", "--trail", TRAIL, "--yes"])
    assert code == 0, out
    session = audit_session(audit)
    kinesis = session.client("kinesis")
    kinesis.create_stream(StreamName="trail-events", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    stream = kinesis.describe_stream_summary(StreamName="trail-events")[
        "StreamDescriptionSummary"]["StreamARN"]
    dest = session.client("logs").put_destination(
        destinationName="tw-trail-events", targetArn=stream,
        roleArn=f"arn:aws:iam::{audit}:role/cwl-to-kinesis")["destination"]
    return {"org_id": org_id, "audit": audit, "session": session, "dest": dest["arn"],
            "stream": stream}


def allow(world, policy):
    world["session"].client("logs").put_destination_policy(
        destinationName="tw-trail-events", accessPolicy=json.dumps(policy))


def org_policy(world, org_id=None):
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "logs:PutSubscriptionFilter",
        "Resource": world["dest"],
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": org_id or world["org_id"]}}}]}


def run(argv, clients=None):
    out, err = io.StringIO(), io.StringIO()
    clients = clients or AwsClients(region=REGION)
    import contextlib
    with contextlib.redirect_stderr(err):
        code = main(argv, out=out, clients=clients, stdin=io.StringIO(""),
                    executor_factory=lambda c, t: Executor(c, sleep=lambda s: None,
                                                           propagation_timeout=t,
                                                           progress=lambda m: None))
    return code, out.getvalue() + err.getvalue()


def filters():
    return {f["filterName"]: f["destinationArn"] for f in boto3.client(
        "logs", region_name=REGION).describe_subscription_filters(
        logGroupName=GROUP)["subscriptionFilters"]}


def test_plan_shows_subscription_without_writing(world):
    allow(world, org_policy(world))
    clients = AwsClients(region=REGION)
    code, out = run(["plan", "--trail", TRAIL, "--destination", world["dest"]], clients)
    assert code == 0, out
    assert "logs:PutSubscriptionFilter" in out and world["dest"] in out
    assert "another account's destination" in out
    assert clients.mutating_calls() == [] and filters() == {}
    code, out = run(["plan", "--trail", TRAIL, "--destination", world["dest"],
                     "--output", "json"])
    step = json.loads(out)["steps"][-1]
    assert step["params"] == {"logGroupName": GROUP, "filterName": OURS, "filterPattern": "",
                              "destinationArn": world["dest"]}
    assert "logs:PutSubscriptionFilter" in json.loads(out)["iam_actions_required"]


def test_subscribe_applies_once_then_converges(world):
    allow(world, org_policy(world))
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"])
    assert code == 0, out
    assert filters() == {OURS: world["dest"]}
    clients = AwsClients(region=REGION)
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"],
                    clients)
    assert code == 0, out
    assert "nothing to do" in out and clients.mutating_calls() == []
    assert filters() == {OURS: world["dest"]}


def test_subscribe_refuses_without_confirmation(world):
    allow(world, org_policy(world))
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"]])
    assert code == 2 and "refusing" in out and filters() == {}


def test_destination_policy_must_admit_the_account(world):
    allow(world, org_policy(world, org_id="o-zzzzzzzzzz"))     # another organization
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"])
    assert code == 1 and "AccessDenied" in out and filters() == {}
    allow(world, {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [MGMT]}, "Action": "logs:PutSubscriptionFilter",
        "Resource": world["dest"]}]})
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"])
    assert code == 0, out
    assert filters() == {OURS: world["dest"]}


def test_third_filter_is_refused_listing_the_existing_ones(world):
    allow(world, org_policy(world))
    logs = boto3.client("logs", region_name=REGION)
    kinesis = boto3.client("kinesis", region_name=REGION)
    for name in ("siem-a", "siem-b"):
        kinesis.create_stream(StreamName=name, ShardCount=1)
        arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
            "StreamARN"]
        logs.put_subscription_filter(logGroupName=GROUP, filterName=name, filterPattern="",
                                     destinationArn=arn,
                                     roleArn=f"arn:aws:iam::{MGMT}:role/cwl")
    before = filters()
    clients = AwsClients(region=REGION)
    code, out = run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"],
                    clients)
    assert code == 1
    assert "2 subscription filters" in out and "siem-a ->" in out and "siem-b ->" in out
    assert clients.mutating_calls() == [] and filters() == before


def test_own_filter_to_another_destination_is_replaced_and_shown(world):
    allow(world, org_policy(world))
    audit_logs = world["session"].client("logs")
    other = audit_logs.put_destination(destinationName="tw-other", targetArn=world["stream"],
                                       roleArn=f"arn:aws:iam::{world['audit']}:role/x")[
        "destination"]["arn"]
    audit_logs.put_destination_policy(destinationName="tw-other", accessPolicy=json.dumps(
        {**org_policy(world), "Statement": [{**org_policy(world)["Statement"][0],
                                              "Resource": other}]}))
    assert run(["subscribe", "--trail", TRAIL, "--destination", other, "--yes"])[0] == 0
    code, out = run(["plan", "--trail", TRAIL, "--destination", world["dest"]])
    assert "REPLACE subscription filter" in out and other in out
    assert run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"])[0] == 0
    assert filters() == {OURS: world["dest"]}


def test_remove_takes_only_trailwatchs_filter_away(world):
    allow(world, org_policy(world))
    assert run(["subscribe", "--trail", TRAIL, "--destination", world["dest"], "--yes"])[0] == 0
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName="siem", ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName="siem")["StreamDescriptionSummary"][
        "StreamARN"]
    boto3.client("logs", region_name=REGION).put_subscription_filter(
        logGroupName=GROUP, filterName="siem", filterPattern="", destinationArn=arn,
        roleArn=f"arn:aws:iam::{MGMT}:role/cwl")
    code, out = run(["remove", "--trail", TRAIL, "--yes"])
    assert code == 0, out
    assert filters() == {"siem": arn}


def test_apply_with_destination_wires_and_subscribes(world):
    allow(world, org_policy(world))
    code, out = run(["apply", "--trail", TRAIL, "--destination", world["dest"], "--yes"])
    assert code == 0, out
    assert filters() == {OURS: world["dest"]}


@pytest.mark.parametrize("dest, message", [
    ("arn:aws:logs:eu-west-1:{audit}:destination:tw-trail-events", "Region"),
    ("arn:aws:lambda:us-east-1:{audit}:function:processor", "not a cross-account"),
    ("arn:aws:kinesis:us-east-1:{mgmt}:stream/siem", "--subscription-role"),
    ("not-an-arn", "not a destination ARN"),
])
def test_bad_destinations_are_refused_with_a_fix(world, dest, message):
    code, out = run(["subscribe", "--trail", TRAIL, "--destination",
                     dest.format(audit=world["audit"], mgmt=MGMT), "--yes"])
    assert code == 1 and message in out and "fix:" in out
    assert filters() == {}
