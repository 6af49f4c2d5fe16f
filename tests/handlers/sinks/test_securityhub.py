"""Security Hub sink (ASFF through BatchImportFindings, read back from moto with get_findings) and
the chat sink (Amazon Q Developer custom notifications). moto's Security Hub keeps no limits and
never fails a finding for its size, so a strict fake enforces AWS's documented batch limits and
reports FailedFindings the way the API does."""

from __future__ import annotations

import json

import boto3
import orjson
import pytest
from moto import mock_aws

from handlers import alerts as A
from handlers.sinks.chat import ChatSink, notification
from handlers.detection.patterns import compile_pattern
from handlers.processor import App
from handlers.detection.rules import Rule
from handlers.detection.builtin import cis_rules
from handlers.sinks.securityhub import (CIS_TYPE, MAX_FINDING_BYTES, MAX_REQUEST_BYTES,
                                        SecurityHubSink, finding_types)
from tests.conftest import ListLogger, ListMetrics, drain_queue
from tests.handlers.sinks.test_routing import payload, record

ACCOUNT = "123456789012"     # moto's default account
ENV = {"owner": "111122223333", "logGroup": "CloudTrail/org", "logStream": "s"}
CIS_45 = next(r for r in cis_rules() if r.id == "cis-4.5")
TAMPER = Rule(id="stop-logging", title="CloudTrail logging stopped", severity="CRITICAL",
              pattern=compile_pattern("{ $.eventName = StopLogging }"), source="tamper",
              remediation="https://runbooks.example/stop-logging", techniques=("T1562.008",))


def alert(i=0, rule=CIS_45, **kw):
    return A.rule_alert(rule, record(i, **kw), ENV, {"id": f"le-{i}"}, 1.0)


@pytest.fixture
def hub():
    with mock_aws():
        client = boto3.client("securityhub", region_name="us-east-1")
        client.enable_security_hub()
        yield client


def sink(**kw):
    return SecurityHubSink(lambda s: boto3.client(s, region_name="us-east-1"),
                           sleep=lambda s: None, clock=lambda: 1_763_640_000.0, **kw)


def test_findings_imported_and_read_back_from_moto(hub):
    """Observed on 14f631d: nothing reached Security Hub."""
    a = alert(1)
    assert sink().publish([a]) == []
    (f,) = hub.get_findings()["Findings"]
    assert f["Id"] == a["alert_id"]
    assert f["ProductArn"] == f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"
    assert f["AwsAccountId"] == ACCOUNT and f["SchemaVersion"] == "2018-10-08"
    assert f["Severity"]["Label"] == CIS_45.severity.replace("INFO", "INFORMATIONAL")
    assert f["Types"] == [CIS_TYPE] and f["GeneratorId"] == "trailwatch/cis-4.5"
    assert f["Title"] == a["title"] and f["Description"] == a["description"]
    assert f["CreatedAt"] == f["FirstObservedAt"] == "2026-11-20T10:00:01.000Z"
    res = {r["Id"]: r for r in f["Resources"]}
    assert res["arn:aws:cloudtrail:us-east-1:111122223333:trail/t"]["Type"] == "AwsCloudTrailTrail"
    assert res["AWS::::Account:111122223333"]["Type"] == "AwsAccount"
    pf = f["ProductFields"]
    assert pf["aws/cloudtrail/eventName"] == "UpdateTrail"
    assert pf["aws/cloudtrail/userIdentity/accessKeyId"] == "AKIA1"
    assert pf["trailwatch/alert_id"] == a["alert_id"]
    assert len(pf) <= 50 and all(len(k) <= 128 and len(v) <= 2048 for k, v in pf.items())


def test_reimport_updates_instead_of_duplicating(hub):
    a = alert(1)
    s = sink()
    assert s.publish([a]) == [] and s.publish([a, alert(2)]) == []
    ids = sorted(f["Id"] for f in hub.get_findings()["Findings"])
    assert ids == sorted([a["alert_id"], alert(2)["alert_id"]])


