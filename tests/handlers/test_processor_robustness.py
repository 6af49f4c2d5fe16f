"""Issue 11: one test per observed defect (each failed on commit 14f631d), plus sink isolation,
the deadline (fake clock), spoofed user agents, rule-file isolation and request ids."""

from __future__ import annotations

import base64
import gzip
import json
import threading

import pytest
from botocore.exceptions import ClientError

from handlers.processor import App, DeliveryFailed
from tests.conftest import ListLogger, ListMetrics, awslogs_event
from tests.strict_fakes import StrictAws

NOW = 1_763_640_000.0
TS = 1_763_639_000_000


def make(aws: StrictAws, env: dict | None = None, **kw) -> App:
    emitted: list[dict] = []
    app = App.from_env(dict(aws.env, **(env or {})), client_factory=aws.client,
                       clock=lambda: NOW, sleep=lambda s: None, metrics_sink=ListMetrics(),
                       log=ListLogger(), emit=lambda line: emitted.append(json.loads(line)), **kw)
    app.emitted = emitted
    return app


def record(**fields) -> dict:
    """A CloudTrail record exactly one built-in rule matches (CIS 4.5: CreateTrail)."""
    rec = {"eventVersion": "1.08", "eventID": "ev-1", "eventName": "CreateTrail",
           "eventSource": "cloudtrail.amazonaws.com", "eventTime": "2025-11-20T11:50:00Z",
           "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/mallory"},
           "userAgent": "aws-cli/2"}
    rec.update(fields)
    return rec


def event_of(*recs, **ev) -> dict:
    return awslogs_event([{"id": f"le-{n}", "timestamp": TS, "message": json.dumps(r), **ev}
                          for n, r in enumerate(recs)])


def b64gz(doc) -> str:
    return base64.b64encode(gzip.compress(json.dumps(doc).encode(), mtime=0)).decode()


# --------------------------------------------------------------- observed crashes (6 classes)

def test_lone_surrogate_in_awslogs_data_is_routed_whole():
    aws = StrictAws()
    data = "H4sI\ud800AAAA"
    make(aws).handle({"awslogs": {"data": data}})
    (doc,) = aws.failure_records()
    assert doc["reason"] == "bad_base64" and doc["data"] == data
    assert aws.violations == []


def test_failure_record_over_the_sqs_limit_after_json_escaping_goes_to_the_archive():
    # 200,000 characters that JSON escapes to 6 bytes each: the old 200,000-character cut
    # produced a 1.2 MB message and pack() raised.
    aws = StrictAws()
    msg = "\x01" * 200_000
    make(aws).handle(awslogs_event([{"id": "le-1", "timestamp": TS, "message": msg}]))
    (doc,) = aws.failure_records()
    assert doc["message"] == msg and doc["reason"] == "invalid_json"
    (pointer,) = [json.loads(b) for b in aws.sqs.bodies]
    assert pointer["archive"]["bucket"] == "fail-archive" and pointer["log_event_id"] == "le-1"
    assert aws.violations == []


def test_deeply_nested_field_is_published_not_a_crash():
    aws = StrictAws()
    deep = "x"
    for _ in range(300):
        deep = [deep]
    out = make(aws).handle(event_of(record(requestParameters={"a": deep})))
    assert out["alerts"] == 1
    (alert,) = aws.alerts()["sns"]
    assert alert["event"]["requestParameters"] == {"a": deep}
    assert aws.violations == []


@pytest.mark.parametrize("reason", [["a", "b"], {"k": 1}, 7])
def test_unhashable_addendum_reason_gives_a_delayed_alert(reason):
    aws = StrictAws()
    rec = record(eventTime="2025-11-20T09:00:00Z", addendum={"reason": reason})
    out = make(aws).handle(event_of(rec))
    assert out["delayed"] == 1
    delayed = [a for a in aws.alerts()["sns"] if a["kind"] == "delivery_delayed"]
    assert len(delayed) == 1 and delayed[0]["event"]["reasons"] == {json.dumps(reason).replace(
        " ", ""): 1}


