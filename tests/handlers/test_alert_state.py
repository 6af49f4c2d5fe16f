"""Thresholds and dedup windows across invocations (issue 20, handlers/alert_state.py).

On moto's DynamoDB (the table the template creates) and on tests/strict_fakes.StrictDynamo
(DynamoDB's documented key, expression and TTL rules, plus throttling and an unreachable
endpoint), with an injected clock. "Invocations" are separate ``Windows.apply`` calls or
``App.handle`` calls on fresh apps, as separate Lambda containers would be.
"""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from handlers import alerts as A
from handlers.alert_state import (
    ENV_TABLE,
    Change,
    MAX_ATTEMPTS,
    DynamoStore,
    MemoryStore,
    Windows,
)
from handlers.detection.rules import parse_rules
from handlers.processor import App
from tests.conftest import Collect, ListLogger, ListMetrics
from tests.strict_fakes import StrictDynamo

TABLE = "alert-state"
T0 = 1_763_632_800.0          # 2025-11-20T10:00:00Z, a multiple of 60 minutes


def rules(**fields):
    base = {"id": "r", "pattern": '{ $.eventName = "GetSecretValue" }', "severity": "MEDIUM"}
    return parse_rules({"rules": [dict(base, **fields)]})


def record(n, principal="alice", seconds=0.0):
    when = datetime.fromtimestamp(T0 + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"eventVersion": "1.08", "eventID": f"ev-{principal}-{n}", "eventTime": when,
            "eventSource": "secretsmanager.amazonaws.com", "eventName": "GetSecretValue",
            "recipientAccountId": "111122223333", "awsRegion": "us-east-1",
            "userIdentity": {"type": "AssumedRole", "accountId": "111122223333",
                             "arn": f"arn:aws:sts::111122223333:assumed-role/app/{principal}"}}


def alert_for(rule, rec, threshold=None):
    a = {"alert_id": A.alert_id("rule", rule.id, rec["eventID"]), "kind": "rule_match",
         "rule": rule.doc, "event": rec}
    if threshold is not None:
        a["threshold"] = {"count": threshold, "limit": rule.threshold, "principal": "p"}
    return a


@pytest.fixture
def table():
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expires_at"})
        yield ddb


def stores(table):
    """The same behaviour is required of moto's DynamoDB and of the strict fake."""
    return [DynamoStore(TABLE, table, sleep=lambda s: None),
            DynamoStore(TABLE, StrictDynamo(TABLE), sleep=lambda s: None)]


# ------------------------------------------------------------------------------------- dedup

def test_dedup_one_alert_per_key_per_window_across_invocations_then_a_count(table):
    (rule,) = rules(window_minutes=60)
    for store in stores(table):
        w = Windows([rule], store, clock=lambda: T0)
        first = w.apply([alert_for(rule, record(0)), alert_for(rule, record(1, seconds=60))])
        assert [a["event"]["eventID"] for a in first] == ["ev-alice-0"]
        assert first[0]["window"] == {"minutes": 60, "key": "arn:aws:sts::111122223333:"
                                      "assumed-role/app/alice", "start": "2025-11-20T10:00:00Z",
                                      "end": "2025-11-20T11:00:00Z", "matches": 2}
        # a later invocation, same principal, same hour: counted, not alerted
        assert w.apply([alert_for(rule, record(2, seconds=1800))]) == []
        assert w.stats["deduplicated"] == 1
        # another principal has its own window
        assert len(w.apply([alert_for(rule, record(3, "bob", seconds=1800))])) == 1
        # the next hour alerts again, with the count of the hour before
        (nxt,) = w.apply([alert_for(rule, record(4, seconds=3600 + 5))])
        assert nxt["window"]["previous_window_matches"] == 3
        assert nxt["window"]["start"] == "2025-11-20T11:00:00Z"


def test_a_retried_invocation_raises_its_alert_again(table):
    """Delivery failed and Lambda retries: the window is held by this alert's id, so the retry
    alerts again (a duplicate beats a loss; alert ids let sinks drop the duplicate)."""
    (rule,) = rules(window_minutes=60)
    for store in stores(table):
        w = Windows([rule], store, clock=lambda: T0)
        batch = [alert_for(rule, record(0)), alert_for(rule, record(1))]
        assert len(w.apply(batch)) == 1
        again = w.apply(batch)
        assert [a["alert_id"] for a in again] == [batch[0]["alert_id"]]


def test_window_group_and_dedup_key_from_record_fields(table):
    a, b = (parse_rules({"rules": [{"id": i, "pattern": '{ $.eventName = "GetSecretValue" }',
                                    "window_minutes": 1440, "dedup_key": "recipientAccountId",
                                    "window_group": "digest"}]})[0] for i in ("a", "b"))
    w = Windows([a, b], DynamoStore(TABLE, table, sleep=lambda s: None), clock=lambda: T0)
    out = w.apply([alert_for(a, record(0)), alert_for(b, record(1, "bob"))])
    assert len(out) == 1 and out[0]["window"]["group"] == "digest"
    assert out[0]["window"]["key"] == "111122223333"
    assert w.apply([alert_for(b, record(2, "carol", seconds=3600))]) == []


# ------------------------------------------------------------------------------- thresholds

def test_threshold_counts_across_invocations(table):
    """CloudWatch Logs split one principal's 12 reads into 3 invocations of 4: the per-batch
    rule never fired (issue 20); with a window it fires once, at the 10th."""
    (rule,) = rules(threshold=10, window_minutes=10)
    for store in stores(table):
        w = Windows([rule], store, clock=lambda: T0)
        outs = [w.apply([alert_for(rule, record(i * 4), threshold=4)]) for i in range(3)]
        assert [len(o) for o in outs] == [0, 0, 1]
        assert outs[2][0]["threshold"]["count"] == 12 and outs[2][0]["threshold"]["limit"] == 10
        assert w.apply([alert_for(rule, record(20, seconds=30), threshold=5)]) == []  # once