def test_severity_labels_and_types():
    assert finding_types(CIS_45.doc, "rule_match") == [CIS_TYPE]
    assert finding_types(TAMPER.doc, "rule_match") == ["TTPs/Defense Evasion"]
    threat = {"attack": {"tactics": ["TA0006", "TA0005"]}, "source": "pack"}
    assert finding_types(threat, "rule_match") == ["TTPs/Credential Access", "TTPs/Defense Evasion"]
    s = sink(account_id="111122223333", region="eu-west-1", partition="aws")
    for sev, label in (("INFO", "INFORMATIONAL"), ("LOW", "LOW"), ("CRITICAL", "CRITICAL")):
        r = Rule(id="x", title="x", severity=sev, pattern=compile_pattern("{ $.a = 1 }"))
        assert s.finding(alert(rule=r))["Severity"]["Label"] == label
    f = s.finding(alert(rule=TAMPER))
    assert f["Remediation"]["Recommendation"]["Url"] == "https://runbooks.example/stop-logging"
    assert f["FindingProviderFields"]["Types"] == f["Types"]
    over = s.finding(A.oversize_alert(ENV, {"id": "o"}, 300_000, 262_144))
    assert over["Resources"] == [{"Type": "AwsAccount", "Id": "AWS::::Account:111122223333",
                                  "Partition": "aws", "Region": "eu-west-1"}]


class StrictHub:
    """Enforces BatchImportFindings' documented limits; fails chosen ids like the API does."""

    def __init__(self, fail_times=None):
        self.calls: list[list[dict]] = []
        self.fail_times = dict(fail_times or {})
        self.meta = type("M", (), {"region_name": "us-east-1"})()

    def batch_import_findings(self, Findings):
        assert 1 <= len(Findings) <= 100
        assert len(orjson.dumps(Findings)) <= MAX_REQUEST_BYTES + 100 * 2   # list brackets/commas
        for f in Findings:
            assert len(orjson.dumps(f)) <= MAX_FINDING_BYTES
            assert len(f["Title"]) <= 256 and len(f["Description"]) <= 1024
        self.calls.append(Findings)
        failed = []
        for f in Findings:
            if self.fail_times.get(f["Id"], 0):
                self.fail_times[f["Id"]] -= 1
                # a transient code (InvalidInput is permanent: see StrictSecurityHub)
                failed.append({"Id": f["Id"], "ErrorCode": "InternalFailure",
                               "ErrorMessage": "no"})
        return {"FailedCount": len(failed), "SuccessCount": len(Findings) - len(failed),
                "FailedFindings": failed}


def strict_sink(hub):
    return SecurityHubSink(lambda s: hub, sleep=lambda s: None, account_id="111122223333",
                           region="us-east-1", partition="aws")


def test_batches_of_at_most_100_findings():
    hub = StrictHub()
    alerts = [alert(i) for i in range(250)]
    assert strict_sink(hub).publish(alerts) == []
    assert [len(c) for c in hub.calls] == [100, 100, 50]


def test_request_and_finding_size_limits_with_hostile_fields():
    hub = StrictHub()
    big = {"b": "中" * 3000}
    alerts = [A.rule_alert(CIS_45, dict(record(i), requestParameters=big, responseElements=big,
                                        userAgent="𝕏" * 5000, errorMessage="é" * 5000),
                           ENV, {"id": str(i)}, None) for i in range(100)]
    assert strict_sink(hub).publish(alerts) == []
    assert sum(len(c) for c in hub.calls) == 100
    finding = hub.calls[0][0]
    assert finding["ProductFields"]["aws/cloudtrail/userAgent"].endswith("…")


def test_failed_findings_are_retried_then_reported_undelivered():
    ok, flaky, dead = alert(1), alert(2), alert(3)
    hub = StrictHub({flaky["alert_id"]: 2, dead["alert_id"]: 99})
    s = strict_sink(hub)
    undelivered = s.publish([ok, flaky, dead])
    assert undelivered == [{"id": dead["alert_id"], "error": "InternalFailure: no"}]
    assert [len(c) for c in hub.calls] == [3, 2, 2, 1]        # 4 attempts, only failures resent