def test_nonchar_in_malformed_message_is_written_to_the_queue_exactly():
    aws = StrictAws()
    msg = '{"broken": "\ufffe\uffff'
    make(aws).handle(awslogs_event([{"id": "le-1", "timestamp": TS, "message": msg}]))
    (doc,) = aws.failure_records()
    assert doc["message"] == msg
    assert aws.violations == []


def test_identity_fields_alone_over_the_limit_still_publish():
    aws = StrictAws()
    # a 261 KB record (under CloudTrail's 256 KB cap) whose identity fields alone exceed SNS's
    out = make(aws).handle(event_of(record(eventID="E" * 131_000, awsRegion="R" * 130_500)))
    assert out["alerts"] == 1 and out["records"] == 1
    (alert,) = aws.alerts()["sns"]
    assert "eventID" in alert["truncated_fields"]
    assert alert["event"]["eventID"]["original_bytes"] >= 131_000
    assert aws.violations == []


# --------------------------------------------------------------------------- silent drops

def _gz(doc) -> bytes:
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


@pytest.mark.parametrize("tail", [b"junk", _gz({"messageType": "DATA_MESSAGE", "logEvents": [
    {"id": "2", "timestamp": TS, "message": json.dumps(record(eventID="hidden"))}]})],
    ids=["trailing-junk", "second-gzip-member"])
def test_bytes_after_the_gzip_stream_are_a_payload_error_not_ignored(tail):
    aws = StrictAws()
    env = {"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
           "logEvents": [{"id": "1", "timestamp": TS, "message": json.dumps(record())}]}
    data = base64.b64encode(_gz(env) + tail).decode()
    out = make(aws).handle({"awslogs": {"data": data}})
    assert out["payload_errors"] == 1 and out["log_events"] == 0
    (doc,) = aws.failure_records()
    assert doc["reason"] == "trailing_data" and doc["data"] == data


# ------------------------------------------------------------------- accounted, recoverable

def test_large_payload_data_is_kept_whole():
    aws = StrictAws()
    data = "A" * 400_000 + "!"          # not base64; bigger than the old 200,000-character cut
    make(aws).handle({"awslogs": {"data": data}})
    (doc,) = aws.failure_records()
    assert doc["data"] == data


@pytest.mark.parametrize("message", [{"a": 1}, [1, 2], 42, None, True])
def test_non_string_messages_are_kept_as_their_json_value(message):
    aws = StrictAws()
    make(aws).handle(awslogs_event([{"id": "le-1", "timestamp": TS, "message": message}]))
    (doc,) = aws.failure_records()
    assert doc["reason"] == "bad_log_event" and doc["message"] == message


def test_unknown_message_type_and_unsupported_event_keep_their_data():
    aws = StrictAws()
    app = make(aws)
    data = b64gz({"messageType": "SOMETHING_NEW", "logEvents": []})
    app.handle({"awslogs": {"data": data}})
    event = {"hello": ["world", {"n": 1}]}
    app.handle(event)
    docs = aws.failure_records()
    assert [d["reason"] for d in docs] == ["unknown_message_type", "unsupported_event"]
    assert docs[0]["data"] == data and docs[1]["data"] == event


def test_kinesis_failures_carry_the_sequence_number():
    aws = StrictAws()
    good = event_of(record())["awslogs"]["data"]
    bad_event = awslogs_event([{"id": "le-9", "timestamp": TS, "message": "not json"}])
    event = {"Records": [
        {"kinesis": {"sequenceNumber": "seq-1", "data": good}},
        {"kinesis": {"sequenceNumber": "seq-2", "data": bad_event["awslogs"]["data"]}},
        {"kinesis": {"sequenceNumber": "seq-3", "data": "!!"}},
        {"not": "kinesis"}]}
    assert make(aws).handle(event) == {"batchItemFailures": []}
    by_reason = {d["reason"]: d for d in aws.failure_records()}
    assert by_reason["invalid_json"]["sequence_number"] == "seq-2"
    assert by_reason["bad_base64"]["sequence_number"] == "seq-3"
    assert by_reason["bad_record"]["data"] == {"not": "kinesis"}


