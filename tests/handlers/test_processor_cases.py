"""Processor behaviour the issue found unguarded, with fakes only (fast, no moto).

- account and region of an alert come from the record (``recipientAccountId``, ``awsRegion``),
  never from the log stream name (trap 5; org-style ``o-<orgid>_<account>_CloudTrail_<region>``);
- ``eventVersion`` 1.10 and 1.11 records are processed like 1.09 (trap 12);
- the same CloudTrail event arriving in two Kinesis records gives one alert per matching rule
  (trap 10; since issue 13 StopLogging matches CIS 4.5 and the pack's
  ``tw-cloudtrail-stopped-or-deleted``), and both records are retried if it cannot be published;
- a record that could not be routed to the failure queue stays in ``batchItemFailures`` even when
  a publish fails in the same batch (nothing lost).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from pathlib import Path

import pytest

from handlers.pipeline import Pipeline
from handlers.processor import App, DeliveryFailed
from handlers.detection.builtin import builtin_rules
from tests.conftest import ListLogger, ListMetrics

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "data" / "org_stream_v1_11.json").read_text())
ENV = FIXTURE["envelope"]
NOW = 1_763_633_000.0


def encode(env: dict) -> str:
    return base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()


def kinesis(*envs_or_data) -> dict:
    records = []
    for n, item in enumerate(envs_or_data):
        data = item if isinstance(item, str) else encode(item)
        records.append({"kinesis": {"sequenceNumber": f"seq-{n}", "data": data}})
    return {"Records": records}


class Sink:
    name = "fake"

    def __init__(self, fail=lambda alert: False):
        self.fail = fail
        self.published: list[dict] = []

    def publish(self, alerts):
        self.published += alerts
        return [{"id": a["alert_id"], "error": "boom"} for a in alerts if self.fail(a)]


class Queue:
    name = "failure_queue"

    def __init__(self, broken=False):
        self.broken = broken
        self.sent: list[dict] = []

    def send(self, failures):
        if self.broken:
            return [{"id": f"f{i}", "error": "AccessDenied"} for i in range(len(failures))]
        self.sent += failures
        return []


def app(sink=None, queue=None) -> App:
    return App(Pipeline(builtin_rules(None), clock=lambda: NOW), [sink or Sink()], queue,
               metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None)


def messages(env):
    return [json.loads(e["message"]) for e in env["logEvents"]]


# ----------------------------------------------------------------------- account and region

ACCOUNT_KEYS = {"recipientAccountId", "account", "account_id", "accountId"}
REGION_KEYS = {"awsRegion", "region"}


def _account_region_values(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "userIdentity" or k == "delivery":   # the caller's account; the raw stream
                continue
            if k in ACCOUNT_KEYS or k in REGION_KEYS:
                yield k, v
            yield from _account_region_values(v, path + (k,))
    elif isinstance(node, list):
        for v in node:
            yield from _account_region_values(v, path)


# StopLogging: CIS 4.5 and, since issue 13 (handlers/detection/pack.json), the pack's tamper rule.
STOP_LOGGING_RULES = ["cis-4.5", "tw-cloudtrail-stopped-or-deleted"]


def test_org_stream_alerts_take_account_and_region_from_the_record():
    sink = Sink()
    result = app(sink).handle({"awslogs": {"data": encode(ENV)}})
    assert result["records"] == 4
    by_name = {a["event"]["eventName"]: a for a in sink.published if a["kind"] == "rule_match"}
    assert set(by_name) == {"StopLogging", "DeleteTrail", "UpdateTrail"}
    expected = {r["eventName"]: r for r in messages(ENV)}
    for name, alert in by_name.items():
        found = dict(_account_region_values(alert))
        assert found, "an alert must say which account and region the event belongs to"
        for key, value in found.items():
            want = expected[name]["recipientAccountId"] if key in ACCOUNT_KEYS \
                else expected[name]["awsRegion"]
            assert value == want, (name, key, value)
        text = json.dumps({k: v for k, v in alert.items() if k != "delivery"})
        assert "222222222222" not in text        # the account in the stream name


def test_the_same_record_under_any_stream_name_gives_the_same_alert_body():
    a, b = Sink(), Sink()
    app(a).handle({"awslogs": {"data": encode(ENV)}})
    renamed = dict(ENV, logStream="333333333333_CloudTrail_ap-south-1")
    app(b).handle({"awslogs": {"data": encode(renamed)}})
    strip = [{k: v for k, v in x.items() if k != "delivery"} for x in a.published]
    assert strip == [{k: v for k, v in x.items() if k != "delivery"} for x in b.published]


# ----------------------------------------------------------------------- eventVersion

@pytest.mark.parametrize("version", ["1.05", "1.09", "1.10", "1.11", "1.99", "1.100"])
def test_every_1x_event_version_is_processed(version):
    env = copy.deepcopy(ENV)
    rec = messages(env)[0]
    rec["eventVersion"] = version
    env["logEvents"] = [dict(env["logEvents"][0], message=json.dumps(rec))]
    sink = Sink()
    result = app(sink).handle({"awslogs": {"data": encode(env)}})
    assert result["records"] == 1 and result["malformed"] == 0
    assert sorted(a["rule"]["id"] for a in sink.published) == STOP_LOGGING_RULES


# ----------------------------------------------------------------------- Kinesis

def test_same_event_in_two_kinesis_records_gives_one_alert():
    first = dict(ENV, logEvents=ENV["logEvents"][:1])
    again = dict(ENV, logEvents=[dict(ENV["logEvents"][0], id="another-log-event-id")])
    sink = Sink()
    assert app(sink).handle(kinesis(first, again)) == {"batchItemFailures": []}
    matches = [(a["rule"]["id"], a["event"]["eventID"]) for a in sink.published
               if a["kind"] == "rule_match"]
    assert sorted(matches) == [(r, "9f0c0000-0000-4000-8000-000000000001")
                               for r in STOP_LOGGING_RULES]     # one per rule, none twice


def test_failed_duplicate_alert_retries_every_record_it_came_from():
    first = dict(ENV, logEvents=ENV["logEvents"][:1])
    again = dict(ENV, logEvents=[dict(ENV["logEvents"][0], id="another-log-event-id")])
    clean = dict(ENV, logEvents=ENV["logEvents"][3:])              # DescribeTrails: no alert
    sink = Sink(fail=lambda a: True)
    out = app(sink).handle(kinesis(first, clean, again))
    assert out == {"batchItemFailures": [{"itemIdentifier": "seq-0"},
                                         {"itemIdentifier": "seq-2"}]}


def test_unroutable_record_stays_failed_when_a_publish_also_fails():
    alerting = dict(ENV, logEvents=ENV["logEvents"][:1])
    fine = dict(ENV, logEvents=ENV["logEvents"][3:])
    out = app(Sink(fail=lambda a: True), Queue(broken=True)).handle(
        kinesis("not base64 !!", alerting, fine))
    assert out == {"batchItemFailures": [{"itemIdentifier": "seq-0"},
                                         {"itemIdentifier": "seq-1"}]}


def test_unroutable_record_stays_failed_when_publishing_succeeds():
    out = app(Sink(), Queue(broken=True)).handle(kinesis("not base64 !!", ENV))
    assert out == {"batchItemFailures": [{"itemIdentifier": "seq-0"}]}


def test_routed_bad_record_is_not_retried_and_keeps_its_data():
    q = Queue()
    out = app(Sink(), q).handle(kinesis("not base64 !!", ENV))
    assert out == {"batchItemFailures": []}
    assert [f["data"] for f in q.sent] == ["not base64 !!"]


def test_direct_invocation_with_unroutable_payload_fails():
    with pytest.raises(DeliveryFailed):
        app(Sink(), Queue(broken=True)).handle({"awslogs": {"data": "not base64 !!"}})


# ----------------------------------------------------------------------- traps 8, 9, 12 (unit)

def test_lag_is_delivery_timestamp_minus_event_time():
    """Trap 8: the CWL timestamp is delivery time; lag = timestamp/1000 - eventTime."""
    sink = Sink()
    app(sink).handle({"awslogs": {"data": encode(ENV)}})
    events = {json.loads(e["message"])["eventID"]: e for e in ENV["logEvents"]}
    event_time = 1_763_632_680.0                     # 2025-11-20T09:58:00Z
    for alert in (a for a in sink.published if a["kind"] == "rule_match"):
        ev = events[alert["event"]["eventID"]]
        assert alert["delivery"]["delivery_lag_seconds"] == \
            pytest.approx(ev["timestamp"] / 1000 - event_time, abs=0.001)


def test_control_message_is_skipped_and_many_events_per_batch_are_all_read():
    """Trap 9: CONTROL_MESSAGE is not data; one batch carries many log events."""
    control = {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs",
               "logGroup": "", "logStream": "", "subscriptionFilters": [],
               "logEvents": [{"id": "", "timestamp": 1, "message":
                              "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}
    sink = Sink()
    res = app(sink).handle(kinesis(control, ENV))
    assert res == {"batchItemFailures": []}
    assert sink.published and len({a["event"]["eventID"] for a in sink.published}) == 3


@pytest.mark.parametrize("version", ["1.10", "1.11"])
def test_pipeline_counts_new_minor_versions_as_records(version):
    """Trap 12 at the pipeline level: no string comparison of eventVersion."""
    rec = dict(messages(ENV)[3], eventVersion=version)
    env = dict(ENV, logEvents=[{"id": "1", "timestamp": 1_763_632_800_000,
                                "message": json.dumps(rec)}])
    res = Pipeline(builtin_rules(None), clock=lambda: NOW).process_envelope(env)
    assert (res.records, res.malformed, len(res.failures)) == (1, 0, 0)
