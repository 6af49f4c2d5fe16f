"""The Lambda entry and App over every file in events/, with moto sinks and injected failures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from handlers.processor import App, DeliveryFailed
from tests.conftest import EVENTS, ROOT, ListLogger, ListMetrics, awslogs_event, drain_queue, \
    load_event, load_source

EVENT_NAMES = sorted(p.stem for p in EVENTS.glob("*.json"))
NOW = 1_763_640_000.0


def make_app(env=None, **kw):
    emitted: list[dict] = []
    app = App.from_env(env or {}, clock=lambda: NOW, sleep=lambda s: None,
                       metrics_sink=ListMetrics(), log=ListLogger(),
                       emit=lambda line: emitted.append(json.loads(line)), **kw)
    app.emitted = emitted
    return app


def emf_values(app, name):
    return [v for doc in app.emitted for v in doc.get(name, [])]


@pytest.fixture
def aws():
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        read_q = sqs.create_queue(QueueName="read")["QueueUrl"]
        fail_q = sqs.create_queue(QueueName="fail")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=read_q, AttributeNames=["QueueArn"])
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"],
                      Attributes={"RawMessageDelivery": "true"})

        yield {"env": {"ALERT_TOPIC_ARN": topic, "FAILURE_QUEUE_URL": fail_q},
               "alerts": lambda: drain_queue(sqs, read_q),
               "failures": lambda: drain_queue(sqs, fail_q)}


def test_events_are_regenerable():
    out = subprocess.run([sys.executable, str(EVENTS / "build.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_event_file_gives_its_expected_outcome(name, aws):
    expected = load_source(name)["expected"]
    app = make_app(aws["env"])
    result = app.handle(load_event(name))
    alerts = aws["alerts"]()
    failures = aws["failures"]()
    if "batchItemFailures" in expected:
        assert result == {"batchItemFailures": []}
    else:
        for key in ("log_events", "records", "oversize", "malformed", "control_messages",
                    "payload_errors", "delayed"):
            if key in expected:
                assert result[key] == expected[key], key
    metrics = app.metrics
    for key, metric in (("log_events", "LogEvents"), ("records", "CloudTrailRecords"),
                        ("control_messages", "ControlMessages"), ("oversize", "OversizeEvents")):
        if key in expected:
            assert metrics.total(metric) == expected[key], metric
    assert len(alerts) == expected.get("alerts", 0)
    if "alerts_by_rule" in expected:
        assert Counter(a["rule"]["id"] for a in alerts) == Counter(expected["alerts_by_rule"])
    if "expected_changes" in expected:
        assert sum(a["expected_change"] for a in alerts) == expected["expected_changes"]
    assert sorted(f["reason"] for f in failures) == sorted(expected.get("failure_reasons", []))
    if "max_lag" in expected:
        (delayed,) = [a for a in alerts if a["kind"] == "delivery_delayed"]
        assert delayed["event"]["max_lag_seconds"] == expected["max_lag"]
        assert delayed["event"]["addendum"] == {"reason": "DELIVERY_DELAY"}


def test_malformed_records_are_logged_with_their_ids(aws):
    app = make_app(aws["env"])
    app.handle(load_event("malformed-messages"))
    logged = [extra.get("log_event_id") for lvl, _, extra in app.log.records if lvl == "error"]
    assert logged == ["37920000000000000000000000000000000000000000000000000001",
                      "37920000000000000000000000000000000000000000000000000002"]
    ids = sorted(f["log_event_id"] for f in aws["failures"]())
    assert ids == sorted(logged)


def test_same_invocation_twice_gives_same_alert_ids(aws):
    app = make_app(aws["env"])
    app.handle(load_event("single-trail-cis"))
    first = sorted(a["alert_id"] for a in aws["alerts"]())
    app.handle(load_event("single-trail-cis"))
    assert sorted(a["alert_id"] for a in aws["alerts"]()) == first


def test_lag_metrics_are_emitted_per_record(aws):
    app = make_app(aws["env"])
    app.handle(load_event("delayed-delivery"))
    assert sorted(emf_values(app, "DeliveryLag")) == [360.0, 1500.0, 5400.0]
    assert len(emf_values(app, "ReceiptLag")) == 3
    doc = app.emitted[0]
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Trailwatch" and directive["Dimensions"] == [["service"]]
    assert doc["service"] == "trailwatch"


def test_lag_arrays_are_chunked_at_the_emf_limit():
    from handlers.emf import documents
    docs = [json.loads(d) for d in documents({"DeliveryLag": list(range(250)),
                                              "ReceiptLag": list(range(120))}, "Seconds", "N", "s")]
    assert [len(d["DeliveryLag"]) for d in docs] == [100, 100, 50]
    assert [len(d.get("ReceiptLag", ())) for d in docs] == [100, 20, 0]
    # every value is declared by the document that carries it, and no other metric is
    for d in docs:
        names = [m["Name"] for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert names == [n for n in ("DeliveryLag", "ReceiptLag") if n in d]
    assert [v for d in docs for v in d["DeliveryLag"]] == list(range(250))
    assert documents({"DeliveryLag": []}, "Seconds", "N", "s") == []


def test_counters_travel_in_the_first_emf_document_with_the_samples():
    from handlers.emf import Counters, documents
    c = Counters()
    c.add_metric(name="LogEvents", unit="Count", value=3)
    c.add_metric(name="Alerts", unit="Count", value=1)
    c.add_metric(name="Alerts", unit="Count", value=2)
    docs = [json.loads(d) for d in documents({"DeliveryLag": list(range(150))}, "Seconds", "N",
                                             "s", 5, counters=c.take())]
    assert len(docs) == 2 and c.take() == []            # taken once: the next invocation starts at 0
    first = docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert first == [{"Name": "DeliveryLag", "Unit": "Seconds"}, {"Name": "LogEvents", "Unit": "Count"},
                     {"Name": "Alerts", "Unit": "Count"}]
    assert (docs[0]["LogEvents"], docs[0]["Alerts"]) == (3, 3)
    assert [m["Name"] for m in docs[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["DeliveryLag"]
    # counters without samples still make one document
    only = [json.loads(d) for d in documents({"DeliveryLag": []}, "Seconds", "N", "s", 5,
                                             counters=[("Payloads", "Count", 1)])]
    assert len(only) == 1 and only[0]["Payloads"] == 1 and "DeliveryLag" not in only[0]


def test_the_default_metrics_are_one_emf_line_per_invocation_and_reset():
    lines: list[dict] = []
    app = App.from_env({}, clock=lambda: NOW, sleep=lambda s: None, log=ListLogger(),
                       emit=lambda line: lines.append(json.loads(line)))
    app.handle(load_event("delayed-delivery"))
    assert len(lines) == 1
    doc = lines[0]
    declared = {m["Name"]: m["Unit"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert declared["LogEvents"] == "Count" and declared["DeliveryLag"] == "Seconds"
    assert doc["LogEvents"] == 3 and doc["Payloads"] == 1 and set(declared) <= set(doc)
    lines.clear()
    app.handle(load_event("delayed-delivery"))
    assert lines[0]["LogEvents"] == 3                   # not 6: counters are per invocation


def test_response_carries_counts_and_the_max_lag(aws):
    app = make_app(aws["env"])
    result = app.handle(load_event("delayed-delivery"))
    assert result["max_delivery_lag_seconds"] == 5400.0 and result["records"] == 3


def test_without_sinks_alerts_are_logged():
    app = make_app({})
    result = app.handle(load_event("org-trail-member"))
    logged = [extra["alert"] for lvl, msg, extra in app.log.records if msg == "alert"]
    assert len(logged) == result["alerts"] == 2


class BrokenQueue:
    name = "failure_queue"

    def send(self, failures):
        return [{"id": f"f{i}", "error": "AccessDenied"} for i in range(len(failures))]


class FlakySink:
    name = "flaky"

    def __init__(self, fail_rules):
        self.fail_rules = fail_rules
        self.seen = []

    def publish(self, alerts):
        self.seen += alerts
        return [{"id": a["alert_id"], "error": "boom"} for a in alerts
                if a["rule"]["id"] in self.fail_rules]


def test_failure_queue_unwritable_fails_the_invocation(aws):
    app = make_app(aws["env"])
    app.failure_queue = BrokenQueue()
    with pytest.raises(DeliveryFailed, match="failure queue"):
        app.handle(load_event("malformed-messages"))
    assert aws["alerts"]() == []   # nothing published before the retry


def test_unpublishable_alert_fails_direct_invocation():
    app = make_app({})
    app.sinks = [FlakySink({"cis-4.5"})]
    with pytest.raises(DeliveryFailed):
        app.handle(load_event("single-trail-cis"))


def test_kinesis_reports_only_the_failing_record():
    src = load_event("kinesis-batch")
    other = awslogs_event([{"id": "x", "timestamp": 1_763_632_800_000, "message": json.dumps(
        {"eventVersion": "1.08", "eventID": "k2", "eventName": "StopLogging",
         "eventSource": "cloudtrail.amazonaws.com", "eventTime": "2025-11-20T10:00:00Z"})}])
    src["Records"].append({"kinesis": {"sequenceNumber": "seq-third",
                                       "data": other["awslogs"]["data"]}})
    app = make_app({})
    app.sinks = [FlakySink({"cis-4.5"})]
    assert app.handle(src) == {"batchItemFailures": [{"itemIdentifier": "seq-third"}]}


def test_unsupported_event_is_routed_not_dropped(aws):
    app = make_app(aws["env"])
    result = app.handle({"hello": "world"})
    assert result["payload_errors"] == 1
    (failure,) = aws["failures"]()
    assert failure["reason"] == "unsupported_event" and failure["event_keys"] == ["hello"]


def test_rules_file_adds_rules_and_bad_pattern_fails_with_position(tmp_path, aws):
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"rules": [{"id": "custom-sg", "severity": "high",
                                           "pattern": "{ $.eventName = CreateSecurityGroup }"}]}))
    app = make_app(dict(aws["env"], RULES_FILE=str(good)))
    app.handle(load_event("org-trail-member"))
    assert "custom-sg" in {a["rule"]["id"] for a in aws["alerts"]()}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "broken", "pattern": "{ $.eventName = X && }"}]))
    # Issue 11: a bad rule is skipped with an error log (position included) and RuleErrors;
    # the built-in rules still load and run.
    app = make_app(dict(aws["env"], RULES_FILE=str(bad)))
    (err,) = [e for lvl, msg, e in app.log.records if msg == "rule skipped"]
    assert "rule 'broken'" in err["error"] and "position 21" in err["error"]
    app.handle(load_event("single-trail-cis"))
    assert app.metrics.total("RuleErrors") == 1
    assert len(aws["alerts"]()) == 20   # 16 CIS alerts + 4 from the detection pack


class FakeContext:
    function_name = "trailwatch-processor"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:111122223333:function:trailwatch-processor"
    aws_request_id = "req-0001"

    def get_remaining_time_in_millis(self):
        return 60_000


def test_lambda_handler_entry_point_with_powertools(monkeypatch, capsys, aws):
    import handlers.processor as proc
    monkeypatch.setattr(proc, "_APP", None)
    for k, v in aws["env"].items():
        monkeypatch.setenv(k, v)
    out = proc.lambda_handler(load_event("single-trail-cis"), FakeContext())
    assert out["alerts"] == 20  # 15 CIS controls (4.5 twice) + 4 detection-pack rules
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{") and "_aws" in line]
    names = {m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"]
             for m in d["Metrics"]}
    assert {"DeliveryLag", "LogEvents", "Alerts"} <= names
    # Issue 11: every alert carries the invocation's request id in its delivery block
    assert {a["delivery"]["request_id"] for a in aws["alerts"]()} == {"req-0001"}
    monkeypatch.setattr(proc, "_APP", None)


def test_cold_start_does_not_import_boto3():
    # Powertools registers a user-agent hook on the tiny top-level ``botocore`` package; what must
    # not load at cold start is boto3 and botocore's client machinery.
    code = ("import sys, handlers.processor as p; "
            "print('boto3' in sys.modules, 'botocore.client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"], out.stderr