@pytest.mark.parametrize("ts", [1e300, -5, 2 ** 60])
def test_lag_values_cloudwatch_rejects_are_never_emitted(ts):
    aws = StrictAws()
    app = make(aws)
    out = app.handle(awslogs_event([{"id": "le-1", "timestamp": ts,
                                     "message": json.dumps(record())}]))
    values = [v for d in app.emitted for k in ("DeliveryLag", "ReceiptLag") for v in d.get(k, [])]
    assert all(abs(v) <= 2 ** 360 for v in values)
    assert out["malformed"] == 1 and aws.failure_records()[0]["timestamp"] == ts


# ---------------------------------------------------------------------- expected_change

ROLE = "arn:aws:iam::111122223333:role/trailwatch-admin"


def trailwatch_change(**over) -> dict:
    rec = record(eventName="UpdateTrail", eventID="tw-1",
                 userAgent="Boto3/1.35.0 trailwatch/0.1.0",
                 userIdentity={"type": "AssumedRole",
                               "arn": "arn:aws:sts::111122223333:assumed-role/trailwatch-admin/s",
                               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": ROLE}}},
                 requestParameters={"name": "main", "cloudWatchLogsRoleArn":
                                    "arn:aws:iam::111122223333:role/trailwatch-cwl-main"})
    rec.update(over)
    return rec


@pytest.mark.parametrize("rec", [
    record(eventName="StopLogging", userAgent="trailwatch/0.1.0"),
    record(eventName="DeleteTrail", eventID="d", userAgent="x trailwatch/9"),
    trailwatch_change(eventName="StopLogging"),                             # not a managed change
    trailwatch_change(userAgent="aws-cli/2"),                               # not trailwatch's UA
    trailwatch_change(userIdentity={"type": "IAMUser",                      # not the principal
                                    "arn": "arn:aws:iam::111122223333:user/mallory"}),
], ids=["stoplogging-ua", "deletetrail-ua", "stoplogging-by-role", "no-ua", "other-principal"])
def test_a_spoofed_user_agent_never_marks_an_alert_expected(rec):
    aws = StrictAws()
    out = make(aws, {"EXPECTED_CHANGE_PRINCIPALS": ROLE}).handle(event_of(rec))
    assert out["alerts"] >= 1
    assert not any(a["expected_change"] for a in aws.alerts()["sns"])
    assert all(m["MessageAttributes"]["expected_change"]["StringValue"] == "false"
               for m in aws.sns.messages)


def test_a_non_string_event_name_by_a_configured_principal_is_not_a_crash():
    """Found by review (also on 386e0fe): the managed-resource check looked a record's eventName
    up in a set, so a JSON list there (with the configured principal and trailwatch's user agent)
    raised TypeError and failed every retry of the invocation."""
    root = "arn:aws:iam::111122223333:root"
    rec = record(eventName=["CreateRole"], userAgent="trailwatch/0.1.0", errorCode="AccessDenied",
                 userIdentity={"type": "Root", "arn": root, "accountId": "111122223333"},
                 requestParameters={"roleName": "trailwatch-cwl-main"})
    aws = StrictAws()
    out = make(aws, {"EXPECTED_CHANGE_PRINCIPALS": root}).handle(event_of(rec))
    assert out["alerts"] >= 1 and out["records"] == 1
    assert not any(a["expected_change"] for a in aws.alerts()["sns"])


def test_trailwatch_changes_by_the_configured_principal_are_marked_and_still_published():
    aws = StrictAws()
    assert make(aws).handle(event_of(trailwatch_change()))["alerts"] == 1
    assert aws.alerts()["sns"][0]["expected_change"] is False      # default: nothing marked
    aws = StrictAws()
    make(aws, {"EXPECTED_CHANGE_PRINCIPALS": f" {ROLE} ,arn:aws:iam::1:role/x"}).handle(
        event_of(trailwatch_change()))
    (alert,) = aws.alerts()["sns"]
    assert alert["expected_change"] is True


# ------------------------------------------------------------------------- sink isolation

class RaisingSink:
    name = "raising"

    def publish(self, alerts):
        raise ClientError({"Error": {"Code": "KMS.DisabledException", "Message": "key"}}, "Publish")


def test_a_raising_sink_does_not_stop_the_others_direct():
    aws = StrictAws()
    app = make(aws)
    app.sinks = [RaisingSink()] + app.sinks
    with pytest.raises(DeliveryFailed):
        app.handle(event_of(record()))
    assert len(aws.alerts()["sns"]) == len(aws.alerts()["eventbridge"]) == 1
    assert app.metrics.total("AlertsUndelivered") == 1 and app.metrics.total("LogEvents") == 1
    assert any(m == "alerts not delivered" and e["sink"] == "raising"
               for _, m, e in app.log.records)


def test_a_throttled_sink_fails_only_its_kinesis_records():
    def fail(op, request):
        if op == "PutEvents" and any('"eventName":"StopLogging"' in e["Detail"] for e in request):
            return ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, op)
        return None
    aws = StrictAws(fail=fail)
    app = make(aws)
    app.sinks[1].chunk_size = 1    # one alert per PutEvents call, so one call fails, not both
    stop = event_of(record(eventName="StopLogging"))["awslogs"]["data"]
    other = event_of(record(eventName="DeleteTrail", eventID="ev-2"))["awslogs"]["data"]
    out = app.handle({"Records": [{"kinesis": {"sequenceNumber": "s1", "data": stop}},
                                  {"kinesis": {"sequenceNumber": "s2", "data": other}}]})
    assert out == {"batchItemFailures": [{"itemIdentifier": "s1"}]}
    # StopLogging and DeleteTrail each match CIS 4.5 and the pack's tw-cloudtrail-stopped-or-deleted
    assert len(aws.alerts()["sns"]) == 4 and len(aws.alerts()["eventbridge"]) == 2


