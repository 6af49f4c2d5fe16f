"""The template <-> code seam (issue 24): template.yaml rendered the way CloudFormation would for
a parameter value, then the functions' code booted with the environment that results. Nothing
may raise, and the values must name the right things (the trail, the role the CLI creates)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from handlers.detection.tamper import tamper_rules
from setup.wiring.models import default_role_name
from tests.template.test_template import translate
from tests.template.test_template_modes import REGION, Env

ACCOUNT = "111122223333"


class Rendered(Env):
    """Env plus the intrinsics the seams need (Fn::Select, as CloudFormation evaluates it)."""

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1 and "Fn::Select" in node:
            index, items = node["Fn::Select"]
            items = self.value(items)
            index = int(self.value(index))
            assert 0 <= index < len(items), f"Fn::Select index {index} out of range: {items}"
            return items[index]
        return super().value(node)

    def function_env(self, logical_id: str) -> dict[str, str]:
        props = self.cfn["Resources"][logical_id]["Properties"]
        env = {k: str(v) for k, v in self.value(props["Environment"]["Variables"]).items()}
        env.setdefault("AWS_REGION", REGION)          # set by Lambda
        return env


@pytest.fixture(scope="module")
def cfn():
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return translate()


TRAILS = {
    "name": ("org-trail", "org-trail", REGION),
    "arn": (f"arn:aws:cloudtrail:eu-west-1:{ACCOUNT}:trail/org-trail", "org-trail", "eu-west-1"),
    "long-name": ("t" * 128, "t" * 128, REGION),
    "50-chars": ("n" * 50, "n" * 50, REGION),
    "long-arn": (f"arn:aws:cloudtrail:ap-southeast-2:{ACCOUNT}:trail/{'a' * 128}", "a" * 128,
                 "ap-southeast-2"),
}


@pytest.mark.parametrize("case", sorted(TRAILS))
def test_processor_tamper_rules_watch_the_trail_and_the_role_the_cli_creates(cfn, case):
    """Observed on 5bb8a96: TrailName as an ARN gave TRAIL_NAME `arn:aws:cloudtrail:<r>:<acct>:`,
    a name of 50+ characters a DELIVERY_ROLE_NAME over 64 characters (the processor raised on
    every invocation), and the default role was not the one the CLI creates."""
    value, name, region = TRAILS[case]
    env = Rendered(cfn, {"TrailName": value}).function_env("ProcessorFunction")
    errors: list[str] = []
    rules = {r.id: r for r in tamper_rules(env, errors=errors)}
    assert errors == []
    assert f'"{name}"' in rules["trailwatch-tamper-trail"].pattern.text
    role = default_role_name(name, region)
    assert f'roleName = "{role}"' in rules["trailwatch-tamper-delivery-role"].pattern.text


def test_an_explicit_delivery_role_name_reaches_the_processor(cfn):
    env = Rendered(cfn, {"DeliveryRoleName": "CloudTrail_CloudWatchLogs_Role"}) \
        .function_env("ProcessorFunction")
    rules = {r.id: r for r in tamper_rules(env)}
    assert '"CloudTrail_CloudWatchLogs_Role"' in \
        rules["trailwatch-tamper-delivery-role"].pattern.text


def test_alerts_a_sink_rejects_for_good_are_alarmed(cfn):
    """Issue 24 item 4: a permanent sink error (Security Hub not enabled, an invalid finding) no
    longer fails the invocation; the processor counts it as AlertsRejected, which must alarm."""
    alarms = [r["Properties"] for r in cfn["Resources"].values()
              if r["Type"] == "AWS::CloudWatch::Alarm"
              and r["Properties"].get("MetricName") == "AlertsRejected"]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == \
        "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "OpsTopic"}]
    assert alarm["Namespace"] == {"Fn::Sub": "Trailwatch/${AWS::StackName}"}


def _watchdog_policies(cfn) -> list[dict]:
    role = cfn["Resources"]["WatchdogFunctionRole"]["Properties"]
    return [p["PolicyDocument"] for p in role["Policies"]]


def test_the_watchdog_role_allows_every_call_its_checks_make(cfn):
    """Issue 24 item 7. Observed on 5bb8a96: the destination checks call
    cloudwatch:ListMetrics / GetMetricStatistics and logs:DescribeDestinations, which the
    watchdog's role did not allow: false FAILs in a real account (moto checks no IAM).
    The calls are recorded from the real code (the verify checks on moto, and both destination
    branches), then each action is evaluated against the template's policies (action level)."""
    import datetime as dt
    import io

    import boto3
    from moto import mock_aws

    from handlers.watchdog import run_verify
    from setup.aws import AwsClients
    from setup.cli import main
    from setup.policy_eval import evaluate
    from setup.verify.destinations import check_filter
    from setup.wiring.models import Target
    from setup.wiring.state import find_trail

    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        assert main(["apply", "--trail", "main", "--yes", "--cis-alarms", "--output", "json"],
                    out=io.StringIO(), clients=AwsClients(region=REGION)) == 0
        clients = AwsClients(region=REGION)
        run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION}, clients)
        trail = find_trail(clients, "main")
        acct = trail.owner_account
        target = Target(trail=trail, account=acct, log_group="CloudTrail/main",
                        role_name=f"trailwatch-cwl-main-{REGION}")
        now = dt.datetime.now(dt.timezone.utc)
        boto3.client("cloudwatch", region_name=REGION).put_metric_data(
            Namespace="AWS/Logs", MetricData=[{"MetricName": "DeliveryErrors", "Value": 1.0,
                                               "Dimensions": [
                                                   {"Name": "LogGroupName",
                                                    "Value": "CloudTrail/main"},
                                                   {"Name": "FilterName", "Value": "f"}]}])
        for dest in (f"arn:aws:logs:{REGION}:{acct}:destination:same",        # same account
                     f"arn:aws:logs:{REGION}:999999999999:destination:audit",  # another one
                     f"arn:aws:kinesis:{REGION}:{acct}:stream/s"):
            check_filter(clients, target, {"filterName": "f", "destinationArn": dest,
                                           "roleArn": f"arn:aws:iam::{acct}:role/r"}, now)
    actions = {f"{svc}:{op}" for svc, op, _ in clients.calls if svc != "sts"}
    for needed in ("cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics",
                   "logs:DescribeDestinations"):
        assert needed in actions, needed              # the recording reaches those branches
    docs = _watchdog_policies(cfn)
    denied = sorted(a for a in actions if not evaluate(docs, a).allowed)
    assert denied == []


@pytest.mark.parametrize("value,ok", [
    ("rate(1 minute)", True), ("rate(15 minutes)", True), ("rate(1 hour)", True),
    ("rate(2 days)", True), ("rate(10 minutes)", True), ("cron(0/15 * * * ? *)", True),
    # EventBridge: "If the value is equal to 1, then the unit must be singular. If the value is
    # greater than 1, the unit must be plural." (Schedule expressions for rules)
    ("rate(1 minutes)", False), ("rate(5 minute)", False), ("rate(1 days)", False),
    ("rate(0 minutes)", False), ("rate(01 minute)", False),
])
def test_watchdog_schedule_accepts_only_what_eventbridge_accepts(cfn, value, ok):
    """Issue 24 item 7. Observed on 5bb8a96: rate(1 minutes) passed the AllowedPattern and the
    stack failed later, in EventBridge."""
    import re
    pattern = cfn["Parameters"]["WatchdogSchedule"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok
