"""Routing, deduplication and aggregation: SNS attributes and the documented filter policies (moto
SNS -> SQS), EventBridge detail-types/resources and the documented patterns (moto), FIFO ids,
aggregation thresholds, and Powertools idempotency on (moto) DynamoDB."""

from __future__ import annotations

import base64
import gzip
import json
import re

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from handlers import alerts as A
from handlers.sinks.idempotency import IdempotentSink, persistence_layer
from handlers.detection.patterns import compile_pattern
from handlers.processor import App, DeliveryFailed
from handlers.detection.rules import Rule
from handlers.sinks.sns import SNS_MAX_BYTES, SnsSink
from handlers.sinks.eventbridge import EventBridgeSink, eventbridge_entry_size
from tests.conftest import ROOT, ListLogger, ListMetrics, drain_queue

DOCS = (ROOT / "docs" / "processor.md").read_text()   # the documented examples
ENV = {"owner": "111122223333", "logGroup": "g", "logStream": "s"}
CONTRACT_ATTRIBUTES = {"alert_id", "kind", "rule_id", "severity", "account", "region",
                       "event_name", "expected_change"}


def readme_json(tag: str) -> dict[str, dict]:
    """docs/processor.md's JSON examples marked ``<!-- tag: name -->`` (the docs are what we test)."""
    found = re.findall(r"<!-- " + tag + r": ([\w-]+) -->\s*```json\n(.*?)```", DOCS, re.S)
    return {name: json.loads(body) for name, body in found}


def rule(rid="r1", severity="HIGH"):
    return Rule(id=rid, title=f"Rule {rid}", severity=severity,
                pattern=compile_pattern("{ $.eventName = UpdateTrail }"))


def record(i=0, account="111122223333", region="us-east-1", principal="alice", name="UpdateTrail"):
    return {"eventVersion": "1.08", "eventID": f"ev-{i}", "eventName": name,
            "eventTime": f"2026-11-20T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "eventSource": "cloudtrail.amazonaws.com", "awsRegion": region,
            "recipientAccountId": account,
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/{principal}",
                             "accountId": account, "principalId": "AIDA", "accessKeyId": "AKIA1"},
            "requestParameters": {"name": f"arn:aws:cloudtrail:{region}:{account}:trail/t"}}


def alert(i=0, severity="HIGH", expected=False, **kw):
    return A.rule_alert(rule(severity=severity), record(i, **kw), ENV, {"id": f"le-{i}"}, 1.0,
                        expected_change=expected)


# ------------------------------------------------------------------------------ SNS attributes

def test_sns_attributes_are_the_contract_names_within_limits():
    """Observed on 14f631d: only kind/rule_id/severity/expected_change, no account/region/event
    name/alert id, so a filter policy could not route by account or region."""
    a = alert(3, account="444455556666", region="eu-west-1")
    attrs, size = SnsSink.attributes_with_size(a)
    assert set(attrs) == CONTRACT_ATTRIBUTES and len(attrs) <= 10
    values = {k: v["StringValue"] for k, v in attrs.items()}
    assert values == {"alert_id": a["alert_id"], "kind": "rule_match", "rule_id": "r1",
                      "severity": "HIGH", "account": "444455556666", "region": "eu-west-1",
                      "event_name": "UpdateTrail", "expected_change": "false"}
    assert all(v["DataType"] == "String" for v in attrs.values())
    assert size == sum(len(k.encode()) + len(b"String") + len(v.encode()) for k, v in values.items())