def test_a_sink_without_a_deadline_keyword_still_works():
    seen = []

    class Plain:
        name = "plain"

        def publish(self, alerts):
            seen.extend(alerts)
            return []
    aws = StrictAws()
    app = make(aws)
    app.sinks = [Plain()]
    app.handle(event_of(record()), FakeContext(FakeClock(), 30_000))
    assert len(seen) == 1


# ------------------------------------------------------------------------------- deadline

class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeContext:
    aws_request_id = "req-42"
    function_name = "f"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:f"

    def __init__(self, clock: FakeClock, remaining_ms: int) -> None:
        self.clock = clock
        self.end = clock.t + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - self.clock.t) * 1000)


class HangingSink:
    """Takes "forever": moves the fake clock past any deadline, then blocks until released."""

    name = "hanging"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.release = threading.Event()

    def publish(self, alerts):
        self.clock.t += 3600
        self.release.wait(10)
        return []


def test_deadline_direct_fails_the_invocation_before_lambda_would_kill_it():
    clock = FakeClock()
    aws = StrictAws()
    app = make(aws, monotonic=clock)
    hang = HangingSink(clock)
    app.sinks.append(hang)
    try:
        with pytest.raises(DeliveryFailed, match="deadline"):
            app.handle(event_of(record()), FakeContext(clock, 60_000))
        assert len(aws.alerts()["sns"]) == 1          # the healthy sinks delivered
        assert app.metrics.total("AlertsUndelivered") == 1
    finally:
        hang.release.set()


def test_deadline_kinesis_reports_the_records_in_batch_item_failures():
    clock = FakeClock()
    aws = StrictAws()
    app = make(aws, monotonic=clock)
    hang = HangingSink(clock)
    app.sinks = [hang]
    data = event_of(record())["awslogs"]["data"]
    quiet = event_of(record(eventName="DescribeInstances", eventID="q"))["awslogs"]["data"]
    try:
        out = app.handle({"Records": [{"kinesis": {"sequenceNumber": "s1", "data": data}},
                                      {"kinesis": {"sequenceNumber": "s2", "data": quiet}}]},
                         FakeContext(clock, 60_000))
        assert out == {"batchItemFailures": [{"itemIdentifier": "s1"}]}
    finally:
        hang.release.set()