def test_threshold_burst_across_a_window_boundary_is_not_missed(table):
    (rule,) = rules(threshold=10, window_minutes=10)
    w = Windows([rule], DynamoStore(TABLE, table, sleep=lambda s: None), clock=lambda: T0)
    assert w.apply([alert_for(rule, record(0, seconds=590), threshold=6)]) == []
    (hit,) = w.apply([alert_for(rule, record(6, seconds=605), threshold=6)])
    assert hit["threshold"]["count"] == 12


def test_without_a_table_windows_hold_within_one_invocation_only():
    (rule,) = rules(window_minutes=60)
    w = Windows([rule], MemoryStore(per_invocation=True), clock=lambda: T0)
    assert len(w.apply([alert_for(rule, record(0)), alert_for(rule, record(1))])) == 1
    assert len(w.apply([alert_for(rule, record(2))])) == 1        # a new invocation forgets


# ------------------------------------------------------------------------- failures of the table

def test_throttling_is_retried_a_bounded_number_of_times(table):
    calls = []

    def throttle_twice(op, request):
        calls.append(op)
        if len(calls) <= 2:
            return ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, op)
        return None

    (rule,) = rules(window_minutes=60)
    sleeps = []
    store = DynamoStore(TABLE, StrictDynamo(TABLE, fail=throttle_twice), sleep=sleeps.append)
    w = Windows([rule], store, clock=lambda: T0)
    assert len(w.apply([alert_for(rule, record(0))])) == 1 and w.stats["state_errors"] == 0
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1] < 1


@pytest.mark.parametrize("error", [
    EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
                "UpdateItem"),
    ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "UpdateItem"),
    ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "gone"}},
                "UpdateItem"),
])
def test_an_unusable_table_never_suppresses_an_alert(error):
    fake = StrictDynamo(TABLE, fail=lambda op, req: error)
    log = ListLogger()
    (dedup,) = rules(window_minutes=60)
    (burst,) = parse_rules({"rules": [{"id": "t", "pattern": '{ $.eventName = "X" }',
                                       "threshold": 3, "window_minutes": 10}]})
    w = Windows([dedup, burst], DynamoStore(TABLE, fake, sleep=lambda s: None, log=log), log=log,
                clock=lambda: T0)
    batch = [alert_for(dedup, record(i)) for i in range(3)] + \
        [alert_for(burst, record(9), threshold=3), alert_for(burst, dict(record(8, "bob"), userIdentity={
            "type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/bob"}), threshold=1)]
    out = w.apply(batch)
    # every dedup match passes (a duplicate beats a loss); the threshold falls back to the
    # invocation's own count, as without a table
    assert [a["alert_id"] for a in out] == [a["alert_id"] for a in batch[:4]]
    assert w.stats["state_errors"] >= 1
    assert any("alert state table unavailable" in m for _, m, _ in log.records)
    # the breaker: one failing call (with its bounded retries), not one per group
    assert fake.calls <= MAX_ATTEMPTS


def test_strict_fake_ttl_and_key_rules_hold(table):
    fake = StrictDynamo(TABLE)
    (rule,) = rules(window_minutes=60)
    Windows([rule], DynamoStore(TABLE, fake, sleep=lambda s: None), clock=lambda: T0).apply(
        [alert_for(rule, record(0))])
    assert fake.violations == []
    (item,) = fake.items.values()
    assert int(item["expires_at"]["N"]) > T0 + 3600          # kept past the next window
    bucket = int(T0 // 3600)                                  # one item per rule and key
    assert set(item) == {"pk", f"c_{bucket}", f"o_{bucket}", "expires_at"}


# ------------------------------------------------------------------------------ the processor

def payload(records, stamp_ms):
    env = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "CloudTrail/org",
           "logStream": "111122223333_CloudTrail_us-east-1", "subscriptionFilters": ["f"],
           "logEvents": [{"id": f"le-{r['eventID']}", "timestamp": stamp_ms,
                          "message": json.dumps(r)} for r in records]}
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()}}


def app(env, tmp_path, log=None):
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"rules": [
        {"id": "reads", "pattern": '{ $.eventName = "GetSecretValue" }', "threshold": 5,
         "window_minutes": 10},
        {"id": "once", "pattern": '{ $.eventName = "GetSecretValue" }', "window_minutes": 60}]}))
    a = App.from_env({"RULES_FILE": str(rules_file), **env}, clock=lambda: T0 + 120,
                     sleep=lambda s: None, metrics_sink=ListMetrics(), log=log or ListLogger(),
                     emit=lambda line: None, client_factory=lambda s: boto3.client(
                         s, region_name="us-east-1"))
    a.sinks = [Collect()]
    return a


def test_processor_keeps_windows_across_invocations_on_the_table(table, tmp_path):
    env = {ENV_TABLE: TABLE}
    got = []
    for i in range(3):                          # three containers, three small batches
        a = app(env, tmp_path)
        out = a.handle(payload([record(i * 2 + k, seconds=i * 60) for k in range(2)],
                               int((T0 + 100) * 1000)))
        got.append(sorted(x["rule"]["id"] for x in a.sinks[0].alerts))
        assert out["state_errors"] == 0
    # "once": the first invocation only; "reads" (5 in 10 minutes): the third (6 reads)
    assert got == [["once"], [], ["reads"]]
    # the two "once" matches, and the built-in bulk-read rule still below its 10
    assert a.metrics.total("AlertsWindowed") == 3


