"""The versioned alert contract: every alert the processor can produce validates against
handlers/alert-schema-v2.json, and rule alerts carry what an analyst pivots on first."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from handlers import alerts as A
from handlers.detection.patterns import compile_pattern
from handlers.pipeline import Pipeline, iter_cases
from handlers.processor import App
from handlers.detection.rules import Rule
from handlers.detection.builtin import builtin_rules
from tests.conftest import CORPUS, EVENTS, Collect, ListLogger, ListMetrics, load_event

SCHEMA = json.loads(A.SCHEMA_FILE.read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
ENV = {"owner": "111122223333", "logGroup": "CloudTrail/org", "logStream": "111122223333_CloudTrail_us-east-1"}

ASSUMED_ROLE = {
    "eventVersion": "1.10", "eventID": "6f1a-1", "eventTime": "2026-11-20T10:00:00Z",
    "eventName": "StopLogging", "eventSource": "cloudtrail.amazonaws.com",
    "eventType": "AwsApiCall", "awsRegion": "eu-west-1", "recipientAccountId": "111122223333",
    "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/2.15",
    "requestID": "req-1", "sharedEventID": "shared-1", "eventCategory": "Management",
    "managementEvent": True, "readOnly": False, "vpcEndpointId": "vpce-0abc",
    "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                   "clientProvidedHostHeader": "cloudtrail.eu-west-1.amazonaws.com"},
    "userIdentity": {
        "type": "AssumedRole", "principalId": "AROAEXAMPLE:alice",
        "arn": "arn:aws:sts::111122223333:assumed-role/Admin/alice", "accountId": "111122223333",
        "accessKeyId": "ASIAEXAMPLE", "invokedBy": "ssm.amazonaws.com",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE",
                              "arn": "arn:aws:iam::111122223333:role/Admin",
                              "accountId": "111122223333", "userName": "Admin"},
            "attributes": {"creationDate": "2026-11-20T09:00:00Z", "mfaAuthenticated": "true"},
            "sourceIdentity": "alice@example.com"}},
    "requestParameters": {"name": "arn:aws:cloudtrail:eu-west-1:111122223333:trail/org"},
    "responseElements": None,
}
TAMPER = Rule(id="stop-logging", title="CloudTrail logging stopped", severity="CRITICAL",
              pattern=compile_pattern("{ $.eventName = StopLogging }"), source="tamper",
              description="Someone stopped a trail.", remediation="https://runbooks.example/stop",
              tactics=("TA0005",), techniques=("T1562.008",))


def valid(alert: dict) -> dict:
    """Validate the alert as consumers see it: serialised, then parsed."""
    doc = json.loads(A._dumps(alert))
    errors = sorted(VALIDATOR.iter_errors(doc), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    return doc


def rule_alert(rec=ASSUMED_ROLE, rule=TAMPER, **kw):
    return A.rule_alert(rule, rec, ENV, {"id": "le-1", "timestamp": 1_763_632_900_000}, 100.0,
                        **kw)


def test_schema_is_a_valid_draft_2020_12_schema_and_names_the_version():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema"]["const"] == A.SCHEMA == "trailwatch.alert/2"


def test_rule_alert_carries_the_full_identity_block_and_pivot_fields():
    """Observed on 14f631d: no accessKeyId, sessionContext, requestID, sharedEventID,
    eventCategory, readOnly, vpcEndpointId, TLS details, resources, title/description."""
    a = valid(rule_alert())
    ev, ui = a["event"], a["event"]["userIdentity"]
    assert ui["accessKeyId"] == "ASIAEXAMPLE" and ui["invokedBy"] == "ssm.amazonaws.com"
    assert ui["sessionContext"] == ASSUMED_ROLE["userIdentity"]["sessionContext"]
    for k in ("requestID", "sharedEventID", "eventCategory", "readOnly", "vpcEndpointId",
              "tlsDetails", "managementEvent"):
        assert ev[k] == ASSUMED_ROLE[k], k
    assert a["resources"] == ["arn:aws:cloudtrail:eu-west-1:111122223333:trail/org"]
    assert a["title"].startswith("CloudTrail logging stopped: cloudtrail.amazonaws.com StopLogging")
    assert "assumed-role/Admin/alice" in a["title"] and "111122223333/eu-west-1" in a["title"]
    assert a["description"] == "Someone stopped a trail."
    assert a["remediation"] == "https://runbooks.example/stop"
    assert a["rule"]["attack"] == {"tactics": ["TA0005"], "techniques": ["T1562.008"]}


def test_expected_change_comes_from_the_caller_never_from_the_user_agent():
    """Observed on 14f631d: a `trailwatch/` user agent (anyone can send one) marked an event
    expected. Now only the caller's decision counts."""
    spoofed = dict(ASSUMED_ROLE, userAgent="Boto3/1.35 trailwatch/0.1.0")
    assert rule_alert(spoofed)["expected_change"] is False
    assert rule_alert(expected_change=True)["expected_change"] is True