def test_retries_stop_at_the_deadline_and_leave_the_reserve():
    clock = FakeClock()
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock.t += s

    def fail(op, request):
        clock.t += 1.0    # every call takes a second and fails
        return ClientError({"Error": {"Code": "InternalError", "Message": "x"}}, op)
    aws = StrictAws(fail=fail)
    app = App.from_env(aws.env, client_factory=aws.client, clock=lambda: NOW, sleep=sleep,
                       metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None,
                       monotonic=clock)
    start = clock.t
    with pytest.raises(DeliveryFailed):
        app.handle(event_of(record()), FakeContext(clock, 3_000))
    # 3 s left, 0.5 s reserve: at most the calls/sleeps that start before t+2.5 s happen
    assert clock.t - start <= 2.5 + 1.0 + 1.0      # two sinks may each finish one call in flight
    assert aws.sns.calls + aws.events.calls <= 4


def test_publishing_is_concurrent():
    barrier = threading.Barrier(4, timeout=10)

    class Meeting:
        name = "meeting"
        chunk_size = 1

        def publish(self, alerts):
            barrier.wait()      # only returns when 4 calls run at once
            return []
    aws = StrictAws()
    app = make(aws)
    app.sinks = [Meeting()]
    recs = [record(eventID=f"e{i}") for i in range(4)]
    assert app.handle(event_of(*recs))["alerts"] == 4


def test_botocore_clients_get_short_timeouts_and_bounded_retries():
    from handlers.clients import client_config
    cfg = client_config()
    assert cfg.connect_timeout <= 2 and cfg.read_timeout <= 5
    assert cfg.retries["total_max_attempts"] <= 2
    assert cfg.max_pool_connections >= 16


# ------------------------------------------------------------------- correlation, stable ids

def test_alerts_carry_the_request_id():
    aws = StrictAws()
    clock = FakeClock()
    make(aws, monotonic=clock).handle(event_of(record(eventTime="2025-11-20T09:00:00Z")),
                                      FakeContext(clock, 60_000))
    alerts = aws.alerts()["sns"]
    assert {a["kind"] for a in alerts} == {"rule_match", "delivery_delayed"}
    assert {a["delivery"]["request_id"] for a in alerts} == {"req-42"}


def test_delivery_delayed_id_is_stable_when_a_kinesis_batch_is_partly_redelivered():
    late = [record(eventID=f"late-{i}", eventName="DescribeInstances",
                   eventTime="2025-11-20T09:00:00Z") for i in range(2)]
    r1 = {"kinesis": {"sequenceNumber": "s1", "data": event_of(late[0])["awslogs"]["data"]}}
    r2 = {"kinesis": {"sequenceNumber": "s2", "data": event_of(late[1])["awslogs"]["data"]}}
    aws = StrictAws()
    app = make(aws)
    app.handle({"Records": [r1, r2]})
    first = {a["alert_id"] for a in aws.alerts()["sns"]}
    aws.reset()
    app.handle({"Records": [r2]})     # only the second record is retried
    assert {a["alert_id"] for a in aws.alerts()["sns"]} <= first


# --------------------------------------------------------------------------- rules fail safe

def test_duplicate_and_bad_user_rules_are_skipped_builtins_load(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [
        {"id": "cis-4.5", "pattern": "{ $.eventName = DescribeInstances }"},   # clashes
        {"id": "mine", "pattern": "{ $.eventName = DescribeInstances }"},
        {"id": "mine", "pattern": "{ $.eventName = X }"},
        {"id": "broken", "pattern": "{ $.eventName = "},
        "not an object"]}))
    aws = StrictAws()
    app = make(aws, {"RULES_FILE": str(path)})
    out = app.handle(event_of(record(), record(eventName="DescribeInstances", eventID="d")))
    ids = sorted(a["rule"]["id"] for a in aws.alerts()["sns"])
    assert "mine" in ids and any(i.startswith("cis-") for i in ids)
    assert app.metrics.total("RuleErrors") == 4 and out["alerts"] == len(ids)


@pytest.mark.parametrize("ref", ["missing.json", "s3://no-such-bucket/rules.json",
                                 "ssm:/no/such/param"])
def test_unreadable_rules_file_keeps_the_builtins(ref, tmp_path):
    from moto import mock_aws
    with mock_aws():
        aws = StrictAws()
        app = App.from_env(dict(aws.env, RULES_FILE=ref if ":" in ref else str(tmp_path / ref)),
                           clock=lambda: NOW, sleep=lambda s: None, metrics_sink=ListMetrics(),
                           log=ListLogger(), emit=lambda line: None)
        assert len(app.rule_errors) == 1
        assert any(r.id.startswith("cis-") for r in app.pipeline.rules)