def test_processor_wires_security_hub_and_chat_from_env(hub):
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    chat = sns.create_topic(Name="chat")["TopicArn"]
    url = sqs.create_queue(QueueName="chat")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=chat, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    app = App.from_env({"SECURITY_HUB_FINDINGS": "enabled", "CHAT_TOPIC_ARN": chat},
                       clock=lambda: 1_763_632_950.0, sleep=lambda s: None,
                       metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None)
    assert [s.name for s in app.sinks] == ["securityhub", "chat"]
    app.handle({"awslogs": {"data": payload([record(1), record(2)])}})
    assert len(hub.get_findings()["Findings"]) == 2
    msgs = drain_queue(sqs, url)
    assert len(msgs) == 2 and {m["source"] for m in msgs} == {"custom"}
    assert App.from_env({"SECURITY_HUB_FINDINGS": "disabled"}).sinks == []


# ------------------------------------------------------------------------------ chat

def test_chat_notification_follows_amazon_q_custom_schema():
    a = A.rule_alert(TAMPER, dict(record(7), eventName="StopLogging"), ENV, {"id": "x"}, None)
    n = notification(a)
    assert n["version"] == "1.0" and n["source"] == "custom" and n["id"] == a["alert_id"]
    c = n["content"]
    assert c["textType"] == "client-markdown"
    assert c["title"].startswith(":rotating_light: [CRITICAL] CloudTrail logging stopped")
    assert "*Who:* `arn:aws:iam::111122223333:user/alice`" in c["description"]
    assert "`StopLogging`" in c["description"] and "`AKIA1`" in c["description"]
    assert c["nextSteps"][0] == "https://runbooks.example/stop-logging"
    assert any("cloudtrailv2/home?region=us-east-1#/events/ev-7" in s for s in c["nextSteps"])
    assert {"CRITICAL", "stop-logging", "111122223333", "us-east-1"} <= set(c["keywords"])
    m = n["metadata"]
    assert m["eventType"] == "rule_match" and m["relatedResources"] == a["resources"]
    assert all(isinstance(v, str) for v in m["additionalContext"].values())
    for kind_alert in (A.oversize_alert(ENV, {"id": "o"}, 300_000, 262_144),
                       A.delivery_delayed_alert([{"key": "k", "lag": 1e4, "reason": None,
                                                  "log_group": "g", "log_stream": "s"}], 900.0)):
        assert notification(kind_alert)["content"]["description"]


def test_chat_text_from_the_record_cannot_mention_or_link():
    rec = dict(record(1), userAgent="<!channel> `x` [click](https://evil)",
               eventName="<https://evil|Totally fine>")
    d = notification(A.rule_alert(CIS_45, rec, ENV, {"id": "x"}, None))["content"]["description"]
    assert "<" not in d and ">" not in d and "<!channel>" not in d
    assert "`‹https://evil|Totally fine›`" in d


def test_chat_sink_publishes_within_sns_limits_on_moto():
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="chat")["TopicArn"]
        url = sqs.create_queue(QueueName="c")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                      Attributes={"RawMessageDelivery": "true"})
        huge = dict(record(1), userAgent="𝕏" * 100_000, requestParameters={"b": "x" * 200_000})
        alerts = [A.rule_alert(CIS_45, huge, ENV, {"id": "x"}, None)] + [alert(i) for i in range(2, 14)]
        entries, sizes = ChatSink(topic).prepare(alerts)
        assert all(s < 20_000 for _, s in sizes)
        assert ChatSink(topic).publish(alerts) == []
        got = drain_queue(sqs, url)
        assert len(got) == 13 and all(json.loads(json.dumps(m))["version"] == "1.0" for m in got)


# ------------------------------------------------------------------------------ hostile records

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from handlers.sinks.sns import SNS_MAX_BYTES, SnsSink  # noqa: E402

TEXT = st.text(max_size=50) | st.builds(lambda c, n: c * n, st.sampled_from("x中𝕏<`"),
                                         st.integers(0, 40_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={
    "eventID": TEXT, "eventName": TEXT, "eventSource": TEXT, "awsRegion": TEXT,
    "recipientAccountId": TEXT, "userAgent": TEXT, "errorMessage": TEXT, "eventTime": TEXT,
    "sourceIPAddress": TEXT,
    "userIdentity": st.fixed_dictionaries({}, optional={"arn": TEXT, "accessKeyId": TEXT}),
    "requestParameters": st.dictionaries(st.sampled_from(["name", "bucketName", "x"]), TEXT),
    "resources": st.lists(st.fixed_dictionaries({"ARN": TEXT.map(lambda t: "arn:" + t)}),
                          max_size=40)}),
    st.integers(1, 25))