def test_attributes_without_a_value_are_left_out_and_hostile_values_cleaned():
    delayed = A.delivery_delayed_alert([{"key": "eventID:x", "lag": 2000.0, "reason": None,
                                         "log_group": "g", "log_stream": "s"}], 900.0)
    attrs = SnsSink.attributes(delayed)
    assert set(attrs) == {"alert_id", "kind", "rule_id", "severity", "expected_change"}
    over = SnsSink.attributes(A.oversize_alert(ENV, {"id": "x", "message": "m"}, 300_000, 262_144))
    assert over["account"]["StringValue"] == "111122223333" and "region" not in over
    hostile = alert(name="Evil\x00Name\ud800" + "é" * 1000)
    value = SnsSink.attributes(hostile)["event_name"]["StringValue"]
    assert value.startswith("Evil?Name?") and len(value) == 128


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400), st.text(max_size=400), st.integers(0, 300_000))
def test_message_plus_attributes_fit_sns_limit(account, name, size):
    rec = dict(record(account=account or "1", name=name), requestParameters={"b": "中" * size})
    a = A.rule_alert(rule(), rec, ENV, {"id": "le"}, None)
    entries, sizes = SnsSink("arn:aws:sns:us-east-1:1:t", client_factory=lambda s: None).prepare([a])
    (ident, total), = sizes
    e = entries[ident]
    assert total == len(e["Message"].encode()) + SnsSink.attributes_size(e["MessageAttributes"])
    assert total <= SNS_MAX_BYTES


# ------------------------------------------------------------------------------ documented filter policies on moto

@pytest.fixture
def sns_sqs():
    with mock_aws():
        yield boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")


def subscribe_queue(sns, sqs, topic, name, policy=None, fifo=False):
    attrs = {"FifoQueue": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sub_attrs = {"RawMessageDelivery": "true"}
    if policy is not None:
        sub_attrs["FilterPolicy"] = json.dumps(policy)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=sub_attrs)
    return url


def test_readme_filter_policies_route_the_right_alerts_on_moto(sns_sqs):
    sns, sqs = sns_sqs
    policies = readme_json("filter-policy")
    assert set(policies) == {"critical-only", "one-account", "exclude-expected"}
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    queues = {name: subscribe_queue(sns, sqs, topic, name, p) for name, p in policies.items()}
    everything = subscribe_queue(sns, sqs, topic, "all")
    sample = [alert(1, "CRITICAL"), alert(2, "HIGH", account="999988887777"),
              alert(3, "CRITICAL", expected=True), alert(4, "LOW", region="eu-west-1"),
              alert(5, "CRITICAL", account="999988887777"),
              A.oversize_alert(ENV, {"id": "o"}, 300_000, 262_144)]
    assert SnsSink(topic).publish(sample) == []

    def ids(url):
        return sorted(m["alert_id"] for m in drain_queue(sqs, url))

    def want(pred):
        return sorted(a["alert_id"] for a in sample if pred(a, A.routing_keys(a)))

    assert len(ids(everything)) == len(sample)
    assert ids(queues["critical-only"]) == want(lambda a, k: k["severity"] == "CRITICAL") \
        and len(want(lambda a, k: k["severity"] == "CRITICAL")) == 3
    assert ids(queues["one-account"]) == want(
        lambda a, k: k.get("account") == "111122223333" and not a["expected_change"])
    assert ids(queues["exclude-expected"]) == want(lambda a, k: not a["expected_change"])
    assert len(want(lambda a, k: not a["expected_change"])) == 5


# ------------------------------------------------------------------------------ FIFO