def test_rules_file_from_s3_and_ssm():
    import boto3
    from moto import mock_aws
    doc = json.dumps({"rules": [{"id": "from-remote", "pattern": "{ $.eventName = Foo }"}]})
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="rules")
        s3.put_object(Bucket="rules", Key="trailwatch/rules.json", Body=doc.encode())
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name="/trailwatch/rules", Value=doc, Type="String")
        for ref in ("s3://rules/trailwatch/rules.json", "ssm:/trailwatch/rules"):
            app = App.from_env({"RULES_FILE": ref}, clock=lambda: NOW, sleep=lambda s: None,
                               metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda x: None)
            assert app.rule_errors == [] and "from-remote" in {r.id for r in app.pipeline.rules}


def test_error_logs_carry_the_lambda_request_id(monkeypatch):
    import io

    import handlers.processor as proc
    stream = io.StringIO()
    monkeypatch.setattr(proc.logger.registered_handler, "stream", stream)
    monkeypatch.setattr(proc, "_APP", None)
    monkeypatch.delenv("FAILURE_QUEUE_URL", raising=False)
    monkeypatch.delenv("ALERT_TOPIC_ARN", raising=False)
    monkeypatch.delenv("ALERT_BUS_NAME", raising=False)
    clock = FakeClock()
    proc.lambda_handler(awslogs_event([{"id": "le-1", "timestamp": TS, "message": "not json"}]),
                        FakeContext(clock, 60_000))
    logs = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    (err,) = [entry for entry in logs if entry["message"] == "unprocessable log event"]
    assert err["function_request_id"] == "req-42" and err["log_event_id"] == "le-1"
    monkeypatch.setattr(proc, "_APP", None)


# ------------------------------------------- issue 24: a malformed environment value degrades
@pytest.mark.parametrize("key,value", [
    ("DELIVERY_LAG_THRESHOLD_SECONDS", "15m"), ("CLOCK_SKEW_TOLERANCE_SECONDS", "-5"),
    ("MAX_DECOMPRESSED_BYTES", "16MiB"), ("EVENTBRIDGE_MAX_ENTRY_BYTES", "nan"),
    ("FAILURE_QUEUE_MAX_BYTES", "1 MB"), ("PUBLISH_CONCURRENCY", "many"),
    ("ALERT_AGGREGATION_THRESHOLD", "twenty"), ("IDEMPOTENCY_WINDOW_SECONDS", "1d"),
    # review F8: 0 is no size or concurrency (every payload rejected, nothing published)
    ("MAX_DECOMPRESSED_BYTES", "0"), ("EVENTBRIDGE_MAX_ENTRY_BYTES", "0"),
    ("FAILURE_QUEUE_MAX_BYTES", "0.0"), ("PUBLISH_CONCURRENCY", "0"),
    ("PUBLISH_CONCURRENCY", "0.5"),
])
def test_a_malformed_number_in_the_environment_is_ignored_logged_and_counted(key, value):
    """Observed on 5bb8a96: App.from_env raised ValueError on every invocation (a crash loop
    until a redeploy). Now the default is used, a `setting ignored` error is logged and the
    ConfigErrors metric (alarmed) is counted on every invocation."""
    aws = StrictAws()
    env = dict(aws.env, **{key: value})
    if key == "IDEMPOTENCY_WINDOW_SECONDS":
        env["IDEMPOTENCY_TABLE_NAME"] = "alerts"
    log, metrics = ListLogger(), ListMetrics()
    factory = (lambda s: object() if s == "dynamodb" else aws.client(s))
    app = App.from_env(env, client_factory=factory, metrics_sink=metrics, log=log,
                       emit=lambda line: None, sleep=lambda s: None)
    (err,) = [e for lvl, m, e in log.records if m == "setting ignored"]
    assert err["setting"] == key and value in err["error"]
    app.handle(awslogs_event([]))
    assert metrics.total("ConfigErrors") == 1