def test_hostile_records_stay_within_asff_chat_and_sns_limits(rec, copies):
    # a record the pipeline accepts is at most 262,144 bytes; 200 KB of identity text leaves
    # the margin fit() needs (it never removes identity fields)
    assume(len(orjson.dumps(rec)) <= 200_000)
    alerts = [A.rule_alert(CIS_45, dict(rec, eventID=f"{rec.get('eventID', '')}{i}"), ENV,
                           {"id": str(i)}, None) for i in range(copies)]
    alerts, _ = A.aggregate(alerts, 3)
    hub = StrictHub()
    assert strict_sink(hub).publish(alerts) == []
    for f in (f for call in hub.calls for f in call):
        assert len(f["Resources"]) <= 32 and len(f["ProductFields"]) <= 50
        assert all(len(k) <= 128 and len(v) <= 2048 for k, v in f["ProductFields"].items())
        assert len(f["Remediation"]["Recommendation"]["Text"]) <= 512
        assert len(f["GeneratorId"]) <= 512
    for a in alerts:
        n = notification(a)
        assert len(orjson.dumps(n)) < SNS_MAX_BYTES
        assert "<" not in n["content"]["description"]
    SnsSink("arn:aws:sns:us-east-1:1:t.fifo", client_factory=lambda s: None).prepare(alerts)


# ------------------------------------------------------------- issue 24 item 4: error classes
from tests.strict_fakes import StrictAws, StrictSecurityHub  # noqa: E402


def strict_hub_sink(hub):
    return SecurityHubSink(lambda s: hub, sleep=lambda s: None, account_id=hub.account,
                           region="us-east-1", partition="aws")


def test_security_hub_not_enabled_is_permanent_and_not_retried():
    """Observed on 5bb8a96: InvalidAccessException (Security Hub not enabled in the Region) was
    retried 4 times and then failed the invocation; no retry can succeed."""
    hub = StrictSecurityHub(enabled=False)
    out = strict_hub_sink(hub).publish([alert(1), alert(2)])
    assert len(hub.requests) == 1
    assert {u["id"] for u in out} == {alert(1)["alert_id"], alert(2)["alert_id"]}
    assert all(u["permanent"] and u["error"].startswith("InvalidAccessException") for u in out)


def test_failed_finding_invalid_input_is_permanent_others_are_retried():
    ok, bad, flaky = alert(1), alert(2), alert(3)
    calls = {"n": 0}

    def fail(op, findings):
        calls["n"] += 1
        return None
    hub = StrictSecurityHub(fail=fail)
    s = strict_hub_sink(hub)
    real = s.finding

    def finding(a):
        f = real(a)
        if a["alert_id"] == bad["alert_id"]:
            f["Title"] = "x" * 300          # what the service refuses: FailedFindings InvalidInput
        return f
    s.finding = finding
    original = hub.batch_import_findings
    flaky_left = {"n": 2}

    def flaky_import(Findings):  # noqa: N803
        resp = original(Findings)
        if flaky_left["n"] and any(f["Id"] == flaky["alert_id"] for f in Findings):
            flaky_left["n"] -= 1
            resp["FailedFindings"].append({"Id": flaky["alert_id"], "ErrorCode": "InternalError",
                                           "ErrorMessage": "try again"})
        return resp
    hub.batch_import_findings = flaky_import
    out = s.publish([ok, bad, flaky])
    assert out == [{"id": bad["alert_id"], "error": "InvalidInput: Title or Description too long",
                    "permanent": True}]
    # the invalid finding is sent once; the transient one until it goes through
    assert [sorted(f["Id"] for f in r) for r in hub.requests][1:] == [[flaky["alert_id"]]] * 2
    assert set(hub.findings) == {ok["alert_id"], flaky["alert_id"]}


