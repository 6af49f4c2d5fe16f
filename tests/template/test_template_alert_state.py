"""template.yaml, issue 20: the alert state table (thresholds and dedup windows across
invocations) is created by default, on demand, with TTL, and wired to the processor."""

from __future__ import annotations

import os

import pytest

from handlers.alert_state import ENV_TABLE, KEY, TTL_ATTRIBUTE
from tests.template.test_template import translate


@pytest.fixture(scope="module")
def cfn():
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return translate()


def test_state_table_is_created_by_default_on_demand_with_ttl(cfn):
    assert ENV_TABLE == "ALERT_STATE_TABLE_NAME"                      # contract name
    assert cfn["Parameters"]["AlertState"]["Default"] == "enabled"
    table = cfn["Resources"]["AlertStateTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["Condition"] == "AlertStateEnabled"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": KEY, "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": KEY, "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    env = cfn["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert env[ENV_TABLE] == {"Fn::If": ["AlertStateEnabled", {"Ref": "AlertStateTable"}, ""]}


def test_processor_may_only_read_and_update_state_items(cfn):
    policy = cfn["Resources"]["AlertStateTablePolicy"]
    assert policy["Condition"] == "AlertStateEnabled"
    assert policy["Properties"]["Roles"] == [{"Ref": "ProcessorFunctionRole"}]
    (st,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert st["Action"] == ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    assert st["Resource"] == {"Fn::GetAtt": ["AlertStateTable", "Arn"]}