def test_processor_without_a_table_says_so_and_works_per_invocation(tmp_path):
    log = ListLogger()
    a = app({}, tmp_path, log)
    assert any(level == "warning" and "ALERT_STATE_TABLE_NAME is not set" in msg
               for level, msg, _ in log.records)
    for i in range(2):
        a.handle(payload([record(i * 6 + k) for k in range(6)], int((T0 + 100) * 1000)))
    ids = [x["rule"]["id"] for x in a.sinks[0].alerts]
    # as before this issue: every match alerts, thresholds count per invocation
    assert ids.count("once") == 12 and ids.count("reads") == 2


def cis_app(batch, clock=T0 + 90_000):
    a = App.from_env({ENV_TABLE: TABLE}, clock=lambda: clock, sleep=lambda s: None,
                     metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None,
                     client_factory=lambda s: boto3.client(s, region_name="us-east-1"))
    a.sinks = [Collect()]
    a.handle(payload(batch, int(clock * 1000)))
    return a.sinks[0].alerts


def test_cis_matches_are_one_signal_per_control_and_principal_and_day(table):
    """Issue 20: CIS controls ran as alerting rules (88 % of the alerts on ordinary traffic).
    Their matches open one signal per control, principal and UTC day, then count (review F2: a
    window shared by every control of an account let anyone silence them all); the metric
    filters are untouched (test_tuning)."""
    def rec(n, name, minutes, **over):
        return {**record(n, seconds=minutes * 60), "eventName": name,
                "eventSource": "ec2.amazonaws.com", **over}
    day = [rec(0, "AuthorizeSecurityGroupIngress", 0), rec(1, "DeleteSecurityGroup", 5),
           rec(2, "CreateTrail", 30, eventSource="cloudtrail.amazonaws.com")]
    root = rec(3, "RunInstances", 40, eventType="AwsApiCall",
               userIdentity={"type": "Root", "accountId": "111122223333",
                             "arn": "arn:aws:iam::111122223333:root"})
    got = []
    for batch in (day, [root, rec(4, "CreateRoute", 50), rec(6, "CreateSecurityGroup", 55)],
                  [rec(7, "AuthorizeSecurityGroupEgress", 60, userIdentity=dict(
                      record(0)["userIdentity"], arn="arn:aws:iam::111122223333:user/bob"))],
                  [rec(5, "CreateVpc", 24 * 60 + 1)]):
        got.append(sorted((x["rule"]["id"], x["window"]["key"], x["window"]["matches"])
                          for x in cis_app(batch) if x["rule"].get("cis")))
    alice = "arn:aws:sts::111122223333:assumed-role/app/alice"
    bob = "arn:aws:iam::111122223333:user/bob"
    assert got == [[("cis-4.10", alice, 2), ("cis-4.5", alice, 1)],
                   [("cis-4.13", alice, 1), ("cis-4.3", "arn:aws:iam::111122223333:root", 1)],
                   [("cis-4.10", bob, 1)],            # another principal: its own window
                   [("cis-4.14", alice, 1)]]


def test_an_outsider_cannot_silence_cis_alerts(table):
    """Review F2 (exp4): a failed console sign-in (no credentials needed) opened the account's
    shared CIS window for 24 h and every later CIS alert of the day was dropped."""
    def rec(n, name, src, params, **over):
        return {**record(n, seconds=60), "eventName": name, "eventSource": src,
                "requestParameters": params, **over}
    outsider = rec(1, "ConsoleLogin", "signin.amazonaws.com", {},
                   userIdentity={"type": "IAMUser", "accountId": "111122223333",
                                 "principalId": "", "userName": "HIDDEN_DUE_TO_SECURITY_REASONS"},
                   responseElements={"ConsoleLogin": "Failure"},
                   errorMessage="Failed authentication", additionalEventData={"MFAUsed": "No"})
    denied = rec(9, "ListBuckets", "s3.amazonaws.com", {}, errorCode="AccessDenied",
                 userIdentity={"type": "AWSAccount", "accountId": "444455556666",
                               "principalId": "AIDAOUTSIDER"})
    later = [rec(2, "ScheduleKeyDeletion", "kms.amazonaws.com", {"keyId": "k"}),
             rec(3, "PutBucketPolicy", "s3.amazonaws.com", {"bucketName": "b"}),
             rec(4, "CreateNetworkAclEntry", "ec2.amazonaws.com", {"networkAclId": "acl-1"})]
    first = {x["rule"]["id"] for x in cis_app([outsider, denied], clock=T0 + 120)}
    assert "cis-4.6" in first
    got = {x["rule"]["id"] for x in cis_app(later, clock=T0 + 120) if x["rule"].get("cis")}
    assert {"cis-4.7", "cis-4.8", "cis-4.11"} <= got


def test_console_sign_ins_without_mfa_are_windowed_per_user(table):
    """Review F2: tw-console-login-without-mfa was one window per account: a user signing in
    without MFA every morning hid another user's (e.g. a stolen password's) sign-in."""
    def login(n, user):
        return {**record(n, seconds=60), "eventName": "ConsoleLogin",
                "eventSource": "signin.amazonaws.com", "responseElements": {"ConsoleLogin": "Success"},
                "additionalEventData": {"MFAUsed": "No"},
                "userIdentity": {"type": "IAMUser", "accountId": "111122223333",
                                 "arn": f"arn:aws:iam::111122223333:user/{user}"}}
    # CIS 4.2 and the pack rule report the same behaviour: one window per user for both, so a
    # sign-in is one alert (not two), and one user's sign-ins never hide another's.
    rules = {"tw-console-login-without-mfa", "cis-4.2"}
    first = [x for x in cis_app([login(1, "ann")], clock=T0 + 120) if x["rule"]["id"] in rules]
    assert [x["window"]["key"] for x in first] == ["arn:aws:iam::111122223333:user/ann"]
    assert first[0]["window"]["group"] == "console-login-without-mfa"
    assert [x["window"]["key"] for x in cis_app([login(2, "ann"), login(3, "eve")], clock=T0 + 120)
            if x["rule"]["id"] in rules] == ["arn:aws:iam::111122223333:user/eve"]


