"""`apply --cis-alarms`: the handler's CIS catalog deployed as metric filters and alarms."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from handlers.detection.cis import CIS_CONTROLS
from setup.aws import AwsClients
from tests.setup.wiring.test_setup_integration import make_trail, run

ACCT = "123456789012"
PUBLISHED = json.loads((Path(__file__).resolve().parents[2] / "data" / "cis_patterns.json").read_text())[
    "controls"]


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
        make_trail()
        yield


def verify_checks(extra=()):
    code, out = run(["verify", "--trail", "main", "--output", "json", *extra],
                    AwsClients(region="us-east-1"))
    return code, {c["id"]: c for c in json.loads(out)["checks"]}


def test_cis_alarms_deploy_exact_strings_and_converge(aws):
    code, out = run(["apply", "--trail", "main", "--yes", "--cis-alarms"],
                    AwsClients(region="us-east-1"))
    assert code == 0, out
    logs = boto3.client("logs", region_name="us-east-1")
    filters = logs.describe_metric_filters(logGroupName="CloudTrail/main")["metricFilters"]
    # Compared with the published text kept as test data, not with the code's own constants.
    assert sorted(f["filterPattern"] for f in filters) == sorted(
        c["pattern"] for c in PUBLISHED.values())
    for f in filters:
        (t,) = f["metricTransformations"]
        assert (t["metricNamespace"], t["metricValue"]) == ("CISBenchmark", "1")
    alarms = boto3.client("cloudwatch", region_name="us-east-1").describe_alarms(
        AlarmNamePrefix="trailwatch-cis-")["MetricAlarms"]
    # issue 9: one topic per log group, trailwatch-cis-<log group id>
    (topic,) = [t["TopicArn"] for t in boto3.client("sns", region_name="us-east-1").list_topics()[
        "Topics"]]
    assert topic.startswith(f"arn:aws:sns:us-east-1:{ACCT}:trailwatch-cis-")
    assert len(alarms) == 15
    for a in alarms:
        assert (a["Statistic"], a["Period"], a["EvaluationPeriods"], a["Threshold"],
                a["ComparisonOperator"], a["AlarmActions"]) == (
            "Sum", 300, 1, 1.0, "GreaterThanOrEqualToThreshold", [topic])
    clients = AwsClients(region="us-east-1")
    code, out = run(["apply", "--trail", "main", "--yes", "--cis-alarms"], clients)
    assert code == 0 and clients.mutating_calls() == []
    code, checks = verify_checks()
    assert checks["cis.metric_filters"]["status"] == "PASS"
    assert checks["cis.alarms"]["status"] == "PASS"
    assert checks["cis.topic_subscribers"]["status"] == "WARN"   # nobody subscribed yet
    sqs = boto3.client("sqs", region_name="us-east-1")
    q = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name="us-east-1").subscribe(TopicArn=topic, Protocol="sqs",
                                                           Endpoint=qarn)
    assert verify_checks()[1]["cis.topic_subscribers"]["status"] == "PASS"


def test_tampered_filter_fails_verify_and_apply_rewrites_it(aws):
    run(["apply", "--trail", "main", "--yes", "--cis-alarms"], AwsClients(region="us-east-1"))
    c = CIS_CONTROLS[1]
    logs = boto3.client("logs", region_name="us-east-1")
    (mine,) = [f for f in logs.describe_metric_filters(logGroupName="CloudTrail/main")[
        "metricFilters"] if f["filterPattern"] == c.pattern]   # issue 9: names carry the group id
    logs.put_metric_filter(
        logGroupName="CloudTrail/main", filterName=mine["filterName"],
        filterPattern=c.pattern.replace("}", " && ($.eventName != HeadBucket)}"),
        metricTransformations=mine["metricTransformations"])
    code, checks = verify_checks()
    assert code == 1 and checks["cis.metric_filters"]["status"] == "FAIL"
    assert c.cis in checks["cis.metric_filters"]["message"]
    clients = AwsClients(region="us-east-1")
    run(["apply", "--trail", "main", "--yes", "--cis-alarms"], clients)
    assert [op for _, op, _ in clients.mutating_calls()] == ["PutMetricFilter"]
    assert verify_checks()[1]["cis.metric_filters"]["status"] == "PASS"


def test_given_topic_is_used_and_not_created(aws):
    topic = boto3.client("sns", region_name="us-east-1").create_topic(Name="secops")["TopicArn"]
    run(["apply", "--trail", "main", "--yes", "--cis-alarms", "--alarm-topic", topic],
        AwsClients(region="us-east-1"))
    topics = boto3.client("sns", region_name="us-east-1").list_topics()["Topics"]
    assert [t["TopicArn"] for t in topics] == [topic]


def test_remove_takes_the_cis_resources_away(aws):
    run(["apply", "--trail", "main", "--yes", "--cis-alarms"], AwsClients(region="us-east-1"))
    code, out = run(["remove", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    assert code == 0, out
    assert boto3.client("logs", region_name="us-east-1").describe_metric_filters(
        logGroupName="CloudTrail/main")["metricFilters"] == []
    assert boto3.client("cloudwatch", region_name="us-east-1").describe_alarms(
        AlarmNamePrefix="trailwatch-cis-")["MetricAlarms"] == []
    assert boto3.client("sns", region_name="us-east-1").list_topics()["Topics"] == []


def _function(name="processor"):
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("h.py", "def handler(e, c):\n    return e\n")
    lam = boto3.client("lambda", region_name="us-east-1")
    return lam, lam.create_function(FunctionName=name, Runtime="python3.12",
                                    Role=role["Role"]["Arn"], Handler="h.handler",
                                    Code={"ZipFile": buf.getvalue()})["FunctionArn"]


@pytest.mark.parametrize("principal,source,expected", [
    ("logs.us-east-1.amazonaws.com", f"arn:aws:logs:us-east-1:{ACCT}:log-group:CloudTrail/main:*",
     "PASS"),
    ("logs.us-east-1.amazonaws.com", f"arn:aws:logs:us-east-1:{ACCT}:log-group:Other:*", "FAIL"),
    ("events.amazonaws.com", None, "FAIL"),
])
def test_subscription_filter_check(aws, principal, source, expected):
    run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    lam, arn = _function()
    kw = {"SourceArn": source} if source else {}
    lam.add_permission(FunctionName="processor", StatementId="logs", Action="lambda:InvokeFunction",
                       Principal=principal, **kw)
    boto3.client("logs", region_name="us-east-1").put_subscription_filter(
        logGroupName="CloudTrail/main", filterName="trailwatch-processor", filterPattern="",
        destinationArn=arn)
    assert verify_checks()[1]["subscription.filters"]["status"] == expected