def test_fifo_topic_gets_group_and_dedup_ids_and_moto_accepts_them(sns_sqs):
    """Observed on 14f631d: no MessageGroupId, so publishing to a FIFO topic failed outright."""
    sns, sqs = sns_sqs
    topic = sns.create_topic(Name="alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    url = subscribe_queue(sns, sqs, topic, "soc", fifo=True)
    a, b = alert(1), alert(2, account="999988887777")
    entries, _ = SnsSink(topic).prepare([a, b])
    assert entries[a["alert_id"]]["MessageDeduplicationId"] == a["alert_id"]
    assert entries[a["alert_id"]]["MessageGroupId"] == "111122223333"
    assert entries[b["alert_id"]]["MessageGroupId"] == "999988887777"
    assert SnsSink(topic).publish([a, b]) == []
    got = drain_queue(sqs, url)
    assert sorted(m["alert_id"] for m in got) == sorted([a["alert_id"], b["alert_id"]])
    standard, _ = SnsSink("arn:aws:sns:us-east-1:1:alerts").prepare([a])
    assert "MessageGroupId" not in standard[a["alert_id"]]


def test_fifo_group_id_is_valid_for_any_account_value():
    for account in ("", "a b\x00c", "é" * 300):
        a = alert(account=account)
        gid = SnsSink("arn:aws:sns:us-east-1:1:t.fifo").prepare([a])[0][a["alert_id"]]["MessageGroupId"]
        assert 1 <= len(gid) <= 128 and re.fullmatch(r"[\x21-\x7e]+", gid)


# ------------------------------------------------------------------------------ EventBridge

def test_eventbridge_detail_type_per_kind_and_resources():
    """Observed on 14f631d: one detail-type for every alert and no Resources."""
    sink = EventBridgeSink("bus", client_factory=lambda s: None)
    a = alert(1)
    over = A.oversize_alert(ENV, {"id": "o"}, 300_000, 262_144)
    delayed = A.delivery_delayed_alert([{"key": "k", "lag": 1e4, "reason": None,
                                         "log_group": "g", "log_stream": "s"}], 900.0)
    entries, sizes = sink.prepare([a, over, delayed])
    assert {e["Source"] for e in entries.values()} == {"trailwatch"}
    assert [entries[x["alert_id"]]["DetailType"] for x in (a, over, delayed)] == [
        "trailwatch rule match", "trailwatch oversize event", "trailwatch delivery delayed"]
    assert entries[a["alert_id"]]["Resources"] == \
        ["arn:aws:cloudtrail:us-east-1:111122223333:trail/t"]
    for ident, size in sizes:
        assert size == eventbridge_entry_size(entries[ident])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 400_000), st.integers(1, 10), st.integers(10, 1000))
def test_eventbridge_entry_with_resources_fits(size, n_res, arn_len):
    rec = dict(record(), requestParameters={"b": "é" * size},
               resources=[{"ARN": f"arn:aws:s3:::b{i}" + "x" * arn_len} for i in range(n_res)])
    a = A.rule_alert(rule(), rec, ENV, {"id": "le"}, None)
    entries, sizes = EventBridgeSink("bus", client_factory=lambda s: None).prepare([a])
    (ident, total), = sizes
    assert total == eventbridge_entry_size(entries[ident]) <= 262_144
    assert len(entries[ident]["Resources"]) == n_res


def test_readme_event_patterns_select_on_moto():
    patterns = readme_json("event-pattern")
    assert set(patterns) == {"high-unexpected", "pipeline-health"}
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        events.create_event_bus(Name="alerts")
        urls = {}
        for name, pattern in patterns.items():
            url = sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            events.put_rule(Name=name, EventBusName="alerts", EventPattern=json.dumps(pattern))
            events.put_targets(Rule=name, EventBusName="alerts", Targets=[{"Id": "q", "Arn": arn}])
            urls[name] = url
        sample = [alert(1, "HIGH"), alert(2, "CRITICAL", expected=True), alert(3, "LOW"),
                  alert(4, "CRITICAL"),
                  A.oversize_alert(ENV, {"id": "o"}, 300_000, 262_144),
                  A.delivery_delayed_alert([{"key": "k", "lag": 1e4, "reason": None,
                                             "log_group": "g", "log_stream": "s"}], 900.0)]
        assert EventBridgeSink("alerts").publish(sample) == []

        def got(name):
            return sorted(m["detail"]["alert_id"] for m in drain_queue(sqs, urls[name]))

        assert got("high-unexpected") == sorted([sample[0]["alert_id"], sample[3]["alert_id"]])
        assert got("pipeline-health") == sorted([sample[4]["alert_id"], sample[5]["alert_id"]])


# ------------------------------------------------------------------------------ aggregation

def test_aggregation_threshold_is_strictly_more_than_n():
    twenty = [alert(i) for i in range(20)]
    out, members = A.aggregate(twenty, 20)
    assert out == twenty and members == {}
    out, members = A.aggregate(twenty + [alert(20)], 20)
    (agg,) = out
    assert agg["aggregate"]["count"] == 21 and agg["alert_id"] in members
    assert agg["aggregate"]["first_event_time"] == "2026-11-20T10:00:00Z"
    assert agg["aggregate"]["last_event_time"] == "2026-11-20T10:00:20Z"
    assert agg["aggregate"]["sample_event_ids"] == [f"ev-{i}" for i in range(10)]
    assert agg["title"].startswith("21x ") and agg["event"]["eventID"] == "ev-0"
    assert A.aggregate(twenty + [alert(20)], 0)[0] == twenty + [alert(20)]