def test_keys_from_hostile_records_are_bounded_and_never_rendered():
    """Found by tests/handlers/test_fuzz_processor.py: a dedup_key field holding a deeply nested
    object made the key str() it (RecursionError, the invocation failed)."""
    from handlers.detection.thresholds import MAX_KEY_CHARS, key_of
    (rule,) = rules(window_minutes=60, dedup_key=["requestParameters.x", "principal"])
    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    rec = record(0, principal="\ud800" + "p" * 5000)
    rec["requestParameters"] = {"x": deep}
    key = key_of(rule, rec)
    assert key.startswith("<list>|") and len(key) <= MAX_KEY_CHARS
    assert len(key.encode("utf-8")) <= 4 * MAX_KEY_CHARS  # no lone surrogate left
    fake = StrictDynamo(TABLE)                            # DynamoDB's 2,048-byte key limit
    Windows([rule], DynamoStore(TABLE, fake), clock=lambda: T0).apply(
        [alert_for(rule, dict(rec, requestParameters={"x": "\U0001f600" * 5000}))])
    assert fake.violations == [] and len(fake.items) == 1
    out = Windows([rule], MemoryStore(), clock=lambda: T0).apply([alert_for(rule, rec)])
    assert len(out) == 1


def test_the_state_client_is_made_on_first_use_not_at_cold_start(table):
    made = []

    def factory(service):
        made.append(service)
        return boto3.client(service, region_name="us-east-1")

    a = App.from_env({ENV_TABLE: TABLE}, clock=lambda: T0, sleep=lambda s: None,
                     metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None,
                     client_factory=factory)
    a.sinks = [Collect()]
    assert "dynamodb" not in made
    a.handle(payload([dict(record(0), eventName="ListBuckets")], int(T0 * 1000)))
    assert "dynamodb" not in made                       # nothing matched: no table call
    a.handle(payload([dict(record(1), eventName="CreateUser",
                           eventSource="iam.amazonaws.com")], int(T0 * 1000)))
    assert made.count("dynamodb") == 1 and len(a.sinks[0].alerts) == 1


def test_windowed_alerts_follow_the_alert_schema(table, tmp_path):
    from tests.handlers.test_alert_contract import VALIDATOR
    a = app({ENV_TABLE: TABLE}, tmp_path)
    a.handle(payload([record(i, seconds=i) for i in range(6)] +
                     [dict(record(9, "bob"), eventName="CreateUser",
                           eventSource="iam.amazonaws.com")], int((T0 + 100) * 1000)))
    got = a.sinks[0].alerts
    assert {x["rule"]["id"] for x in got} == {"once", "reads", "tw-iam-user-created"}
    assert all("window" in x for x in got)
    for alert in got:
        VALIDATOR.validate(json.loads(json.dumps(alert)))


def test_a_slow_table_stops_being_waited_on_within_the_invocation():
    """Each call takes 2 s (a table in trouble, still answering): after the 3-second budget the
    rest of the invocation does not call it, and those alerts pass."""
    now = [0.0]

    def slow(op, request):
        now[0] += 2.0

    fake = StrictDynamo(TABLE, fail=slow)
    (rule,) = rules(window_minutes=60)
    store = DynamoStore(TABLE, fake, sleep=lambda s: None, monotonic=lambda: now[0])
    w = Windows([rule], store, clock=lambda: T0)
    batch = [alert_for(rule, record(i, f"user{i}")) for i in range(10)]   # 10 keys
    out = w.apply(batch)
    assert len(out) == 10 and w.stats["state_errors"] >= 1
    assert fake.calls == 2                                  # not 10 calls of 2 s each
    store.begin()                                           # the next invocation tries again
    assert len(w.apply([alert_for(rule, record(0, "user0"))])) in (0, 1) and fake.calls == 3


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+23:59",
                                  "2099-01-01T00:00:00Z", "1970-01-01T00:00:00Z"])
def test_an_implausible_event_time_is_windowed_at_now_and_loses_no_alert(table, tmp_path, when):
    """Review F1: eventTime in year 9999 (or year 0 after its offset) made _iso raise
    ValueError: the whole payload's alerts were lost and Lambda retried it forever."""
    a = app({ENV_TABLE: TABLE}, tmp_path)
    bad = record(2)
    bad["eventTime"] = when
    out = a.handle(payload([record(1, principal="bob"), bad], int((T0 + 100) * 1000)))
    once = [x for x in a.sinks[0].alerts if x["rule"]["id"] == "once"]
    assert len(once) == 2 and out["state_errors"] == 0
    (forged,) = [x for x in once if x["event"]["eventTime"] == when]
    assert forged["window"]["start"] == "2025-11-20T10:00:00Z"      # the processor's clock


def test_an_unexpected_error_in_a_window_passes_the_group_and_is_counted():
    class Broken(MemoryStore):
        def update(self, *a, **kw):
            raise KeyError("bug")

    (rule,) = rules(window_minutes=60)
    log = ListLogger()
    w = Windows([rule], Broken(), log=log, clock=lambda: T0)
    batch = [alert_for(rule, record(i)) for i in range(3)]
    assert w.apply(batch) == batch and w.stats["state_errors"] == 1
    assert any("alert window failed (KeyError)" in m for _, m, _ in log.records)


def test_a_hung_state_table_costs_about_a_second_not_botocores_retries(monkeypatch):
    """Review F5 (exp2): the default client's retries and 5 s reads made a table that accepts
    connections and never answers cost 10 s+ against the 3 s budget."""
    import socket
    import threading
    import time

    from handlers.alert_state import StateError, store_from_env
    from handlers.clients import default_client_factory

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(50)],
                     daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{srv.getsockname()[1]}")
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    store = store_from_env({ENV_TABLE: "t"}, default_client_factory)
    assert store.client is not None                  # made outside the timed call
    store.begin()
    started = time.monotonic()
    with pytest.raises(StateError, match="Read timeout"):
        store.update("pk", Change(adds={1: 1}, opens={1: "a1"}, expires=0))
    took = time.monotonic() - started
    srv.close()
    assert took < 2.5 and len(held) == 1           # one attempt of a 1 s read


