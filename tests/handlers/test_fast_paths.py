"""The processor's fast paths give the same alerts as the plain way of computing them.

Each optimisation in the hot path (threshold alerts built only for groups that reach N, one
RecordFacts shared by the alerts of a record, cached SNS attributes, the ASCII shortcut of
``sqs_safe``, aggregation that groups only rules above the threshold) is checked here against a
straightforward reference computation, over generated records.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import alerts as A
from handlers.sinks import sns as S
from handlers.jsonsafe import sqs_safe
from handlers.detection.patterns import compile_pattern
from handlers.pipeline import Pipeline
from handlers.detection.rules import Rule
from handlers.detection.thresholds import apply_thresholds, thresholds_of

ENV = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "CloudTrail/x",
       "logStream": "111122223333_CloudTrail_us-east-1", "subscriptionFilters": ["tw"]}


def _rule(rid: str, pattern: str, threshold: int = 0) -> Rule:
    return Rule(id=rid, title=f"Rule {rid}", severity="MEDIUM", pattern=compile_pattern(pattern),
                threshold=threshold, description=f"{rid} matched", source="user")


RULES = [
    _rule("every-get", '{ $.eventName = "Get*" }'),
    _rule("bulk-get", '{ $.eventName = "GetSecretValue" }', threshold=3),
    _rule("denied", '{ $.errorCode = "AccessDenied*" }'),
    _rule("denied-burst", '{ $.errorCode = "AccessDenied*" }', threshold=2),
    _rule("root", '{ $.userIdentity.type = "Root" }'),
]

_principals = st.sampled_from(["arn:aws:iam::111122223333:user/a",
                               "arn:aws:iam::111122223333:user/b", None])


@st.composite
def _record(draw, i):
    rec = {"eventVersion": "1.08", "eventTime": "2026-11-20T10:00:00Z",
           "eventSource": "secretsmanager.amazonaws.com",
           "eventName": draw(st.sampled_from(["GetSecretValue", "GetParameter", "PutObject"])),
           "awsRegion": "us-east-1", "recipientAccountId": "111122223333"}
    if draw(st.booleans()):
        rec["eventID"] = draw(st.sampled_from([f"e{i}", "dup", ""]))   # duplicates and empties
    who = draw(_principals)
    ui = {"type": draw(st.sampled_from(["IAMUser", "Root", "AssumedRole"]))}
    if who:
        ui["arn"] = who
    rec["userIdentity"] = ui
    if draw(st.booleans()):
        rec["errorCode"] = draw(st.sampled_from(["AccessDenied", "AccessDeniedException", "x"]))
    if draw(st.booleans()):
        rec["requestParameters"] = {"secretId": f"arn:aws:secretsmanager:us-east-1:111122223333:"
                                                f"secret:s{i % 3}", "n": i}
    return rec


@st.composite
def _batches(draw):
    n = draw(st.integers(0, 14))
    return [draw(_record(i)) for i in range(n)]


def _envelope(records):
    return dict(ENV, logEvents=[{"id": f"le-{i}", "timestamp": 1_763_632_900_000 + i,
                                 "message": json.dumps(r)} for i, r in enumerate(records)])


def _reference(records):
    """Every match built as its own alert (deduplicated on the alert id), then the thresholds."""
    out, seen = [], set()
    for i, rec in enumerate(records):
        ev = {"id": f"le-{i}", "timestamp": 1_763_632_900_000 + i}
        for rule in RULES:
            if not rule.pattern.match(rec):
                continue
            ident = A.alert_id("rule", rule.id, A.event_key(rec, ev["id"]))
            if ident not in seen:
                seen.add(ident)
                out.append(A.rule_alert(rule, rec, ENV, ev, None, ident=ident))
    return apply_thresholds(out, thresholds_of(RULES))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches())
def test_pipeline_alerts_equal_building_every_alert_then_applying_thresholds(records):
    pipe = Pipeline(RULES, clock=lambda: 1_763_633_000.0)
    got = pipe.process_envelope(_envelope(records)).alerts
    want = _reference(records)
    for a in got + want:        # lag depends on the clock only through delivery; drop it
        a["delivery"] = dict(a["delivery"], delivery_lag_seconds=None)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches())
def test_placeholders_built_later_equal_the_alerts_built_at_once(records):
    from handlers.pipeline import build_alerts
    env = _envelope(records)
    eager = Pipeline(RULES, clock=lambda: 1_763_633_000.0).process_envelope(env).alerts
    res = Pipeline(RULES, clock=lambda: 1_763_633_000.0).process_envelope(env, lazy=True)
    assert all(a["alert_id"] in res.pending for a in res.alerts if a["kind"] == "rule_match")
    assert json.dumps(build_alerts(res.alerts, res.pending)) == json.dumps(eager)


def _count_built(monkeypatch) -> list[str]:
    """The rule ids of the alerts :func:`handlers.alerts.rule_alert` builds from now on."""
    built: list[str] = []
    real = A.rule_alert

    def counting(rule, *a, **k):
        built.append(rule.id)
        return real(rule, *a, **k)

    monkeypatch.setattr(A, "rule_alert", counting)
    return built


def test_matches_the_windows_drop_are_never_built(monkeypatch):
    from handlers.alert_state import MemoryStore
    from handlers.processor import App
    from tests.conftest import ListLogger, ListMetrics

    built = _count_built(monkeypatch)
    windowed = Rule(id="denied-daily", title="Denied", severity="LOW",
                    pattern=compile_pattern('{ $.errorCode = "AccessDenied*" }'),
                    window_minutes=1440, description="denied", source="user")
    app = App(Pipeline([windowed], clock=lambda: 1_763_633_000.0), [], None,
              metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None)
    from handlers.alert_state import Windows
    app.windows = Windows([windowed], MemoryStore(), clock=lambda: 1_763_633_000.0)
    denied = [{"eventVersion": "1.08", "eventID": f"e{i}", "eventName": "GetObject",
               "eventTime": "2025-11-20T10:00:00Z", "errorCode": "AccessDenied",
               "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/u"}}
              for i in range(6)]
    import base64
    import gzip
    data = base64.b64encode(gzip.compress(json.dumps(_envelope(denied)).encode())).decode()
    out = app.handle({"awslogs": {"data": data}})
    assert out["alerts"] == 1 and out["alerts_windowed"] == 5
    assert built == ["denied-daily"]        # one built: the window's first; five counted only


def test_threshold_alerts_below_n_are_never_built(monkeypatch):
    built = _count_built(monkeypatch)
    reads = [{"eventVersion": "1.08", "eventID": f"e{i}", "eventName": "GetSecretValue",
              "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::1:user/u{i}"}}
             for i in range(5)]                     # five principals, one read each: no group
    res = Pipeline(RULES).process_envelope(_envelope(reads))
    assert [a["rule"]["id"] for a in res.alerts] == ["every-get"] * 5
    assert built.count("bulk-get") == 0             # the old pipeline built (and dropped) 5
    res = Pipeline(RULES).process_envelope(_envelope([dict(r, userIdentity=reads[0]["userIdentity"])
                                                      for r in reads]))
    (bulk,) = [a for a in res.alerts if a["rule"]["id"] == "bulk-get"]
    assert bulk["threshold"]["count"] == 5 and built.count("bulk-get") == 1


def test_alerts_of_one_record_share_facts_and_fitting_one_leaves_the_other_whole():
    rec = {"eventVersion": "1.08", "eventID": "e1", "eventName": "GetSecretValue",
           "errorCode": "AccessDenied", "userIdentity": {"type": "Root"},
           "requestParameters": {"blob": "x" * 5000}}
    res = Pipeline(RULES).process_envelope(_envelope([rec]))
    a, b = [x for x in res.alerts if x["rule"]["id"] in ("every-get", "denied")]
    assert a["event"] is b["event"] and a["delivery"] is b["delivery"]
    before = json.dumps(b)
    body = A.fit(a, 3000)                            # truncates requestParameters in its copy
    assert json.loads(body)["truncated_fields"] == ["requestParameters"]
    assert json.dumps(b) == before and a["truncated_fields"] == []


def _reference_attributes(alert):
    attrs, size = {}, 0
    for k, v in A.routing_keys(alert).items():
        v = S._attr_value(v)
        if v:
            attrs[k] = {"DataType": "String", "StringValue": v}
            size += len(k.encode()) + len(b"String") + len(v.encode())
    v = "true" if alert.get("expected_change") else "false"
    attrs["expected_change"] = {"DataType": "String", "StringValue": v}
    return attrs, size + len(b"expected_change") + len(b"String") + len(v)


_hostile = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_hostile, _hostile, st.booleans()), min_size=1, max_size=8))
def test_cached_sns_attributes_equal_computing_them_each_time(values):
    for name, region, expected in values * 2:        # second round: from the caches
        alert = A.rule_alert(RULES[0], {"eventVersion": "1.08", "eventName": name,
                                        "awsRegion": region, "eventID": name + region},
                             ENV, {"id": "le"}, None, expected_change=expected)
        assert S.SnsSink.attributes_with_size(alert) == _reference_attributes(alert)


def test_attribute_caches_stay_bounded_under_attacker_chosen_values():
    for i in range(3 * S._ATTRIBUTES_MAX):
        alert = A.rule_alert(RULES[0], {"eventVersion": "1.08", "eventName": f"Get{i}",
                                        "eventID": str(i)}, ENV, {"id": "le"}, None)
        S.SnsSink.attributes_with_size(alert)
    assert len(S._ATTRIBUTES) <= S._ATTRIBUTES_MAX
    assert len(S._ATTRIBUTE_SETS) <= S._ATTRIBUTES_MAX
    assert len(S._FAST_SETS) <= S._ATTRIBUTES_MAX
    assert not any(name == "alert_id" for name, _ in S._ATTRIBUTES)   # unique: never cached


def test_attribute_caches_keep_only_capped_values_of_huge_record_fields():
    """Record fields are attacker-sized (a 256 KB awsRegion): a warm function must not keep
    1,024 of them alive between invocations (found by review: the caches keyed on raw values)."""
    for i in range(50):
        alert = A.rule_alert(RULES[0], {"eventVersion": "1.08", "eventName": "Get" + "n" * 100_000,
                                        "awsRegion": f"{i}" + "r" * 100_000, "eventID": str(i)},
                             ENV, {"id": "le"}, None)
        attrs, _ = S.SnsSink.attributes_with_size(alert)
        assert attrs["region"]["StringValue"] == (f"{i}" + "r" * 200)[:S.SNS_ATTRIBUTE_CHARS]
    held = [v for _, v in S._ATTRIBUTES] + [v for pairs, _ in S._ATTRIBUTE_SETS for _, v in pairs] \
        + [v for values, _ in S._FAST_SETS for v in values]
    assert max(map(len, held)) <= S.SNS_ATTRIBUTE_CHARS


@given(st.text(max_size=50))
def test_sqs_safe_ascii_shortcut_and_noncharacters(text):
    body = json.dumps({"t": text + "\ufffe\uffff"}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    out = sqs_safe(body)
    assert b"\xef\xbf\xbe" not in out and b"\xef\xbf\xbf" not in out
    assert json.loads(out) == json.loads(body)
    ascii_body = json.dumps({"t": text}).encode()
    assert sqs_safe(ascii_body) is ascii_body


def test_aggregation_only_groups_rules_above_the_threshold():
    def alerts_of(rule, n, who):
        return [A.rule_alert(rule, {"eventVersion": "1.08", "eventID": f"{rule.id}-{who}-{i}",
                                    "eventName": "GetSecretValue",
                                    "userIdentity": {"type": "IAMUser", "arn": who}},
                             ENV, {"id": f"{rule.id}{i}"}, None) for i in range(n)]
    many = alerts_of(RULES[0], 5, "a")
    few = alerts_of(RULES[2], 2, "a")
    out, members = A.aggregate(many + few, 4)
    assert [a["rule"]["id"] for a in out] == ["every-get", "denied", "denied"]
    assert out[0]["aggregate"]["count"] == 5 and len(members) == 1
    spread = alerts_of(RULES[0], 3, "a") + alerts_of(RULES[0], 3, "b")   # 6 > 4, but 3 + 3
    assert A.aggregate(spread, 4) == (spread, {})


def test_rules_with_the_same_pattern_text_are_evaluated_once_per_record():
    """cis-4.1 and tw-denied-api-calls-burst share their pattern: one evaluation serves both."""
    from handlers.detection.patterns import CompiledPattern, PatternIndex
    calls = []
    text = '{ $.errorCode = "AccessDenied*" }'
    real = compile_pattern(text)

    def counting(record):
        calls.append(1)
        return real.match(record)

    pats = [("a", CompiledPattern(text, counting, required_key="errorCode")),
            ("other", compile_pattern('{ $.errorCode = "Throttling" }')),
            ("b", CompiledPattern(text, counting, required_key="errorCode"))]
    index = PatternIndex(pats)
    assert index.matches({"errorCode": "AccessDenied"}) == ["a", "b"] and len(calls) == 1
    assert index.matches({"errorCode": "Throttling"}) == ["other"] and len(calls) == 2
    assert index.matches({"eventName": "x"}) == () and len(calls) == 2


def test_placeholders_keep_no_payload_alive():
    """In Kinesis mode up to 100 payloads of up to 16 MiB are decoded in one invocation; what a
    placeholder is built from must not hold its payload's log events (review: 88 -> 208 MiB peak
    RSS with a match in each of 100 1-MiB records)."""
    rec = {"eventVersion": "1.08", "eventID": "e1", "eventName": "GetSecretValue",
           "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/a"}}
    env = _envelope([rec, dict(rec, eventID="e2"), dict(rec, eventID="e3")])
    res = Pipeline(RULES).process_envelope(env, lazy=True)
    assert res.pending
    for rule, record, envelope, log_event, *_ in res.pending.values():
        assert "logEvents" not in envelope and set(log_event) == {"id", "timestamp"}
        assert envelope == {k: env.get(k) for k in ("owner", "logGroup", "logStream")}


def test_window_keys_read_any_field_of_the_record():
    """A dedup_key field the alert's summary leaves out (eventVersion) keys by its value: the
    windows read the record, as the invocation's threshold groups and the backtest do."""
    from handlers.alert_state import MemoryStore, Windows
    from handlers.detection.rules import parse_rules
    from handlers.pipeline import build_alerts

    (rule,) = parse_rules({"rules": [{"id": "v", "pattern": '{ $.eventName = "GetSecretValue" }',
                                      "severity": "LOW", "window_minutes": 60,
                                      "dedup_key": ["eventVersion"]}]})
    recs = [{"eventVersion": v, "eventID": f"e{i}", "eventName": "GetSecretValue",
             "eventTime": "2025-11-20T10:00:00Z"} for i, v in enumerate(["1.08", "1.09", "1.08"])]
    res = Pipeline([rule], clock=lambda: 1_763_633_000.0).process_envelope(_envelope(recs),
                                                                            lazy=True)
    kept = Windows([rule], MemoryStore(), clock=lambda: 1_763_633_000.0).apply(res.alerts)
    built = build_alerts(kept, res.pending)
    assert [a["window"]["key"] for a in built] == ["1.08", "1.09"]