def test_aggregation_keeps_principals_accounts_and_expected_changes_apart():
    noisy = [alert(i) for i in range(25)]
    other = [alert(100 + i, principal="bob") for i in range(5)]
    expected = [alert(200 + i, expected=True) for i in range(25)]
    out, members = A.aggregate(noisy + other + expected, 20)
    aggs = [a for a in out if "aggregate" in a]
    assert len(out) == 2 + 5 and len(aggs) == 2
    assert sorted(a["expected_change"] for a in aggs) == [False, True]
    assert sorted(len(m) for m in members.values()) == [25, 25]
    # the aggregate id is deterministic: same members -> same id, whatever the order
    again, _ = A.aggregate(list(reversed(noisy)), 20)
    assert again[0]["alert_id"] == [a for a in aggs if not a["expected_change"]][0]["alert_id"]


def payload(records, log_group="CloudTrail/org"):
    env = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": log_group,
           "logStream": "111122223333_CloudTrail_us-east-1", "subscriptionFilters": ["f"],
           "logEvents": [{"id": f"le-{n}", "timestamp": 1_763_632_900_000,
                          "message": json.dumps(r)} for n, r in enumerate(records)]}
    return base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()


def cis_records(n, principal="alice", start=0):
    # CIS 4.5: CloudTrail configuration changes
    return [record(start + i, principal=principal) for i in range(n)]


def make_app(env, **kw):
    return App.from_env(env, clock=lambda: 1_763_632_950.0, sleep=lambda s: None,
                        metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None, **kw)


def test_processor_collapses_a_noisy_principal(sns_sqs):
    """Observed on 14f631d: nothing aggregated (25 matches -> 25 messages)."""
    sns, sqs = sns_sqs
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    url = subscribe_queue(sns, sqs, topic, "soc")
    app = make_app({"ALERT_TOPIC_ARN": topic})
    res = app.handle({"awslogs": {"data": payload(cis_records(25) + cis_records(3, "bob", 1000))}})
    got = drain_queue(sqs, url)
    assert res["alerts"] == 28 and len(got) == 4
    (agg,) = [m for m in got if "aggregate" in m]
    assert agg["aggregate"]["count"] == 25 and agg["rule"]["id"] == "cis-4.5"
    off = make_app({"ALERT_TOPIC_ARN": topic, "ALERT_AGGREGATION_THRESHOLD": "0"})
    off.handle({"awslogs": {"data": payload(cis_records(25))}})
    assert len(drain_queue(sqs, url)) == 25


def test_kinesis_failed_aggregate_fails_every_record_it_came_from():
    class Failing:
        name = "failing"

        def publish(self, alerts):
            return [{"id": a["alert_id"], "error": "x"} for a in alerts if "aggregate" in a]

    app = make_app({})
    app.sinks = [Failing()]
    records = [{"kinesis": {"sequenceNumber": str(n), "data": payload(cis_records(25)[n::3])}}
               for n in range(3)] + [{"kinesis": {"sequenceNumber": "9",
                                                  "data": payload(cis_records(2, "bob", 1000))}}]
    res = app.handle({"Records": records})
    assert sorted(f["itemIdentifier"] for f in res["batchItemFailures"]) == ["0", "1", "2"]


# ------------------------------------------------------------------------------ idempotency

TABLE = "alert-idempotency"


@pytest.fixture
def ddb_env():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        url = subscribe_queue(sns, sqs, topic, "soc")
        yield {"env": {"ALERT_TOPIC_ARN": topic, "IDEMPOTENCY_TABLE_NAME": TABLE},
               "messages": lambda: drain_queue(sqs, url), "ddb": ddb, "topic": topic}