def test_no_throttling_retry_once_the_budget_is_spent():
    """Review F5: a retry (and its backoff) is not started when it would end past the budget."""
    now = [0.0]

    def throttle_slowly(op, request):
        now[0] += 1.45
        return ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, op)

    fake = StrictDynamo(TABLE, fail=throttle_slowly)
    sleeps = []
    store = DynamoStore(TABLE, fake, sleep=sleeps.append, monotonic=lambda: now[0])
    (rule,) = rules(window_minutes=60)
    w = Windows([rule], store, clock=lambda: T0)
    assert len(w.apply([alert_for(rule, record(0))])) == 1 and w.stats["state_errors"] == 1
    # 1.45 s, a 0.05 s backoff, 1.45 s: 2.95 s spent, the next backoff (0.1 s) would pass 3 s
    assert fake.calls == 2 and sleeps == [0.05]


def test_threshold_burst_across_a_window_boundary_delivered_late_half_first(table):
    """Review F3 (exp8): the burst's later half (next window) delivered first, then its earlier
    half: the earlier window only looked back, and the burst never alerted."""
    (rule,) = rules(threshold=10, window_minutes=10)
    for store in stores(table):
        w = Windows([rule], store, clock=lambda: T0)
        p = f"p{id(store)}"
        assert w.apply([alert_for(rule, record(6, p, seconds=605), threshold=6)]) == []
        (hit,) = w.apply([alert_for(rule, record(0, p, seconds=590), threshold=6)])
        assert hit["threshold"]["count"] == 12
        assert hit["window"]["start"] == "2025-11-20T10:10:00Z"   # claimed in the later window
        # the rest of the burst, in either window: the crossing alerted once
        assert w.apply([alert_for(rule, record(20, p, seconds=606))]) == []
        assert w.apply([alert_for(rule, record(21, p, seconds=591))]) == []


def test_a_threshold_counts_an_assumed_roles_sessions_together(table, tmp_path):
    """Review F4 (exp5): thresholds keyed by userIdentity.arn were evaded with a fresh
    RoleSessionName per call. Thresholds count per role; other rules keep the session."""
    from handlers.detection.thresholds import key_of, role_principal_of
    a = app({ENV_TABLE: TABLE}, tmp_path)
    a.handle(payload([record(i, principal=f"s{i}", seconds=i) for i in range(8)],
                     int((T0 + 100) * 1000)))
    (reads,) = [x for x in a.sinks[0].alerts if x["rule"]["id"] == "reads"]
    assert reads["threshold"]["count"] == 8
    assert reads["threshold"]["principal"] == "arn:aws:iam::111122223333:role/app"
    # the dedup rule's windows (and its alerts' contents) still name the session
    once = [x for x in a.sinks[0].alerts if x["rule"]["id"] == "once"]
    assert sorted(x["window"]["key"] for x in once) == [
        f"arn:aws:sts::111122223333:assumed-role/app/s{i}" for i in range(8)]
    # sessionContext.sessionIssuer (the role, with its path) when the record has it
    rec = record(0, principal="x")
    rec["userIdentity"]["sessionContext"] = {"sessionIssuer": {
        "type": "Role", "arn": "arn:aws:iam::111122223333:role/svc/app"}}
    (burst,) = rules(threshold=5, window_minutes=10)
    (dedup,) = rules(window_minutes=60)
    assert role_principal_of(rec) == key_of(burst, rec) == "arn:aws:iam::111122223333:role/svc/app"
    assert key_of(dedup, rec) == "arn:aws:sts::111122223333:assumed-role/app/x"
    user = dict(record(0), userIdentity={"type": "IAMUser", "arn": "arn:aws:iam::1:user/u"})
    assert key_of(burst, user) == "arn:aws:iam::1:user/u"


# ----------------------------------------------------------------------- calls per invocation

class CountingClient:
    """A DynamoDB client (moto's or the strict fake) whose calls are counted per (rule or
    window group, key): the first two fields of the item key, whatever its layout."""

    def __init__(self, client):
        self.client, self.calls = client, {}

    def __getattr__(self, op):
        def call(**kw):
            pair = tuple(kw["Key"]["pk"]["S"].split("|")[:2])
            self.calls[pair] = self.calls.get(pair, 0) + 1
            return getattr(self.client, op)(**kw)
        return call