def test_affected_resources_from_resources_list_params_and_known_names():
    rec = {"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPolicy",
           "recipientAccountId": "111122223333", "awsRegion": "us-east-1",
           "requestParameters": {"bucketName": "logs", "policyArn": "arn:aws:iam::aws:policy/X"},
           "resources": [{"ARN": "arn:aws:s3:::logs/key", "type": "AWS::S3::Object"},
                         {"ARN": "not-an-arn"}, {"ARN": "x" * 2000}]}
    assert A.affected_resources(rec) == ["arn:aws:s3:::logs/key", "arn:aws:iam::aws:policy/X",
                                         "arn:aws:s3:::logs"]
    iam = {"eventSource": "iam.amazonaws.com", "recipientAccountId": "111122223333",
           "awsRegion": "us-east-1", "requestParameters": {"roleName": "Admin", "userName": "../evil"}}
    assert A.affected_resources(iam) == ["arn:aws:iam::111122223333:role/Admin"]
    many = {"requestParameters": {"arns": [f"arn:aws:s3:::b{i}" for i in range(50)]}}
    malformed = {"requestParameters": {"a": "arn:", "b": "arn:aws:s3", "c": "arn:x:s3:::b",
                                       "d": "arn:aws:iam::12:role/x", "e": "arn:aws:s3:::ok\n"}}
    assert A.affected_resources(malformed) == []
    assert len(A.affected_resources(many)) == A.MAX_RESOURCES
    gov = {"eventSource": "kms.amazonaws.com", "recipientAccountId": "111122223333",
           "awsRegion": "us-gov-west-1", "requestParameters": {"keyId": "k-1"}}
    assert A.affected_resources(gov) == ["arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k-1"]


@pytest.mark.parametrize("rule,kind,rec", [c for c in iter_cases(builtin_rules()) if c[1] == "match"],
                         ids=lambda v: getattr(v, "id", None) or (v if isinstance(v, str) else ""))
def test_every_builtin_rule_sample_gives_a_valid_alert(rule, kind, rec):
    valid(rule_alert(rec, rule))


def test_oversize_and_delivery_delayed_alerts_validate():
    over = A.oversize_alert(ENV, {"id": "le-9", "message": "é" * 300_000}, 600_000, 262_144)
    valid(over)
    delayed = A.delivery_delayed_alert(
        [{"key": f"eventID:e{i}", "lag": 1000.0 + i, "reason": "DELIVERY_DELAY" if i % 2 else None,
          "log_group": "g", "log_stream": "s"} for i in range(30)], 900.0)
    doc = valid(delayed)
    assert doc["delivery"] is None and doc["resources"] == []
    assert doc["title"].startswith("30 CloudTrail event(s) delivered up to 1029 s")


@pytest.mark.parametrize("budget", [262_144 - 300, 20_000, 4_000])
def test_truncated_alerts_validate(budget):
    rec = dict(ASSUMED_ROLE, requestParameters={"blob": "中" * 120_000},
               responseElements={"blob": "x" * 90_000}, userAgent="u" * 3000,
               tlsDetails={"pad": "y" * 5000})
    body = A.fit(rule_alert(rec), budget)
    assert len(body) <= budget
    doc = valid(json.loads(body))
    assert doc["truncated_fields"] and doc["event"]["userIdentity"]["accessKeyId"] == "ASIAEXAMPLE"
    over = A.fit(A.oversize_alert(ENV, {"id": "x", "message": "m" * 300_000}, 300_000, 262_144), 1500)
    valid(json.loads(over))