@pytest.mark.parametrize("region", ["us-" + "e" * 20 + "-1", "ap-southeast-" + "x" * 12 + "-9"])
def test_attacker_chosen_arn_region_never_makes_a_finding_unimportable(region):
    """Observed on 5bb8a96: an ARN in requestParameters with a Region-shaped value over 16
    characters became Resources[].Region, and Security Hub refuses the whole finding."""
    hub = StrictSecurityHub()
    a = A.rule_alert(CIS_45, record(7, region=region), ENV, {"id": "le-7"}, 1.0)
    assert any(region in r for r in a["resources"])
    assert strict_hub_sink(hub).publish([a]) == []
    assert hub.violations == []
    (f,) = hub.findings.values()
    assert all(1 <= len(r["Region"]) <= 16 for r in f["Resources"])


def _cis_event(n=3):
    return {"awslogs": {"data": payload([record(i) for i in range(n)])}}


@pytest.mark.parametrize("mode", ["awslogs", "kinesis"])
def test_processor_with_security_hub_not_enabled_delivers_elsewhere_and_does_not_fail(mode):
    """Observed on 5bb8a96: DeliveryFailed on every invocation (Lambda retried it, re-publishing
    to SNS and EventBridge each time); in Kinesis mode every record was reported failed."""
    import base64

    aws = StrictAws()
    aws.securityhub_enabled = False
    metrics, log = ListMetrics(), ListLogger()
    app = App.from_env(dict(aws.env, SECURITY_HUB_FINDINGS="enabled"), client_factory=aws.client,
                       clock=lambda: 1_763_632_950.0, sleep=lambda s: None, metrics_sink=metrics,
                       log=log, emit=lambda line: None)
    event = _cis_event()
    if mode == "kinesis":
        data = event["awslogs"]["data"]
        event = {"Records": [{"eventSource": "aws:kinesis", "eventID": "shard:1",
                              "kinesis": {"sequenceNumber": "1", "data": data}}]}
        assert base64.b64decode(data)
    out = app.handle(event)
    if mode == "kinesis":
        assert out == {"batchItemFailures": []}
    else:
        assert out["alerts"] == 3
    assert len(aws.alerts()["sns"]) == 3 and len(aws.alerts()["eventbridge"]) == 3
    assert len(aws.securityhub.requests) == 1               # not retried
    assert metrics.total("AlertsRejected") == 3
    assert metrics.total("AlertsUndelivered") == 0
    rejected = [e for lvl, m, e in log.records if m == "alert rejected"]
    assert len(rejected) == 3 and all(e["sink"] == "securityhub" for e in rejected)


@pytest.mark.parametrize("code", ["KMSAccessDenied", "AuthorizationError", "NotFound",
                                  "InvalidParameter"])
def test_a_chat_topic_that_cannot_take_alerts_is_permanent_not_retried(code):
    """Issue 24 item 4 ("every sink classifies its errors"): the optional chat topic refusing for
    a configuration reason (its key, its policy, deleted, a parameter it cannot take) is not cured
    by a retry; on 5bb8a96 it failed the invocation and every retry re-published to SNS and
    EventBridge. The primary sinks keep failing the invocation (the events stay replayable)."""
    from botocore.exceptions import ClientError

    from tests.strict_fakes import StrictSns

    def fail(op, request):
        return ClientError({"Error": {"Code": code, "Message": "refused"}}, op)
    sns = StrictSns(fail=fail)
    out = ChatSink("arn:aws:sns:us-east-1:111122223333:chat", client_factory=lambda s: sns,
                   sleep=lambda s: None).publish([alert(1), alert(2)])
    assert sns.calls == 1
    assert len(out) == 2 and all(u["permanent"] and u["error"].startswith(code) for u in out)


def test_a_throttled_chat_topic_is_retried():
    from botocore.exceptions import ClientError

    from tests.strict_fakes import StrictSns
    left = {"n": 2}

    def fail(op, request):
        if left["n"]:
            left["n"] -= 1
            return ClientError({"Error": {"Code": "KMSThrottling", "Message": "slow"}}, op)
        return None
    sns = StrictSns(fail=fail)
    assert ChatSink("arn:aws:sns:us-east-1:111122223333:chat", client_factory=lambda s: sns,
                    sleep=lambda s: None).publish([alert(1)]) == []
    assert sns.calls == 3