def test_at_most_one_table_call_per_rule_and_key_per_invocation(table):
    """The processor-speed target: one state-table call per (rule, key) per invocation, also
    when the invocation's matches of one key fall in two windows (a batch across a boundary),
    for dedup and threshold rules alike; none for a rule without a window."""
    (dedup,) = rules(window_minutes=10)
    (burst,) = parse_rules({"rules": [{"id": "t", "pattern": '{ $.eventName = "X" }',
                                       "threshold": 3, "window_minutes": 10}]})
    (plain,) = parse_rules({"rules": [{"id": "p", "pattern": '{ $.eventName = "Y" }'}]})
    for client in (table, StrictDynamo(TABLE)):
        counted = CountingClient(client)
        w = Windows([dedup, burst, plain], DynamoStore(TABLE, counted, sleep=lambda s: None),
                    clock=lambda: T0 + 1200)
        p = f"p{id(client)}"
        batch = [alert_for(dedup, record(0, p, seconds=590)),         # window 10:00
                 alert_for(dedup, record(1, p, seconds=600)),         # window 10:10
                 alert_for(dedup, record(2, p, seconds=605)),
                 alert_for(dedup, record(3, "bob", seconds=601)),
                 alert_for(burst, record(4, p, seconds=595), threshold=2),
                 alert_for(burst, record(5, p, seconds=610), threshold=2),
                 alert_for(plain, record(6, p))]
        out = w.apply(batch)
        assert w.stats["state_errors"] == 0
        calls = dict(counted.calls)
        assert max(calls.values()) == 1, calls
        assert set(calls) == {("r", f"arn:aws:sts::111122223333:assumed-role/app/{p}"),
                                      ("r", "arn:aws:sts::111122223333:assumed-role/app/bob"),
                                      ("t", "arn:aws:iam::111122223333:role/app")}
        # behaviour: one dedup alert per window and key; the burst (2 + 2 across the
        # boundary, 3 in any 10 minutes) alerts once, in the later window
        got = [(a["rule"]["id"], a["event"]["eventID"], a["window"]["start"][11:16])
               for a in out if "window" in a]
        assert got == [("r", f"ev-{p}-0", "10:00"), ("r", f"ev-{p}-1", "10:10"),
                       ("r", "ev-bob-3", "10:10"), ("t", f"ev-{p}-5", "10:10")]
        (prev,) = [a for a in out if a["event"]["eventID"] == f"ev-{p}-1"]
        assert prev["window"]["matches"] == 2 and prev["window"]["previous_window_matches"] == 1
        (hit,) = [a for a in out if a["rule"]["id"] == "t"]
        assert hit["threshold"]["count"] == 4
        assert [a["rule"]["id"] for a in out].count("p") == 1


# ------------------------------------------- the DynamoDB rules the one-call update relies on

UPDATE_RULES = {
    # Developer Guide "Using update expressions": no attribute the target of two actions
    "overlapping paths": dict(UpdateExpression="SET #a = :v ADD #a :v",
                              ExpressionAttributeNames={"#a": "x"},
                              ExpressionAttributeValues={":v": {"N": "1"}}),
    "one path by two names": dict(UpdateExpression="SET #a = :v, #b = :v",
                                  ExpressionAttributeNames={"#a": "x", "#b": "x"},
                                  ExpressionAttributeValues={":v": {"N": "1"}}),
    # "each action keyword can appear only once"
    "a clause twice": dict(UpdateExpression="SET #a = :v SET #b = :v",
                           ExpressionAttributeNames={"#a": "x", "#b": "y"},
                           ExpressionAttributeValues={":v": {"N": "1"}}),
    # every expression attribute name and value defined must be used, and the reverse
    "an unused name": dict(UpdateExpression="SET #a = :v",
                           ExpressionAttributeNames={"#a": "x", "#b": "y"},
                           ExpressionAttributeValues={":v": {"N": "1"}}),
    "an unused value": dict(UpdateExpression="SET #a = :v", ExpressionAttributeNames={"#a": "x"},
                            ExpressionAttributeValues={":v": {"N": "1"}, ":w": {"N": "2"}}),
    "an undefined value": dict(UpdateExpression="SET #a = :v, #b = :w",
                               ExpressionAttributeNames={"#a": "x", "#b": "y"},
                               ExpressionAttributeValues={":v": {"N": "1"}}),
    # API Reference UpdateItem: NONE, ALL_OLD, UPDATED_OLD, ALL_NEW, UPDATED_NEW only
    "an unknown ReturnValues": dict(UpdateExpression="SET #a = :v",
                                    ExpressionAttributeNames={"#a": "x"},
                                    ExpressionAttributeValues={":v": {"N": "1"}},
                                    ReturnValues="ALL"),
    # 400 KB items ("DynamoDB item sizes and formats")
    "an item over 400 KB": dict(UpdateExpression="SET #a = :v", ExpressionAttributeNames={"#a": "x"},
                                ExpressionAttributeValues={":v": {"S": "x" * 410_000}}),
}


@pytest.mark.parametrize("case", sorted(UPDATE_RULES))
def test_dynamodb_refuses_what_the_strict_fake_refuses(table, case):
    """moto (5.2) and the strict fake both refuse each of these as DynamoDB documents it; the
    state store must never send one (fake.violations stays empty in the tests above)."""
    fake = StrictDynamo(TABLE)
    for client in (table, fake):
        with pytest.raises(ClientError) as err:
            client.update_item(TableName=TABLE, Key={"pk": {"S": "k"}}, **UPDATE_RULES[case])
        assert err.value.response["Error"]["Code"] == "ValidationException"
        # nothing written (moto leaves an empty item after the oversized one; DynamoDB and the
        # fake write nothing on a ValidationException)
        item = client.get_item(TableName=TABLE, Key={"pk": {"S": "k"}}).get("Item") or {}
        assert set(item) <= {"pk"}
    assert len(fake.violations) == 1 and fake.items == {}


def test_the_one_call_semantics_on_moto_and_the_strict_fake(table):
    """ADD on a missing attribute starts from 0 (numbers) or creates the set; if_not_exists
    keeps the first owner; every action reads the item before the update (a neighbour's count
    read while the same call adds to it); ALL_OLD returns no Attributes for a new item, then
    the item as it was; REMOVE of a missing attribute is no error."""
    fake = StrictDynamo(TABLE)
    for client in (table, fake):
        def update(owner, n, ret="ALL_OLD"):
            return client.update_item(
                TableName=TABLE, Key={"pk": {"S": "k"}},
                UpdateExpression="SET #o = if_not_exists(#o, :o), #s = if_not_exists(#c, :z) + :n "
                                 "ADD #c :n, #t :t REMOVE #gone",
                ExpressionAttributeNames={"#o": "o_1", "#s": "b_2", "#c": "c_1", "#t": "t_1",
                                          "#gone": "c_0"},
                ExpressionAttributeValues={":o": {"S": owner}, ":n": {"N": str(n)},
                                           ":z": {"N": "0"}, ":t": {"SS": [owner]}},
                ReturnValues=ret)
        assert "Attributes" not in update("a", 2)
        old = update("b", 3)["Attributes"]
        assert old["c_1"] == {"N": "2"} and old["o_1"] == {"S": "a"} and old["b_2"] == {"N": "2"}
        new = update("a", 1, "ALL_NEW")["Attributes"]
        assert new["c_1"] == {"N": "6"} and new["o_1"] == {"S": "a"}
        assert new["b_2"] == {"N": "6"}                      # 5 before this call, + 1
        assert sorted(new["t_1"]["SS"]) == ["a", "b"]
        assert update("c", 1, "UPDATED_NEW")["Attributes"]["c_1"] == {"N": "7"}
    assert fake.violations == []