def test_aggregated_alert_validates():
    alerts = [rule_alert(dict(ASSUMED_ROLE, eventID=f"e{i}", eventTime=f"2026-11-20T10:{i:02d}:00Z"))
              for i in range(25)]
    (agg,), members = A.aggregate(alerts, 20)
    doc = valid(agg)
    assert doc["aggregate"]["count"] == 25 and len(members[doc["alert_id"]]) == 25


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=20),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                           max_size=3),
                       max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["eventID", "eventTime", "eventName", "eventSource",
                                        "awsRegion", "recipientAccountId", "userIdentity",
                                        "requestParameters", "resources", "tlsDetails",
                                        "readOnly", "vpcEndpointId", "requestID", "userAgent"]),
                       JSONISH, max_size=10),
       st.booleans())
def test_hostile_records_still_give_valid_alerts(rec, expected):
    rec = dict(rec, eventVersion="1.10")
    a = A.rule_alert(TAMPER, rec, ENV, {"id": "le"}, None, expected_change=expected)
    valid(a)
    A.aggregate([a] * 3, 2)   # never raises on hostile identities


def test_every_alert_from_every_sample_event_validates():
    """Runs each events/*.json invocation through the processor and validates what it publishes."""
    seen_kinds = set()
    for alert in published_by_every_sample_event():
        valid(alert)
        seen_kinds.add(alert["kind"])
    assert seen_kinds == {"rule_match", "oversize_event", "delivery_delayed"}


def published_by_every_sample_event(context=None):
    """Every alert the processor publishes for each events/*.json invocation, in order."""
    for path in sorted(EVENTS.glob("*.json")):
        sink = Collect()
        app = App.from_env({}, clock=lambda: 1_763_640_000.0, metrics_sink=ListMetrics(),
                           log=ListLogger(), emit=lambda line: None)
        app.sinks = [sink]
        app.handle(load_event(path.stem), context)
        yield from sink.alerts


def corpus_alerts(corpus):
    pipe = Pipeline(builtin_rules())
    alerts = []
    for p in sorted(corpus.glob("*.jsonl")):
        for n, line in enumerate(p.read_text().splitlines()):
            rec = json.loads(line)
            for rule in pipe.index.matches(rec):
                alerts.append(A.rule_alert(rule, rec, ENV, {"id": f"{p.stem}-{n}"}, None))
    return alerts


@pytest.mark.corpus
def test_corpus_alerts_validate_carry_access_keys_and_aggregate():
    if not CORPUS.exists():
        pytest.skip("../shared/corpus is not present")
    alerts = corpus_alerts(CORPUS)
    for a in alerts:
        valid(a)
    with_key = [a for a in alerts if (a["event"].get("userIdentity") or {}).get("accessKeyId")]
    assert alerts and len(with_key) >= len(alerts) // 2
    out, members = A.aggregate(alerts, A.DEFAULT_AGGREGATION_THRESHOLD)
    assert len(out) < len(alerts) and all(len(m) > 20 for m in members.values())
    for a in out:
        valid(a)


class LambdaContext:
    aws_request_id = "7f5d1c2e-0b4a-4c4e-9a51-1d2f3e4a5b6c"
    function_name = "trailwatch-processor"

    def get_remaining_time_in_millis(self):
        return 60_000


def test_every_alert_kind_validates_as_published_in_lambda():
    """Issue 24 item 9. Observed on 5bb8a96: in Lambda every alert gets the request id in its
    delivery block, and delivery_delayed (whose delivery the schema required to be null) became
    {"request_id": ...}: the published alerts broke the contract. Same events as the test above,
    but with a Lambda context, as in production."""
    seen_kinds = set()
    for alert in published_by_every_sample_event(LambdaContext()):
        doc = valid(alert)
        seen_kinds.add(doc["kind"])
        assert doc["delivery"]["request_id"] == LambdaContext.aws_request_id
    assert seen_kinds == {"rule_match", "oversize_event", "delivery_delayed"}
