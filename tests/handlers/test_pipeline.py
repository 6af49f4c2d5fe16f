"""Decoding, the 256 KB limit in UTF-8 bytes, delivery lag and record validation."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.pipeline import (CLOUDTRAIL_MAX_EVENT_BYTES, PayloadError, Pipeline, Settings,
                               decode_subscription_data, decompress, iter_sources,
                               parse_event_time, utf8_size)
from handlers.detection.builtin import cis_rules

ENV = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "g",
       "logStream": "111122223333_CloudTrail_us-east-1", "subscriptionFilters": ["f"],
       "logEvents": []}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ------------------------------------------------------------------------------------ decode

def test_gzip_and_zlib_are_both_detected():
    body = json.dumps(ENV).encode()
    assert decode_subscription_data(b64(gzip.compress(body)))["owner"] == "111122223333"
    assert decode_subscription_data(b64(zlib.compress(body)))["owner"] == "111122223333"


def test_powertools_zlib_sample_with_policy_level_decodes():
    from tests.conftest import CORPUS
    path = CORPUS / "payloads" / "powertools-cloudWatchLogEventWithPolicyLevel.json"
    if not path.exists():
        pytest.skip("../shared/corpus is not present")
    env = decode_subscription_data(json.loads(path.read_text())["awslogs"]["data"])
    assert env["policyLevel"] == "ACCOUNT_LEVEL_POLICY" and len(env["logEvents"]) == 2


@pytest.mark.parametrize("data,kind", [
    ("H4sI!!not*base64$$", "bad_base64"),
    (b64(b'{"messageType":"DATA_MESSAGE"}'), "not_compressed"),
    (b64(gzip.compress(b"not json", mtime=0)), "bad_json"),
    (b64(gzip.compress(b'["a list"]', mtime=0)), "bad_envelope"),
    (b64(gzip.compress(b'{"messageType":"DATA_MESSAGE","logEvents":{}}', mtime=0)), "bad_envelope"),
    (b64(gzip.compress(json.dumps(ENV).encode())[:-12]), "truncated"),
    ("", "bad_envelope"),
    (None, "bad_envelope"),
])
def test_decode_errors_are_named(data, kind):
    with pytest.raises(PayloadError) as info:
        decode_subscription_data(data)
    assert info.value.kind == kind


def _backends():
    """stdlib zlib always; zlib-ng (what the pipeline uses when installed) when importable."""
    libs = [zlib]
    try:
        from zlib_ng import zlib_ng
        libs.append(zlib_ng)
    except ImportError:
        pass
    return libs


def test_pipeline_uses_zlib_ng_when_installed():
    import handlers.pipeline as P
    expected = "zlib_ng.zlib_ng" if len(_backends()) == 2 else "zlib"
    assert P.INFLATE_BACKEND == expected


@pytest.mark.parametrize("lib", _backends(), ids=lambda m: m.__name__)
def test_decompression_bomb_is_refused_without_inflating_it(lib):
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))   # 64 MiB of zeros -> ~64 KB compressed
    assert len(bomb) < 100_000
    with pytest.raises(PayloadError) as info:
        decompress(bomb, max_bytes=1024 * 1024, lib=lib)
    assert info.value.kind == "too_large"
    assert decompress(gzip.compress(b"x" * 1024), max_bytes=1024, lib=lib) == b"x" * 1024
    assert decompress(zlib.compress(b"y" * 1024), max_bytes=1024, lib=lib) == b"y" * 1024


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=64),
       st.sampled_from(["gzip", "zlib", "raw"]))
def test_backends_agree_on_every_input(body, cut, wrap):
    """zlib-ng and stdlib zlib give the same bytes or the same PayloadError kind, truncated or not."""
    data = {"gzip": gzip.compress, "zlib": zlib.compress, "raw": bytes}[wrap](body)
    data = data[:len(data) - cut] if cut < len(data) else data
    outcomes = []
    for lib in _backends():
        try:
            outcomes.append(("ok", decompress(data, max_bytes=2048, lib=lib)))
        except PayloadError as e:
            outcomes.append(("error", e.kind))
    assert all(o == outcomes[0] for o in outcomes)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_decoder(raw):
    """Any input either decodes to an envelope or raises PayloadError: never anything else."""
    for data in (raw, b64(raw), b64(gzip.compress(raw)), b64(zlib.compress(raw))):
        try:
            env = decode_subscription_data(data)
        except PayloadError as e:
            assert e.kind in {"bad_base64", "not_compressed", "truncated", "bad_json",
                              "bad_envelope", "too_large"}
        else:
            assert isinstance(env, dict) and "messageType" in env


@given(st.integers(min_value=1, max_value=200))
def test_truncated_gzip_is_reported_as_truncated(cut):
    good = gzip.compress(json.dumps(ENV).encode())
    cut = min(cut, len(good) - 1)
    with pytest.raises(PayloadError) as info:
        decode_subscription_data(b64(good[:-cut]))
    assert info.value.kind in ("truncated", "not_compressed")


def test_iter_sources_shapes():
    assert iter_sources({"awslogs": {"data": "x"}}) == ("awslogs", [("awslogs", "x")])
    mode, items = iter_sources({"Records": [{"kinesis": {"sequenceNumber": "1", "data": "d"}}]})
    assert (mode, items) == ("kinesis", [("1", "d")])
    for bad in ({}, {"Records": []}, {"Records": [{"s3": {}}]}, [], "x"):
        with pytest.raises(PayloadError):
            iter_sources(bad)


# ------------------------------------------------------------------------------------ size

def _message_of_size(n_bytes: int, char: str) -> str:
    """A CloudTrail-looking JSON message of exactly n_bytes UTF-8 bytes."""
    head = '{"eventVersion":"1.08","eventID":"size-test","eventTime":"2026-11-20T10:00:00Z","pad":"'
    tail = '"}'
    room = n_bytes - len(head.encode()) - len(tail.encode())
    unit = len(char.encode())
    return head + char * (room // unit) + "a" * (room % unit) + tail


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
@pytest.mark.parametrize("size,over", [(262_143, False), (262_144, False), (262_145, True)])
def test_size_boundary_in_utf8_bytes(char, size, over):
    msg = _message_of_size(size, char)
    assert len(msg.encode()) == size
    ev = {"id": "1", "timestamp": 1_763_632_800_000, "message": msg}
    res = Pipeline([], clock=lambda: 1_763_632_900.0).process_envelope(dict(ENV, logEvents=[ev]))
    assert (res.oversize, res.records) == ((1, 0) if over else (0, 1))
    if over:
        alert = res.alerts[0]
        assert alert["kind"] == "oversize_event"
        assert alert["event"]["size_bytes"] == size
        assert alert["delivery"]["log_event_id"] == "1"
        assert len(alert["event"]["first_bytes"].encode()) <= 1024


@given(st.text(max_size=300))
def test_utf8_size_matches_encoding(text):
    assert utf8_size(text) == len(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=262_100, max_value=262_200),
       st.sampled_from(["a", "ß", "中", "🙂"]))
def test_any_size_near_the_limit_is_classified_by_bytes(size, char):
    msg = _message_of_size(size, char)
    ev = {"id": "1", "timestamp": 1_763_632_800_000, "message": msg}
    res = Pipeline([]).process_envelope(dict(ENV, logEvents=[ev]))
    assert res.oversize == (1 if size > CLOUDTRAIL_MAX_EVENT_BYTES else 0)


# ------------------------------------------------------------------------------------ lag

def test_lag_uses_delivery_timestamp_and_injected_clock():
    ev = {"id": "1", "timestamp": 1_763_632_800_000 + 300_000,
          "message": json.dumps({"eventVersion": "1.08", "eventTime": "2025-11-20T10:00:00Z"})}
    # 2025-11-20T10:00:00Z == 1763632800
    res = Pipeline([], clock=lambda: 1_763_632_800.0 + 360).process_envelope(
        dict(ENV, logEvents=[ev]))
    assert res.delivery_lags == [300.0]
    assert res.receipt_lags == [60.0]
    assert res.delayed == [] and res.skewed == 0


def test_delay_threshold_and_skew_tolerance():
    base = 1_763_632_800
    def ev(i, delta, addendum=None):
        rec = {"eventVersion": "1.08", "eventID": f"e{i}", "eventTime": "2025-11-20T10:00:00Z"}
        if addendum:
            rec["addendum"] = {"reason": addendum}
        return {"id": str(i), "timestamp": (base + delta) * 1000, "message": json.dumps(rec)}
    events = [ev(0, 899), ev(1, 901), ev(2, 5000, "DELIVERY_DELAY"), ev(3, -59), ev(4, -61)]
    res = Pipeline([], Settings(lag_threshold=900, skew_tolerance=60),
                   clock=lambda: base + 6000.0).process_envelope(dict(ENV, logEvents=events))
    assert sorted(d["key"] for d in res.delayed) == ["eventID:e1", "eventID:e2"]
    assert [d["reason"] for d in res.delayed if d["key"] == "eventID:e2"] == ["DELIVERY_DELAY"]
    assert res.skewed == 1


@pytest.mark.parametrize("value,expected", [
    ("2023-07-10T09:41:14Z", 1688982074.0),
    ("2023-07-10T09:41:14", 1688982074.0),
    ("2023-07-10T09:41:14.250Z", 1688982074.25),
    ("yesterday", None), (None, None), (1688982074, None),
])
def test_parse_event_time(value, expected):
    assert parse_event_time(value) == expected


_SINCE_1971 = st.datetimes(min_value=datetime(1971, 1, 1))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    _SINCE_1971.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),          # CloudTrail's form
    _SINCE_1971.map(lambda d: d.isoformat(timespec="seconds")),            # no zone: UTC
    _SINCE_1971.map(lambda d: d.isoformat(timespec="milliseconds") + "+02:00"),
    st.text(max_size=25)), min_size=1, max_size=6))
def test_hot_loop_event_time_agrees_with_parse_event_time(times):
    """The pipeline inlines parse_event_time (and memoises per batch); same verdict, same lag."""
    evs = [{"id": str(i), "timestamp": 1_763_632_800_000,
            "message": json.dumps({"eventVersion": "1.08", "eventTime": t})}
           for i, t in enumerate(times)]
    res = Pipeline([]).process_envelope(dict(ENV, logEvents=evs))
    expected = [1_763_632_800.0 - p for p in map(parse_event_time, times) if p is not None]
    assert res.delivery_lags == expected
    assert res.no_event_time == len(times) - len(expected)


# ------------------------------------------------------------------------------------ records

def test_records_without_event_time_or_identity_are_valid():
    insight = {"eventVersion": "1.08", "eventType": "AwsCloudTrailInsight", "eventID": "i",
               "eventTime": "2026-11-20T09:00:00Z", "insightDetails": {"state": "Start"}}
    otrf = {"eventVersion": "1.08", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
            "eventID": "o", "@timestamp": "2020-09-14T01:19:40Z"}
    evs = [{"id": str(i), "timestamp": 1_763_632_800_000, "message": json.dumps(r)}
           for i, r in enumerate((insight, otrf))]
    res = Pipeline(cis_rules()).process_envelope(dict(ENV, logEvents=evs))
    assert (res.records, res.malformed, res.no_event_time, len(res.delivery_lags)) == (2, 0, 1, 1)


_JSON = st.recursive(st.none() | st.booleans() | st.integers()
                     | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=30), lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)
_READ_FIELDS = ["eventTime", "eventName", "eventID", "userIdentity", "errorCode", "errorMessage",
                "addendum", "userAgent", "sourceIPAddress", "requestParameters", "eventSource"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_READ_FIELDS), _JSON | st.sampled_from(
    ["ConsoleLogin", "StopLogging", "AccessDenied", "Root", "2026-11-20T10:00:00Z"])))
def test_any_json_in_the_fields_we_read_is_a_record_not_a_crash(fields):
    """A record whose fields hold unexpected JSON types (eventTime a list, userIdentity a string,
    addendum a number...) is still a record: counted, lag only when eventTime parses, no crash."""
    rec = {"eventVersion": "1.08", **fields}
    ev = {"id": "5", "timestamp": 1_763_632_800_000, "message": json.dumps(rec)}
    res = Pipeline(cis_rules(), Settings(lag_threshold=0.0)).process_envelope(
        dict(ENV, logEvents=[ev]))
    assert (res.records, res.malformed) == (1, 0)
    parsed = parse_event_time(rec.get("eventTime"))
    assert res.no_event_time == (parsed is None)
    assert len(res.delivery_lags) == (parsed is not None)


@given(st.one_of(st.text(max_size=50), st.integers(), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.sampled_from(["foo", "level", "msg"]), st.text(max_size=5))))
def test_non_cloudtrail_messages_are_failures_not_drops(value):
    msg = value if isinstance(value, str) else json.dumps(value)
    ev = {"id": "77", "timestamp": 1_763_632_800_000, "message": msg}
    res = Pipeline(cis_rules()).process_envelope(dict(ENV, logEvents=[ev]))
    assert res.records + res.malformed == 1
    if res.malformed:
        f = res.failures[0]
        assert f["log_event_id"] == "77" and f["message"] == msg
        assert f["reason"] in ("invalid_json", "not_cloudtrail")


@pytest.mark.parametrize("ev", [{"id": "1", "message": "{}"}, {"id": "1", "timestamp": 1},
                                "just a string", {"id": "1", "timestamp": "x", "message": "{}"}])
def test_structurally_bad_log_events_are_failures(ev):
    res = Pipeline([]).process_envelope(dict(ENV, logEvents=[ev]))
    assert res.malformed == 1 and res.failures[0]["reason"] == "bad_log_event"


def test_duplicate_events_in_one_batch_give_one_alert():
    rec = {"eventVersion": "1.08", "eventID": "dup", "eventName": "StopLogging",
           "eventSource": "cloudtrail.amazonaws.com", "eventTime": "2026-11-20T10:00:00Z"}
    evs = [{"id": str(i), "timestamp": 1_763_632_800_000, "message": json.dumps(rec)}
           for i in range(2)]
    res = Pipeline(cis_rules()).process_envelope(dict(ENV, logEvents=evs))
    assert res.records == 2 and len(res.alerts) == 1