# ------------------------------------------------------------- one item per (rule, key): more

def test_a_retried_threshold_crossing_alerts_again(table):
    """The invocation that crossed the threshold failed to deliver and Lambda retries it: its
    tag is on the bucket, so the retry raises the crossing again (a duplicate beats a loss);
    another invocation after the crossing does not. Its matches span two windows (the retry
    adds them again, as the per-bucket calls did: 10:00 now has 6 of its own and alerts too)."""
    (rule,) = rules(threshold=5, window_minutes=10)
    for store in stores(table):
        w = Windows([rule], store, clock=lambda: T0 + 900)
        p = f"p{id(store)}"
        assert w.apply([alert_for(rule, record(0, p, seconds=500), threshold=2)]) == []
        crossing = [alert_for(rule, record(1, p, seconds=590), threshold=2),
                    alert_for(rule, record(2, p, seconds=610), threshold=2)]
        (hit,) = w.apply(crossing)
        assert hit["threshold"]["count"] == 6 and hit["window"]["start"] == "2025-11-20T10:10:00Z"
        again = w.apply(crossing)                                  # the retry
        assert [(a["alert_id"], a["window"]["start"][11:16]) for a in again] == [
            (crossing[0]["alert_id"], "10:00"), (hit["alert_id"], "10:10")]
        assert w.apply([alert_for(rule, record(3, p, seconds=620))]) == []   # someone else


def test_a_window_over_the_threshold_on_its_own_alerts_after_an_earlier_window_did(table):
    """Out of order: 2 matches in 10:30, then 4 in 10:20 (that window alerts; 10:30's pair
    reaches 6 through 10:20's matches, which do not look ahead once their own pair is over),
    then 3 more in 10:30: 10:30 has 5 of its own and alerts, as the per-bucket claims did."""
    (rule,) = rules(threshold=4, window_minutes=10)
    for store in [*stores(table), MemoryStore()]:
        w = Windows([rule], store, clock=lambda: T0 + 2400)
        p = f"p{id(store)}"
        assert w.apply([alert_for(rule, record(0, p, seconds=1980), threshold=2)]) == []
        (first,) = w.apply([alert_for(rule, record(1, p, seconds=1400), threshold=4)])
        assert first["window"]["start"] == "2025-11-20T10:20:00Z"
        (later,) = w.apply([alert_for(rule, record(2, p, seconds=2100), threshold=3)])
        assert later["window"]["start"] == "2025-11-20T10:30:00Z"
        assert later["threshold"]["count"] == 5


