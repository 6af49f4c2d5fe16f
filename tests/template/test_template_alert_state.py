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


def _operations_the_windows_call():
    """Every DynamoDB operation the windows stage makes, dedup and threshold rules, recorded."""
    from handlers.alert_state import DynamoStore, Windows
    from handlers.detection.patterns import compile_pattern
    from handlers.detection.rules import Rule

    called: set[str] = set()

    class Client:
        def __getattr__(self, op):
            def call(**kw):
                called.add(op)
                return {}
            return call

    rules = [Rule(id="d", title="d", severity="LOW", pattern=compile_pattern("{ $.a = 1 }"),
                  window_minutes=60, source="user"),
             Rule(id="t", title="t", severity="LOW", pattern=compile_pattern("{ $.a = 1 }"),
                  window_minutes=60, threshold=2, source="user")]
    windows = Windows(rules, DynamoStore("t", Client(), sleep=lambda s: None),
                      clock=lambda: 1_763_632_800.0)
    event = {"eventTime": "2025-11-20T10:00:00Z", "userIdentity": {"arn": "arn:aws:iam::1:user/u"}}
    windows.apply([{"kind": "rule_match", "alert_id": f"{r.id}{i}", "rule": {"id": r.id},
                    "event": dict(event, eventID=str(i))} for r in rules for i in range(3)])
    assert windows.stats["state_errors"] == 0
    return {"dynamodb:" + "".join(w.title() for w in op.split("_")) for op in called}


def test_processor_may_only_make_the_state_calls_it_makes(cfn):
    policy = cfn["Resources"]["AlertStateTablePolicy"]
    assert policy["Condition"] == "AlertStateEnabled"
    assert policy["Properties"]["Roles"] == [{"Ref": "ProcessorFunctionRole"}]
    (st,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert set(st["Action"]) == _operations_the_windows_call() == {"dynamodb:UpdateItem"}
    assert st["Resource"] == {"Fn::GetAtt": ["AlertStateTable", "Arn"]}
