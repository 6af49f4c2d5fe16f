"""template.yaml, issue 12: operational alarms on their own ops topic with OK actions, the alert
topic carrying only alerts, and the Security Hub / chat / idempotency / aggregation options."""

from __future__ import annotations

import json
import os

import pytest

from tests.template.test_template import cfn_lint, resources, translate

ENABLED = {"SecurityHubFindings": "enabled", "AlertIdempotency": "enabled",
           "ChatTopicArn": "arn:aws:sns:us-east-1:111122223333:chat", "OpsEmail": "ops@example.com"}


@pytest.fixture(scope="module")
def cfn():
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return translate()


@pytest.fixture(scope="module")
def cfn_enabled():
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return translate(ENABLED)


def test_alarms_publish_to_the_ops_topic_with_ok_actions(cfn):
    """Observed on 14f631d: every operational alarm published to the alert topic (whose message
    body is supposed to be alert JSON) and none had OK actions."""
    alarms = resources(cfn, "AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "OpsTopic"}], name
        assert p["OKActions"] == [{"Ref": "OpsTopic"}], name
    ops = cfn["Resources"]["OpsTopic"]
    assert ops["Type"] == "AWS::SNS::Topic"
    assert ops["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}   # alarms may use the key
    assert cfn["Outputs"]["OpsTopicArn"]["Value"] == {"Ref": "OpsTopic"}


def test_alert_topic_is_referenced_only_by_the_processor_and_its_own_subscription(cfn):
    users = []
    for name, res in cfn["Resources"].items():
        if '"Ref": "AlertTopic"' in json.dumps(res) or '"AlertTopic",' in json.dumps(res):
            users.append(name)
    assert set(users) <= {"ProcessorFunction", "ProcessorFunctionRole", "AlertEmailSubscription"}
    assert "ProcessorFunction" in users


def test_routing_options_wire_environment_and_least_privilege(cfn, cfn_enabled):
    env = cfn["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SECURITY_HUB_FINDINGS"] == {"Ref": "SecurityHubFindings"}
    assert env["CHAT_TOPIC_ARN"] == {"Ref": "ChatTopicArn"}
    assert env["ALERT_AGGREGATION_THRESHOLD"] == {"Ref": "AlertAggregationThreshold"}
    assert env["IDEMPOTENCY_TABLE_NAME"] == {"Fn::If": ["IdempotencyEnabled",
                                                        {"Ref": "AlertIdempotencyTable"}, ""]}
    params = cfn["Parameters"]
    assert params["SecurityHubFindings"]["Default"] == "disabled"
    assert params["AlertIdempotency"]["Default"] == "disabled"
    assert params["AlertAggregationThreshold"]["Default"] == 20
    table = cfn["Resources"]["AlertIdempotencyTable"]
    assert table["Condition"] == "IdempotencyEnabled"
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expiration",
                                                              "Enabled": True}
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    hub = cfn["Resources"]["SecurityHubImportPolicy"]
    assert hub["Condition"] == "SecurityHubEnabled"
    (st,) = hub["Properties"]["PolicyDocument"]["Statement"]
    assert st["Action"] == "securityhub:BatchImportFindings" and "product/" in json.dumps(st)
    assert cfn["Resources"]["ChatPublishPolicy"]["Condition"] == "HasChatTopic"
    assert cfn["Resources"]["IdempotencyTablePolicy"]["Condition"] == "IdempotencyEnabled"


def test_translated_template_with_every_option_enabled_lints_clean(cfn_enabled, tmp_path):
    path = tmp_path / "enabled.json"
    path.write_text(json.dumps(cfn_enabled))
    out = cfn_lint(path)
    assert out.returncode == 0, out.stdout + out.stderr
