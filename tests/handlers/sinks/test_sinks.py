"""Alert sinks: byte limits enforced by us (moto does not), partial failures, real read-back."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from handlers import alerts as A
from handlers.detection.patterns import compile_pattern
from handlers.detection.rules import Rule
from handlers.sinks.sns import SNS_MAX_BYTES, SnsSink
from handlers.sinks.eventbridge import EventBridgeSink, eventbridge_entry_size
from handlers.sinks.failure_queue import FailureQueue
from handlers.sinks.base import pack
from tests.conftest import drain_queue

TOPIC = "arn:aws:sns:us-east-1:111122223333:alerts"


R = Rule(id="r1", title="Rule one", severity="HIGH", cis="4.5", securityhub="CloudWatch.5",
         pattern=compile_pattern("{ $.eventName = UpdateTrail }"))


def make_alert(i=0, request_size=10, response_size=10, ua="aws-cli/2", char="x", expected=False):
    rec = {"eventVersion": "1.08", "eventID": f"ev-{i}", "eventName": "UpdateTrail",
           "eventTime": "2026-11-20T10:00:00Z", "userAgent": ua,
           "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/a", "accountId": "1",
                            "principalId": "P"},
           "requestParameters": {"blob": char * request_size},
           "responseElements": {"blob": char * response_size}}
    env = {"owner": "1", "logGroup": "g", "logStream": "s"}
    return A.rule_alert(R, rec, env, {"id": f"le-{i}", "timestamp": 1}, 300.0,
                        expected_change=expected)


def test_alert_id_is_deterministic_per_event_and_rule():
    a, b = make_alert(1), make_alert(1)
    assert a["alert_id"] == b["alert_id"]
    assert make_alert(2)["alert_id"] != a["alert_id"]
    assert A.alert_id("rule", "other", "eventID:ev-1") != a["alert_id"]


def test_alert_contract_keys():
    a = make_alert()
    assert a["rule"] == {"id": "r1", "title": "Rule one", "severity": "HIGH", "cis": "4.5",
                         "securityhub": "CloudWatch.5", "source": "user"}
    assert a["event"]["eventID"] == "ev-0"
    assert a["delivery"]["log_event_id"] == "le-0" and a["expected_change"] is False
    # the caller decides (issue 11); the user agent is evidence, not authority
    assert make_alert(ua="Boto3/1.35 trailwatch/0.1.0")["expected_change"] is False
    assert make_alert(expected=True)["expected_change"] is True


def test_fit_truncates_bulkiest_first_and_keeps_identity():
    a = make_alert(request_size=300_000, response_size=50_000)
    body = A.fit(a, SNS_MAX_BYTES - 200)
    doc = json.loads(body)
    assert len(body) <= SNS_MAX_BYTES - 200
    assert doc["truncated_fields"] == ["requestParameters"]
    assert doc["event"]["requestParameters"]["trailwatch_truncated"] is True
    assert doc["event"]["requestParameters"]["original_bytes"] > 300_000
    assert doc["event"]["responseElements"] == {"blob": "x" * 50_000}
    assert doc["event"]["userIdentity"]["arn"] == "arn:aws:iam::1:user/a"
    assert doc["event"]["eventID"] == "ev-0"
    # the alert itself is untouched: the next sink fits the full alert to its own limit
    assert a["truncated_fields"] == [] and "blob" in a["event"]["requestParameters"]
    assert json.loads(A.fit(a, 2_000_000))["truncated_fields"] == []


def test_sns_attributes_are_sized_in_bytes():
    a, b = make_alert(1), make_alert(2)
    (attrs_a, size_a), (attrs_b, size_b) = (SnsSink.attributes_with_size(x) for x in (a, b))
    assert size_a == size_b == SnsSink.attributes_size(attrs_a)   # alert ids have one length
    assert attrs_a["alert_id"]["StringValue"] == a["alert_id"] != attrs_b["alert_id"]["StringValue"]
    assert attrs_a["rule_id"]["StringValue"] == "r1"
    assert attrs_a["expected_change"]["StringValue"] == "false"
    changed = SnsSink.attributes(make_alert(expected=True))
    assert changed["expected_change"]["StringValue"] == "true"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 400_000), st.integers(0, 400_000), st.integers(0, 3000),
       st.sampled_from(["x", "é", "中", "🙂", "\""]))
def test_every_published_message_fits_sns_limit(req, resp, ua_len, char):
    alert = make_alert(request_size=req, response_size=resp, ua="u" * ua_len, char=char)
    sink = SnsSink(TOPIC, client_factory=lambda s: None)
    entries, sizes = sink.prepare([alert])
    (ident, size), = sizes
    entry = entries[ident]
    real = len(entry["Message"].encode()) + SnsSink.attributes_size(entry["MessageAttributes"])
    assert real == size <= SNS_MAX_BYTES
    json.loads(entry["Message"])  # still valid JSON


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 200_000), min_size=1, max_size=25))
def test_batches_respect_count_and_total_bytes(sizes):
    items = [(str(i), s) for i, s in enumerate(sizes)]
    batches = pack(items, 10, SNS_MAX_BYTES)
    assert [i for b in batches for i in b] == [i for i, _ in items]  # order kept, nothing lost
    lookup = dict(items)
    for b in batches:
        assert len(b) <= 10 and sum(lookup[i] for i in b) <= SNS_MAX_BYTES


@pytest.mark.parametrize("limit", [262_144, 1_048_576])
def test_eventbridge_entries_fit_by_documented_formula(limit):
    sink = EventBridgeSink("bus", client_factory=lambda s: None, max_entry_bytes=limit)
    alerts = [make_alert(i, request_size=limit) for i in range(3)]
    entries, sizes = sink.prepare(alerts)
    for ident, size in sizes:
        assert size == eventbridge_entry_size(entries[ident]) <= limit
    batches = pack(sizes, 10, sink.max_request_bytes)
    assert all(sum(dict(sizes)[i] for i in b) <= sink.max_request_bytes for b in batches)


def test_eventbridge_entry_size_formula():
    entry = {"Time": "x", "Source": "ab", "DetailType": "é", "Detail": "{}", "Resources": ["r1"]}
    assert eventbridge_entry_size(entry) == 14 + 2 + 2 + 2 + 2


# ------------------------------------------------------------------ partial failures (Stubber)

def _stubbed(service):
    client = boto3.client(service, region_name="us-east-1")
    return client, Stubber(client)


def test_sns_partial_failure_is_retried_then_succeeds():
    client, stub = _stubbed("sns")
    alerts = [make_alert(i) for i in range(3)]
    ids = [a["alert_id"] for a in alerts]
    stub.add_response("publish_batch", {
        "Successful": [{"Id": ids[0], "MessageId": "m0"}, {"Id": ids[2], "MessageId": "m2"}],
        "Failed": [{"Id": ids[1], "Code": "InternalError", "SenderFault": False}]})
    stub.add_response("publish_batch", {"Successful": [{"Id": ids[1], "MessageId": "m1"}],
                                        "Failed": []},
                      {"TopicArn": TOPIC, "PublishBatchRequestEntries": stub_any_entries(1)})
    sleeps = []
    sink = SnsSink(TOPIC, client_factory=lambda s: client, sleep=sleeps.append)
    with stub:
        assert sink.publish(alerts) == []
    assert sleeps == [0.2] and sink.calls == 2


def stub_any_entries(n):
    from botocore.stub import ANY
    return [ANY] * n


def test_sns_persistent_failure_is_bounded_and_reported():
    client, stub = _stubbed("sns")
    alert = make_alert()
    for _ in range(4):
        stub.add_response("publish_batch", {"Successful": [], "Failed": [
            {"Id": alert["alert_id"], "Code": "KMSThrottling", "SenderFault": False,
             "Message": "slow down"}]})
    sleeps = []
    sink = SnsSink(TOPIC, client_factory=lambda s: client, sleep=sleeps.append)
    with stub:
        failed = sink.publish([alert])
    assert failed == [{"id": alert["alert_id"], "error": "KMSThrottling: slow down"}]
    assert sleeps == [0.2, 0.4, 0.8]   # bounded exponential backoff, injected sleep
    stub.assert_no_pending_responses()


def test_eventbridge_failed_entries_are_retried():
    client, stub = _stubbed("events")
    alerts = [make_alert(i) for i in range(2)]
    stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
        {"EventId": "e0"}, {"ErrorCode": "ThrottlingException", "ErrorMessage": "x"}]})
    stub.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "e1"}]})
    sink = EventBridgeSink("bus", client_factory=lambda s: client, sleep=lambda s: None)
    with stub:
        assert sink.publish(alerts) == []
    stub.assert_no_pending_responses()


# ------------------------------------------------------------------ moto: read back for real

@mock_aws
def test_sns_to_sqs_read_back():
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    q = sqs.create_queue(QueueName="read")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn,
                  Attributes={"RawMessageDelivery": "true"})
    alerts = [make_alert(i, request_size=30_000 * i) for i in range(12)]
    sink = SnsSink(topic, client_factory=lambda s: boto3.client(s, region_name="us-east-1"))
    assert sink.publish(alerts) == []
    assert sink.calls >= 2   # 12 alerts cannot go in one PublishBatch
    got = drain_queue(sqs, q)
    assert sorted(a["alert_id"] for a in got) == sorted(a["alert_id"] for a in alerts)


@mock_aws
def test_eventbridge_to_sqs_read_back():
    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    events.create_event_bus(Name="trailwatch")
    q = sqs.create_queue(QueueName="eb")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName="trailwatch",
                    EventPattern=json.dumps({"source": ["trailwatch"]}))
    events.put_targets(Rule="all", EventBusName="trailwatch", Targets=[{"Id": "q", "Arn": qarn}])
    alerts = [make_alert(i) for i in range(3)]
    sink = EventBridgeSink("trailwatch",
                           client_factory=lambda s: boto3.client(s, region_name="us-east-1"))
    assert sink.publish(alerts) == []
    msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10)["Messages"]
    details = [json.loads(m["Body"])["detail"] for m in msgs]
    assert sorted(d["alert_id"] for d in details) == sorted(a["alert_id"] for a in alerts)


@mock_aws
def test_failure_queue_keeps_large_messages_whole_in_the_archive():
    # Issue 11: an oversize failure record goes whole to S3; the queue message points to it.
    sqs = boto3.client("sqs", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="fail-archive")
    q = sqs.create_queue(QueueName="fail")["QueueUrl"]
    fq = FailureQueue(q, client_factory=lambda s: boto3.client(s, region_name="us-east-1"),
                      archive_bucket="fail-archive")
    big = "é" * 200_000
    assert fq.send([{"reason": "invalid_json", "log_event_id": "9", "message": big}]) == []
    raw = sqs.receive_message(QueueUrl=q)["Messages"][0]["Body"]
    assert len(raw.encode()) <= 262_144
    body = json.loads(raw)
    assert body["log_event_id"] == "9" and body["reason"] == "invalid_json"
    whole = s3.get_object(Bucket=body["archive"]["bucket"], Key=body["archive"]["key"])
    assert json.loads(whole["Body"].read())["message"] == big


@mock_aws
def test_failure_queue_without_archive_reports_an_oversize_record_undelivered():
    sqs = boto3.client("sqs", region_name="us-east-1")
    q = sqs.create_queue(QueueName="fail")["QueueUrl"]
    fq = FailureQueue(q, client_factory=lambda s: boto3.client(s, region_name="us-east-1"))
    (bad,) = fq.send([{"reason": "invalid_json", "log_event_id": "9", "message": "é" * 200_000},
                      {"reason": "invalid_json", "log_event_id": "10", "message": "small"}])
    assert bad["id"] == "f0" and "FAILURE_ARCHIVE_BUCKET" in bad["error"]
    (msg,) = sqs.receive_message(QueueUrl=q)["Messages"]
    assert json.loads(msg["Body"])["log_event_id"] == "10"


def test_sns_and_eventbridge_serialise_each_alert_once_and_send_the_same_bytes(monkeypatch):
    from handlers.pipeline import Pipeline
    from handlers.processor import App
    from tests.conftest import ListLogger, ListMetrics

    sent: dict[str, list[str]] = {"sns": [], "events": []}

    class Client:
        def publish_batch(self, TopicArn, PublishBatchRequestEntries):  # noqa: N803
            sent["sns"] += [e["Message"] for e in PublishBatchRequestEntries]
            return {"Successful": [], "Failed": []}

        def put_events(self, Entries):  # noqa: N803
            sent["events"] += [e["Detail"] for e in Entries]
            return {"FailedEntryCount": 0, "Entries": [{} for _ in Entries]}

    calls = []
    real = A._dumps
    monkeypatch.setattr(A, "_dumps", lambda doc: calls.append(doc.get("alert_id")) or real(doc))
    sinks = [SnsSink("arn:aws:sns:us-east-1:111122223333:t", lambda s: Client(), sleep=lambda s: None),
             EventBridgeSink("bus", lambda s: Client(), sleep=lambda s: None)]
    app = App(Pipeline([]), sinks, None, metrics_sink=ListMetrics(), log=ListLogger(),
              emit=lambda line: None)
    alerts = [make_alert(i) for i in range(3)]
    assert app._publish(alerts, None) == set()
    assert sorted(calls) == sorted(a["alert_id"] for a in alerts)     # once each, not twice
    assert sent["sns"] == sent["events"] == [real(a).decode() for a in alerts]
    assert A._BODIES == {}                                             # nothing kept afterwards