def test_buckets_past_their_ttl_leave_the_item(table):
    """A key seen every hour for two days: its item keeps the buckets the windows can still
    read (and whose TTL has not passed), not one per hour (DynamoDB bills a write by the item's
    size, and an item is at most 400 KB)."""
    (rule,) = rules(window_minutes=60)
    fake = StrictDynamo(TABLE)
    for client in (table, fake):
        now = [T0]
        w = Windows([rule], DynamoStore(TABLE, client, sleep=lambda s: None),
                    clock=lambda: now[0])
        for hour in range(48):
            now[0] = T0 + hour * 3600 + 60
            out = w.apply([alert_for(rule, record(hour, seconds=hour * 3600 + 30))])
            assert len(out) == 1 and w.stats["state_errors"] == 0
            if hour:
                assert out[0]["window"]["previous_window_matches"] == 1
        item = client.get_item(TableName=TABLE, Key={"pk": {"S": next(iter(fake.items or {
            "r|arn:aws:sts::111122223333:assumed-role/app/alice|3600": 0}))}})["Item"]
        buckets = {int(a.split("_")[1]) for a in item if a[:2] in ("c_", "o_")}
        last = int((T0 + 47 * 3600) // 3600)
        assert buckets <= set(range(last - 4, last + 1)) and last in buckets
        assert int(item["expires_at"]["N"]) >= (last + 2) * 3600 + 3600
    assert fake.violations == []


def test_a_payload_spanning_many_windows_takes_a_call_per_24_buckets(table):
    (rule,) = rules(window_minutes=1)
    batch = [alert_for(rule, record(i, seconds=i * 60 + 1)) for i in range(30)]  # 30 windows
    fake = StrictDynamo(TABLE)
    for store in (DynamoStore(TABLE, fake, sleep=lambda s: None), MemoryStore()):
        w = Windows([rule], store, clock=lambda: T0 + 1900)
        out = w.apply(batch)
        assert len(out) == 30 and [a["window"].get("previous_window_matches") for a in
                                   out] == [None] + [1] * 29
    assert fake.calls == 2 and fake.violations == []


def test_the_stores_agree_on_random_deliveries(table):
    """Random invocations of dedup and threshold matches of two principals over 40 minutes, in
    order or shuffled, some retried: moto's DynamoDB, the strict fake and the backtest's
    MemoryStore raise the same alerts with the same blocks."""
    import random
    for seed in range(40):
        rng = random.Random(seed)
        limit = rng.randint(2, 6)
        rs = parse_rules({"rules": [
            {"id": f"d{seed}", "pattern": '{ $.eventName = "A" }', "window_minutes": 10},
            {"id": f"t{seed}", "pattern": '{ $.eventName = "B" }', "threshold": limit,
             "window_minutes": 10, "window_group": f"g{seed}"}]})
        matches = []
        for i in range(rng.randint(1, 25)):
            rule = rng.choice(rs)
            sec = rng.uniform(0, 2400)
            matches.append((sec, alert_for(rule, record(i, rng.choice(["ann", f"b{seed}"]),
                                                        seconds=sec),
                                           threshold=rng.randint(1, 3) if rule.threshold
                                           else None)))
        if seed % 2:
            rng.shuffle(matches)
        else:
            matches.sort(key=lambda m: m[0])
        invocations, current = [], []
        for _, a in matches:
            current.append(a)
            if rng.random() < 0.3:
                invocations.append(current)
                current = []
        invocations.append(current)
        if rng.random() < 0.3:
            k = rng.randrange(len(invocations))
            invocations.insert(k, list(invocations[k]))
        results = []
        fake = StrictDynamo(TABLE)
        for store in (MemoryStore(), DynamoStore(TABLE, fake, sleep=lambda s: None),
                      DynamoStore(TABLE, table, sleep=lambda s: None)):
            w = Windows(rs, store, clock=lambda: T0 + 2500)
            results.append([[(a["alert_id"], a.get("window"), a.get("threshold"))
                             for a in w.apply(list(inv))] for inv in invocations])
        assert results[0] == results[1] == results[2], seed
        assert fake.violations == []


# ------------------------------------------------------------------ item size (a busy key)

def test_an_item_the_table_refuses_costs_only_its_own_key_its_window():
    """A threshold item past 400 KB (StrictDynamo refuses it, ValidationException) must not
    switch off the dedup windows of the invocation's other keys (found by review: one refused
    item tripped the breaker and every later key's matches went out as duplicates)."""
    from handlers.alert_state import _tag
    (thr,) = rules(threshold=5, window_minutes=10)
    (ded,) = rules(id="d", window_minutes=10)
    fake = StrictDynamo(TABLE)
    win = Windows([thr, ded], DynamoStore(TABLE, fake, sleep=lambda s: None),
                  clock=lambda: T0 + 600)
    assert [a["rule"]["id"] for a in win.apply([alert_for(thr, record(0), threshold=1),
                                                alert_for(ded, record(1, "bob"))])] == ["d"]
    (pk,) = [pk for pk in fake.items if pk.startswith("r|")]
    fake.items[pk][f"t_{int(T0 // 600)}"] = {"SS": [_tag(f"inv-{i}") for i in range(25_600)]}
    out = win.apply([alert_for(thr, record(2), threshold=1), alert_for(ded, record(3, "bob"))])
    assert out == [] and win.stats["state_errors"] == 1      # bob's window still holds


def test_a_bucket_stops_collecting_tags_at_the_cap():
    from handlers.alert_state import MAX_TAGS
    (thr,) = rules(threshold=10_000, window_minutes=60)
    fake = StrictDynamo(TABLE)
    win = Windows([thr], DynamoStore(TABLE, fake, sleep=lambda s: None), clock=lambda: T0 + 60)
    for i in range(MAX_TAGS + 20):             # one invocation each, all in one bucket
        win.apply([alert_for(thr, record(i, seconds=i), threshold=1)])
    (item,) = fake.items.values()
    tags = [len(v["SS"]) for k, v in item.items() if k.startswith("t_")]
    counts = [int(v["N"]) for k, v in item.items() if k.startswith("c_")]
    assert tags == [MAX_TAGS + 1] and counts == [MAX_TAGS + 20]   # counted, not tagged


# ------------------------------------------------- organization-wide destinations (review H1)

def test_a_record_another_account_sends_never_opens_the_trail_accounts_windows():
    """With an organization-wide destination any member account can subscribe a log group of
    its own and write forged CloudTrail JSON there. A forged root call for the management
    account must not open the day's CIS window that the real root call then falls into: windows
    are per sending account (the envelope's owner, which CloudWatch Logs sets)."""
    from handlers.detection.builtin import builtin_rules
    from handlers.pipeline import Pipeline

    mgmt, member, now = "111122223333", "999988887777", T0 + 7200

    def root_call(event_id):
        return {"eventVersion": "1.09", "eventSource": "iam.amazonaws.com",
                "eventName": "CreateUser", "eventTime": "2025-11-20T11:58:00Z",
                "eventID": event_id, "awsRegion": "us-east-1", "eventType": "AwsApiCall",
                "recipientAccountId": mgmt, "requestParameters": {"userName": "x"},
                "userIdentity": {"type": "Root", "arn": f"arn:aws:iam::{mgmt}:root",
                                 "accountId": mgmt}}

    def invocation(record, group, owner):
        env = {"messageType": "DATA_MESSAGE", "owner": owner, "logGroup": group,
               "logStream": "s", "subscriptionFilters": ["f"],
               "logEvents": [{"id": "1", "timestamp": int((now - 30) * 1000),
                              "message": json.dumps(record)}]}
        data = base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()
        return {"awslogs": {"data": data}}

    rules_ = builtin_rules({})
    app = App(Pipeline(rules_, clock=lambda: now), [], None, metrics_sink=ListMetrics(),
              log=ListLogger(), emit=lambda line: None)
    app.windows = Windows(rules_, MemoryStore(), (), ListLogger(), lambda: now)
    forged = app.handle(invocation(root_call("forged-1"), "sandbox/anything", member))
    real = app.handle(invocation(root_call("real-1"), "CloudTrail/org-trail", mgmt))
    assert forged["alerts"] >= 1 and real["alerts"] == forged["alerts"]
    again = app.handle(invocation(root_call("real-2"), "CloudTrail/org-trail", mgmt))
    assert again["alerts"] == 0 and again["alerts_windowed"] >= 1   # its own window still holds
