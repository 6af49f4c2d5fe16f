"""template.yaml: linted as SAM and as the translated CloudFormation, and its security-relevant
shape asserted on the translation (lint on the SAM form misses broken references in Events)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
BIN = Path(sys.executable).parent
SAM = ROOT / ".venv-sam" / "bin" / "sam"


def translate(params: dict | None = None) -> dict:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self):
            return {}

    doc = yaml_parse(TEMPLATE.read_text())
    # `sam package` replaces the local CodeUri with the uploaded artifact.
    doc["Resources"]["ProcessorFunction"]["Properties"]["CodeUri"] = "s3://artifacts/processor.zip"
    doc["Resources"]["WatchdogFunction"]["Properties"]["CodeUri"] = "s3://artifacts/watchdog.zip"
    return transform(doc, params or {}, NoManagedPolicies())


@pytest.fixture(scope="module")
def cfn(tmp_path_factory):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return translate()


def resources(cfn, rtype):
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == rtype}


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    exe = BIN / "cfn-lint"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cfnlint"]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True)


def test_cfn_lint_clean_on_sam_template():
    out = cfn_lint(TEMPLATE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_clean_on_translated_template(cfn, tmp_path):
    path = tmp_path / "translated.json"
    path.write_text(json.dumps(cfn))
    out = cfn_lint(path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not SAM.exists(), reason="SAM CLI not installed (make sam-venv)")
def test_sam_validate_lint():
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", SAM_CLI_TELEMETRY="0")
    out = subprocess.run([str(SAM), "validate", "--lint", "--template-file", str(TEMPLATE)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "is a valid SAM Template" in out.stdout + out.stderr, \
        out.stdout + out.stderr


def test_function_shape(cfn):
    fn = cfn["Resources"]["ProcessorFunction"]["Properties"]
    assert fn["Handler"] == "handlers.processor.lambda_handler"
    assert fn["Architectures"] == ["arm64"] and fn["Runtime"].startswith("python3.1")
    env = fn["Environment"]["Variables"]
    assert {"ALERT_TOPIC_ARN", "ALERT_BUS_NAME", "FAILURE_QUEUE_URL",
            "DELIVERY_LAG_THRESHOLD_SECONDS", "RULES_FILE"} <= set(env)
    assert fn["LoggingConfig"]["LogGroup"] == {"Ref": "ProcessorLogGroup"}
    assert cfn["Resources"]["ProcessorLogGroup"]["Properties"]["RetentionInDays"] > 0


def test_logs_permission_is_regional_and_scoped(cfn):
    perm = cfn["Resources"]["LogsInvokePermission"]
    props = perm["Properties"]
    assert perm["Condition"] == "IsDirect"
    assert props["Principal"] == {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}
    assert props["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:"
                                             "${AWS::AccountId}:log-group:${TrailLogGroupName}:*"}
    assert props["SourceAccount"] == {"Ref": "AWS::AccountId"}
    sub = cfn["Resources"]["TrailSubscription"]
    assert sub["DependsOn"] == "LogsInvokePermission" or "LogsInvokePermission" in sub["DependsOn"]
    assert sub["Properties"]["DestinationArn"] == {"Fn::GetAtt": ["ProcessorFunction", "Arn"]}


def test_on_failure_destinations(cfn):
    configs = resources(cfn, "AWS::Lambda::EventInvokeConfig")
    # the processor's and the scheduled watchdog's (issue 10) failed async invocations
    assert {c["Properties"]["FunctionName"]["Ref"] for c in configs.values()} == \
        {"ProcessorFunction", "WatchdogFunction"}
    for cfg in configs.values():
        assert cfg["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == \
            {"Fn::GetAtt": ["FailedInvocationsQueue", "Arn"]}
        assert cfg["Properties"]["MaximumRetryAttempts"] == 2
    esm = cfn["Resources"]["KinesisSource"]
    assert esm["Condition"] == "ReadsStream"   # kinesis and destination modes
    p = esm["Properties"]
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["BisectBatchOnFunctionError"] is True
    # a discarded batch is kept whole in S3 (a queue would get its position only)
    assert p["DestinationConfig"]["OnFailure"]["Destination"] == \
        {"Fn::GetAtt": ["FailureArchiveBucket", "Arn"]}


EXPECTED_ALARMS = {
    "FunctionErrorsAlarm": ("AWS/Lambda", "Errors", 1),
    "FunctionThrottlesAlarm": ("AWS/Lambda", "Throttles", 1),
    "FailureQueueAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", 1),
    "FailedInvocationsAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", 1),
    "DeliveryLagAlarm": ({"Fn::Sub": "Trailwatch/${AWS::StackName}"}, "DeliveryLag",
                         {"Ref": "DeliveryLagThresholdSeconds"}),
    "HeartbeatAlarm": ("AWS/Logs", "IncomingLogEvents", 1),
    "ProcessorHeartbeatAlarm": ({"Fn::Sub": "Trailwatch/${AWS::StackName}"}, "LogEvents", 1),
    "IteratorAgeAlarm": ("AWS/Lambda", "IteratorAge",
                         {"Ref": "IteratorAgeThresholdMilliseconds"}),
    "RuleErrorsAlarm": ({"Fn::Sub": "Trailwatch/${AWS::StackName}"}, "RuleErrors", 1),
    "StreamBatchesDiscardedAlarm": ("AWS/Lambda", "OnFailureDestinationDeliveredEventCount", 1),
    "DestinationDeliveryFailuresAlarm": ("AWS/Lambda", "DestinationDeliveryFailures", 1),
    "AlertsRejectedAlarm": ({"Fn::Sub": "Trailwatch/${AWS::StackName}"}, "AlertsRejected", 1),
    "ConfigErrorsAlarm": ({"Fn::Sub": "Trailwatch/${AWS::StackName}"}, "ConfigErrors", 1),
}


def test_every_alarm_metric_threshold_and_action(cfn):
    alarms = resources(cfn, "AWS::CloudWatch::Alarm")
    assert set(alarms) == set(EXPECTED_ALARMS)
    for name, (ns, metric, threshold) in EXPECTED_ALARMS.items():
        p = alarms[name]["Properties"]
        assert (p["Namespace"], p["MetricName"], p["Threshold"]) == (ns, metric, threshold), name
        assert p["AlarmActions"] == p["OKActions"] == [{"Ref": "OpsTopic"}], name
    lag = alarms["DeliveryLagAlarm"]["Properties"]
    assert lag["ExtendedStatistic"] == "p95"
    assert lag["Dimensions"] == [{"Name": "service", "Value": "trailwatch"}]
    hb = alarms["HeartbeatAlarm"]["Properties"]
    assert hb["TreatMissingData"] == "breaching" and hb["ComparisonOperator"] == "LessThanThreshold"
    assert hb["Dimensions"] == [{"Name": "LogGroupName", "Value": {"Ref": "TrailLogGroupName"}}]


def test_metric_names_match_what_the_handler_emits(cfn):
    """The alarm and dashboard watch metrics the processor really writes."""
    import inspect

    from handlers import processor
    src = inspect.getsource(processor)
    body = cfn["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for metric in ("DeliveryLag", "LogEvents", "CloudTrailRecords", "OversizeEvents",
                   "MalformedEvents", "PayloadErrors", "Alerts", "DelayedEvents"):
        assert f'"{metric}"' in src and f'"{metric}"' in body, metric
    assert processor.NAMESPACE == "Trailwatch" and processor.SERVICE == "trailwatch"


def _statements(doc):
    st = doc.get("Statement", [])
    out = []
    for s in [st] if isinstance(st, dict) else st:
        if "Fn::If" in s:   # conditional statement: check both branches (NoValue skipped)
            out += [b for b in s["Fn::If"][1:] if isinstance(b, dict) and "Ref" not in b]
        else:
            out.append(s)
    return out


ALLOWED_STAR = {"kinesis:ListStreams",   # AWS offers no resource-level form
                "cloudtrail:DescribeTrails", "organizations:DescribeOrganization",
                "organizations:ListAccounts",   # the watchdog's lookups (issue 10)
                # the watchdog's destination checks (issue 24)
                "cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics",
                "logs:DescribeDestinations",
                # the watchdog's readiness report (ReadinessRegions set)
                "config:DescribeConfigurationRecorders", "config:DescribeConfigurationRecorderStatus",
                "config:DescribeDeliveryChannels", "s3:ListAllMyBuckets", "ec2:DescribeRegions",
                "ec2:DescribeVpcs", "ec2:DescribeFlowLogs", "wafv2:ListWebACLs"}


def test_no_over_broad_iam(cfn):
    docs = []
    for role in resources(cfn, "AWS::IAM::Role").values():
        docs += [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
        assert role["Properties"].get("ManagedPolicyArns", []) == [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                        "AWSLambdaBasicExecutionRole"}] or all(
            "AWSLambdaBasicExecutionRole" in json.dumps(a)
            for a in role["Properties"].get("ManagedPolicyArns", []))
    docs += [p["Properties"]["PolicyDocument"] for p in resources(cfn, "AWS::IAM::Policy").values()]
    assert docs
    for doc in docs:
        for st in _statements(doc):
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), st
            if st.get("Resource") == "*":
                assert set(actions) <= ALLOWED_STAR, st


def test_topic_is_kms_encrypted_and_queues_encrypted(cfn):
    assert cfn["Resources"]["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}
    for q in resources(cfn, "AWS::SQS::Queue").values():
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    key = cfn["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
               for s in key["Statement"])


def test_outputs(cfn):
    assert {"ProcessorFunctionArn", "AlertTopicArn", "AlertBusName", "FailureQueueUrl",
            "DashboardName"} <= set(cfn["Outputs"])


def test_watchdog_block(cfn):
    """issue 10: the scheduled watchdog runs the verify checks with read-only, scoped access."""
    fn = cfn["Resources"]["WatchdogFunction"]["Properties"]
    assert fn["Handler"] == "handlers.watchdog.lambda_handler"
    env = fn["Environment"]["Variables"]
    assert {"TRAIL_NAME", "TRAIL_LOG_GROUP_NAME", "VERIFY_ROLE_ARN", "ALERT_TOPIC_ARN",
            "WATCHDOG_STATE_PARAMETER"} <= set(env)
    (rule,) = [r for r in resources(cfn, "AWS::Events::Rule").values()
               if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["WatchdogFunction",
                                                                           "Arn"]}]
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "WatchdogSchedule"}
    assert cfn["Parameters"]["WatchdogSchedule"]["Default"] == "rate(15 minutes)"
    assume = cfn["Resources"]["WatchdogAssumeVerifyRole"]
    assert assume["Condition"] == "HasVerifyRole"
    role = cfn["Resources"]["WatchdogFunctionRole"]["Properties"]
    writes = [a for p in role["Policies"] for st in _statements(p["PolicyDocument"])
              for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
              if not a.split(":")[1].startswith(("Get", "List", "Describe"))]
    # notices to the encrypted ops topic, its state, failed runs to the on-failure queue
    assert sorted(writes) == ["kms:Decrypt", "kms:GenerateDataKey", "sns:Publish",
                             "sqs:SendMessage", "ssm:PutParameter"]
    assert env["ALERT_TOPIC_ARN"] == {"Ref": "OpsTopic"}
    publish = [st for p in role["Policies"] for st in _statements(p["PolicyDocument"])
               if "sns:Publish" in json.dumps(st["Action"])]
    assert [st["Resource"] for st in publish] == [
        {"Fn::Sub": ["arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:${topicName}",
                     {"topicName": {"Fn::GetAtt": ["OpsTopic", "TopicName"]}}]}]
    assert rule["Properties"]["Targets"][0]["DeadLetterConfig"] == \
        {"Arn": {"Fn::GetAtt": ["FailedInvocationsQueue", "Arn"]}}
    dlq = cfn["Resources"]["WatchdogScheduleDeadLetterPolicy"]["Properties"]
    (st,) = dlq["PolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "events.amazonaws.com"}
    assert st["Action"] == "sqs:SendMessage"
    assert st["Condition"] == {"ArnEquals": {"aws:SourceArn": {
        "Fn::GetAtt": ["WatchdogFunctionSchedule", "Arn"]}}}
    penv = cfn["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert {"TRAIL_NAME", "TRAIL_LOG_GROUP_NAME", "DELIVERY_ROLE_NAME"} <= set(penv)
def test_subscription_filters_use_at_most_one_of_the_two_slots_per_log_group(cfn):
    """Trap 14: a log group takes 2 subscription filters; trailwatch leaves one for others."""
    per_group: dict[str, int] = {}
    for res in resources(cfn, "AWS::Logs::SubscriptionFilter").values():
        key = json.dumps(res["Properties"]["LogGroupName"], sort_keys=True)
        per_group[key] = per_group.get(key, 0) + 1
    assert per_group and max(per_group.values()) == 1


def test_subscription_destinations_are_this_stacks_own_resources(cfn):
    """Trap 16: a Lambda (or Kinesis) destination must be in the same account: a resource of
    this stack, never an ARN passed in (cross-account goes through a CWL destination)."""
    own = {"AWS::Lambda::Function", "AWS::Kinesis::Stream", "AWS::KinesisFirehose::DeliveryStream"}
    for res in resources(cfn, "AWS::Logs::SubscriptionFilter").values():
        dest = res["Properties"]["DestinationArn"]
        assert isinstance(dest, dict) and "Fn::GetAtt" in dest, dest
        assert cfn["Resources"][dest["Fn::GetAtt"][0]]["Type"] in own