def test_redelivered_payload_gives_one_alert(ddb_env):
    """Observed on 14f631d: the same event delivered three times gave three SNS messages."""
    event = {"awslogs": {"data": payload(cis_records(2))}}
    for _ in range(3):
        make_app(ddb_env["env"]).handle(event)      # a fresh container each time, too
    got = ddb_env["messages"]()
    assert len(got) == 2 and len({m["alert_id"] for m in got}) == 2
    items = ddb_env["ddb"].scan(TableName=TABLE)["Items"]
    assert len(items) == 2 and {i["status"]["S"] for i in items} == {"COMPLETED"}
    assert all(int(i["expiration"]["N"]) > 1_700_000_000 for i in items)   # TTL attribute


def test_undelivered_alert_is_released_so_the_retry_publishes_it(ddb_env):
    class FlakySns(SnsSink):
        fail = True

        def _send_batch(self, ids, entries):
            if FlakySns.fail:
                return [(i, "InternalError: boom") for i in ids]
            return super()._send_batch(ids, entries)

    event = {"awslogs": {"data": payload(cis_records(1))}}
    app = make_app(ddb_env["env"])
    inner = FlakySns(ddb_env["topic"], sleep=lambda s: None)
    app.sinks = [IdempotentSink(inner, persistence_layer(TABLE))]
    with pytest.raises(DeliveryFailed):
        app.handle(event)
    assert ddb_env["ddb"].scan(TableName=TABLE)["Items"] == []
    FlakySns.fail = False
    app.handle(event)
    app.handle(event)
    assert len(ddb_env["messages"]()) == 1


def test_stale_in_progress_claim_or_missing_table_never_silences(ddb_env):
    a = alert(1)
    crashed = IdempotentSink(SnsSink(ddb_env["topic"]), persistence_layer(TABLE))
    crashed._claim(a)                       # claimed, then the invocation died before settling
    retry = IdempotentSink(SnsSink(ddb_env["topic"]), persistence_layer(TABLE))
    assert retry.publish([a]) == [] and retry.suppressed == 0
    assert len(ddb_env["messages"]()) == 1
    again = IdempotentSink(SnsSink(ddb_env["topic"]), persistence_layer(TABLE))
    assert again.publish([a]) == [] and again.suppressed == 1
    assert ddb_env["messages"]() == []
    nowhere = IdempotentSink(SnsSink(ddb_env["topic"]), persistence_layer("no-such-table"))
    assert nowhere.publish([a]) == []
    assert len(ddb_env["messages"]()) == 1


def test_idempotency_keys_are_per_sink(ddb_env):
    a = alert(1)
    sns_side = IdempotentSink(SnsSink(ddb_env["topic"]), persistence_layer(TABLE))
    assert sns_side.publish([a]) == []

    class Other:
        name = "eventbridge"
        got: list = []

        def publish(self, alerts):
            Other.got += alerts
            return []

    other = IdempotentSink(Other(), persistence_layer(TABLE))
    assert other.publish([a]) == [] and Other.got == [a]


def test_demo_routing_step_shows_every_destination_and_a_stored_finding():
    from setup.demo import routing as routing_demo
    with mock_aws():
        event = {"awslogs": {"data": payload(cis_records(3) + [
            dict(record(50), eventName="ConsoleLogin", eventSource="signin.amazonaws.com",
                 eventType="AwsConsoleSignIn",
                 userIdentity={"type": "Root", "arn": "arn:aws:iam::123456789012:root",
                               "accountId": "123456789012"},
                 recipientAccountId="123456789012")])}}
        result = routing_demo.run([event], lambda s: boto3.client(s, region_name="us-east-1"))
    d = result["delivered"]
    assert result["alerts_raised"] == 4 and d["SNS alert topic (no filter)"] == 4
    assert d["chat topic (Amazon Q Developer)"] == 4 and result["security_hub_findings"] == 4
    assert d["SNS filter policy 'one-account: 123456789012'"] == 1
    assert result["redelivery_published"] == 0
    assert result["finding_example"]["ProductFields"]["trailwatch/schema"] == "trailwatch.alert/2"
