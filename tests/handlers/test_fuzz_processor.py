"""Property-based fuzz of the whole processor against strict AWS fakes (issue 11).

Hostile invocation events (garbage base64, wrong or concatenated compression, trailing bytes,
wrong JSON shapes, any JSON value in every field the rules read, deep nesting, surrogates,
U+FFFE/U+FFFF and control characters, the 262,144-byte boundary, mixed Kinesis batches) go
through ``App.handle`` with SNS, EventBridge, SQS and S3 fakes that enforce AWS's limits
(tests/strict_fakes.py). For every invocation:

* no exception (the fakes inject no fault here, so the documented ``DeliveryFailed`` must not
  happen either);
* conservation: every log event is a record, oversize or malformed, every payload is decoded,
  a control message or a payload error, with the counts an independent oracle computes;
* every malformed event and every undecodable payload is recoverable *whole* from the failure
  queue (or from the S3 archive the queue message points to);
* every alert reached both sinks, and no request broke a byte, count or character limit.

The example counts add up to 10,500 generated invocation events, plus 500 more with injected
faults (ClientErrors and partial batch failures from the fakes), where the only exception allowed
is the documented ``DeliveryFailed`` and a normal return means everything was delivered. ``derandomize=True`` and no
example database make CI runs identical; ``TRAILWATCH_FUZZ_SCALE`` (e.g. 0.1 or 10) scales them.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import sys
import zlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.processor import App
from tests.conftest import ListLogger, ListMetrics
from tests.strict_fakes import StrictAws

pytestmark = pytest.mark.fuzz

SCALE = float(os.environ.get("TRAILWATCH_FUZZ_SCALE", "1"))
AWSLOGS_EXAMPLES = max(1, int(6000 * SCALE))
KINESIS_EXAMPLES = max(1, int(3000 * SCALE))
TOP_LEVEL_EXAMPLES = max(1, int(1500 * SCALE))
NOW = 1_763_640_000.0
LIMIT = 262_144
MAX_TS = 2 ** 53
DEFAULT_RECURSION_LIMIT = 1000


def fuzz_settings(n: int):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------- generators
# Hypothesis chooses the class of each input (encoding, envelope shape, message kind, ...) and a
# seed; the bulky hostile values are built from that seed with ``random.Random``. Drawing every
# leaf through Hypothesis costs ~400 draws per invocation (minutes for 10,000); this keeps the
# run reproducible, the classes explicit, and CI at well under two minutes.

HOSTILE = ["\ufffe", "\uffff", "\x00", "\x01", "\x1f", "\x7f", "\u2028", "é", "\U0001f600",
           "\ud800", "\udfff", '"', "\\", "a", "Z", " ", "0", "trailwatch/", "$", "{", "*"]
EVENT_NAMES = ["StopLogging", "DeleteTrail", "UpdateTrail", "ConsoleLogin", "PutBucketPolicy",
               "CreateNetworkAcl", "AuthorizeSecurityGroupIngress", "DisableKey", "PutRolePolicy",
               "CreateRole", "DescribeInstances"]
SOURCES = ["cloudtrail.amazonaws.com", "signin.amazonaws.com", "s3.amazonaws.com",
           "ec2.amazonaws.com", "kms.amazonaws.com", "iam.amazonaws.com"]
TIMES = ["2025-11-20T11:55:00Z", "2025-11-20T09:00:00Z", "2025-11-21T00:00:00Z",
         "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
         "not a time", "2025-11-20T11:55:00"]


def text(rng, n: int = 6) -> str:
    """Hostile text as Lambda's runtime can hand it to us: a high+low surrogate pair is one
    astral character after ``json.loads`` (the same normalisation here), lone ones stay."""
    raw = "".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, n)))
    return raw.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def value(rng, depth: int = 0):
    """Any JSON value (plus lone surrogates in strings), at most a few levels deep."""
    r = rng.random()
    if depth >= 3 or r < 0.55:
        return rng.choice([None, True, False, 0, -1, 2 ** 63, -(2 ** 70), 1.5, -0.0, 1e308,
                           rng.randint(-10 ** 6, 10 ** 6), text(rng), text(rng), "", "x"])
    if r < 0.78:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {text(rng, 3): value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def nested(depth: int, kind: str):
    v: object = "bottom"
    for _ in range(depth):
        v = [v] if kind == "list" else {"a": v}
    return v


def field(rng, big: bool = False):
    r = rng.random()
    if r < 0.06:
        return nested(rng.choice([253, 254, 255, 300, 600, 1000]), rng.choice(["list", "dict"]))
    if big and r < 0.09:   # the alert-size boundary: identity or bulky fields up to ~261 KB
        return rng.choice(["x", "é", "\ufffe"]) * rng.choice([1_000, 70_000, 200_000, 261_000])
    return value(rng)


def record(rng) -> dict:
    rec: dict = {"eventVersion": rng.choice(["1.08", "1.09", "1.10"]),
                 "eventName": rng.choice(EVENT_NAMES) if rng.random() < 0.8 else field(rng),
                 "eventSource": rng.choice(SOURCES) if rng.random() < 0.8 else value(rng),
                 "eventTime": rng.choice(TIMES) if rng.random() < 0.85 else value(rng)}
    for key in ("eventID", "userIdentity", "requestParameters", "responseElements",
                "sourceIPAddress", "userAgent", "errorCode", "awsRegion", "recipientAccountId",
                "additionalEventData", "resources"):
        if rng.random() < 0.3:
            rec[key] = field(rng, big=key in ("eventID", "requestParameters", "userAgent"))
    if rng.random() < 0.3:
        rec["userIdentity"] = {"type": rng.choice(["Root", "IAMUser", "AssumedRole"]),
                               "arn": "arn:aws:iam::1:root" if rng.random() < 0.5 else value(rng),
                               "sessionContext": value(rng)}
    if rng.random() < 0.3:
        rec["addendum"] = {"reason": field(rng)}
    if rng.random() < 0.2:
        rec["userAgent"] = rng.choice(["trailwatch/0.1.0", "aws-cli/2 trailwatch/1"])
    return rec


def pad_to(rec: dict, size: int) -> str:
    """A message of exactly ``size`` UTF-8 bytes (a CloudTrail record with a padding field)."""
    rec = dict(rec, pad="")
    base = len(json.dumps(rec, ensure_ascii=True).encode())
    rec["pad"] = "x" * max(0, size - base)
    return json.dumps(rec, ensure_ascii=True)


MESSAGE_KINDS = ["record", "record_raw", "text", "json", "nonchar", "nan", "value", "boundary"]


def message(rng, kind: str):
    if kind == "record":
        return json.dumps(record(rng), ensure_ascii=True)
    if kind == "record_raw":   # non-ASCII written raw, including U+FFFE/U+FFFF
        return json.dumps(record(rng), ensure_ascii=False)
    if kind == "text":
        return text(rng, 12)
    if kind == "json":
        return json.dumps(value(rng), ensure_ascii=True)
    if kind == "boundary":
        return pad_to(record(rng), LIMIT + rng.choice([-1, 0, 1, 2]))
    if kind == "nonchar":
        return '{"eventVersion":"1.08","eventName":"StopLogging","x":"\ufffe\uffff\x01"}'
    if kind == "nan":
        return '{"eventVersion":"1.08","eventName":"StopLogging","lag":NaN}'
    return value(rng)   # a message that is not a string at all


def log_event(rng, kind: str):
    if rng.random() < 0.05:
        return value(rng)
    ev = {"id": "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 56)))
          if rng.random() < 0.9 else value(rng),
          "timestamp": rng.randint(1_763_630_000_000, 1_763_640_000_000) if rng.random() < 0.85
          else rng.choice([value(rng), 2 ** 53 + 1, -1, 1e300, 2 ** 64, 1.7636e12]),
          "message": message(rng, kind)}
    for key in ("id", "timestamp", "message"):
        if rng.random() < 0.03:
            del ev[key]
    return ev


def envelope(rng, kind: str, kinds: list[str]):
    if kind == "shape":
        return rng.choice([value(rng), {"messageType": "DATA_MESSAGE", "logEvents": value(rng)}])
    mt = {"data": "DATA_MESSAGE", "control": "CONTROL_MESSAGE"}.get(kind) or \
        rng.choice([text(rng), value(rng)])
    return {"messageType": mt,
            "owner": "111122223333" if rng.random() < 0.8 else field(rng),
            "logGroup": "CloudTrail/fuzz" if rng.random() < 0.8 else field(rng),
            "logStream": "111122223333_CloudTrail_us-east-1" if rng.random() < 0.8 else value(rng),
            "subscriptionFilters": ["f"],
            "logEvents": [log_event(rng, k) for k in kinds]}


ENCODINGS = ["gzip"] * 10 + ["zlib", "raw", "trailing", "two_members", "truncated", "garbage",
                              "surrogate", "nonchar", "value", "empty"]


@st.composite
def payloads(draw):
    """(data as handed to the processor, the envelope bytes it decodes to or None)."""
    enc = draw(st.sampled_from(ENCODINGS))
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    if enc in ("garbage", "surrogate", "nonchar", "value", "empty"):
        return {"garbage": text(rng, 20) + "!", "surrogate": "H4sI\ud800AAAA",
                "nonchar": "H4sI\ufffeAAAA", "value": value(rng), "empty": ""}[enc], None
    kind = draw(st.sampled_from(["data"] * 8 + ["control", "unknown", "shape"]))
    kinds = draw(st.lists(st.sampled_from(MESSAGE_KINDS[:-1] + ["record"] * 6), max_size=6))
    if rng.random() < 0.03:
        kinds.append("boundary")
    body = json.dumps(envelope(rng, kind, kinds), ensure_ascii=draw(st.booleans()))
    body = body.encode("utf-8", "surrogatepass")   # raw lone surrogates -> invalid UTF-8
    if enc == "raw":
        return base64.b64encode(body).decode(), None
    comp = zlib.compress(body) if enc == "zlib" else gzip.compress(body, mtime=0)
    if enc == "trailing":
        comp += rng.randbytes(rng.randint(1, 8))
    elif enc == "two_members":
        comp += gzip.compress(b'{"messageType":"DATA_MESSAGE","logEvents":[]}', mtime=0)
    elif enc == "truncated":
        comp = comp[:-rng.randint(1, 8)]
    return base64.b64encode(comp).decode(), body if enc in ("gzip", "zlib") else None


# ---------------------------------------------------------------------------------- oracle

def classify_event(ev) -> str:
    if not isinstance(ev, dict) or "message" not in ev or "timestamp" not in ev:
        return "malformed"
    msg, ts, eid = ev["message"], ev["timestamp"], ev.get("id")
    if type(msg) is not str or type(ts) not in (int, float) or not 0 <= ts <= MAX_TS \
            or (eid is not None and type(eid) is not str):
        return "malformed"
    if len(msg.encode("utf-8", "surrogatepass")) > LIMIT:
        return "oversize"
    try:
        rec = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return "malformed"
    if not isinstance(rec, dict) or not {"eventVersion", "eventID", "eventType",
                                         "eventSource"} & rec.keys():
        return "malformed"
    return "record"


def expect_payload(body: bytes | None) -> tuple[str, list]:
    """("error"|"control"|"data", log events) for a payload's decompressed bytes."""
    if body is None:
        return "error", []
    try:
        env = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "error", []
    if not isinstance(env, dict) or not isinstance(env.get("messageType"), str):
        return "error", []
    if env["messageType"] == "CONTROL_MESSAGE":
        return "control", []
    if env["messageType"] != "DATA_MESSAGE" or not isinstance(env.get("logEvents"), list):
        return "error", []
    return "data", env["logEvents"]


AWS = StrictAws()
APP = App.from_env(AWS.env, client_factory=AWS.client, clock=lambda: NOW, sleep=lambda s: None,
                   metrics_sink=ListMetrics(), log=ListLogger(), emit=lambda line: None)


def run(event, sources: list[tuple[str, object, bytes | None]], whole_event_error: bool):
    """Handle ``event`` and check every property against the oracle."""
    AWS.reset()
    APP.metrics = ListMetrics()
    APP.log = ListLogger()
    # Hypothesis raises the recursion limit while it runs; the Lambda runtime has Python's
    # default, so the handler runs under that (a recursive encoder would fail here).
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        APP.handle(event)   # must not raise: no faults are injected
    finally:
        sys.setrecursionlimit(limit)
    assert AWS.violations == []
    m = APP.metrics
    exp = dict(errors=0, control=0, events=0, record=0, oversize=0, malformed=0)
    want_payloads: list[tuple[str, object]] = []
    want_events: list[object] = []
    for source_id, data, body in sources:
        kind, events = expect_payload(body)
        if kind == "error":
            exp["errors"] += 1
            want_payloads.append((source_id, data))
        elif kind == "control":
            exp["control"] += 1
        for ev in events:
            exp["events"] += 1
            c = classify_event(ev)
            exp[c] += 1
            if c == "malformed":
                want_events.append(ev)
    if whole_event_error:
        exp["errors"] += 1
    assert m.total("PayloadErrors") == exp["errors"]
    assert m.total("ControlMessages") == exp["control"]
    assert m.total("LogEvents") == exp["events"]
    assert m.total("CloudTrailRecords") == exp["record"]
    assert m.total("OversizeEvents") == exp["oversize"]
    assert m.total("MalformedEvents") == exp["malformed"]
    # recoverable whole from the queue or the archive
    records = AWS.failure_records()
    assert len(records) == exp["errors"] + exp["malformed"]
    payload_docs = [r for r in records if "data" in r]
    event_docs = [r for r in records if "data" not in r]
    if whole_event_error:
        (doc,) = [r for r in payload_docs if r["source"] == "event"]
        assert doc["data"] == event
    for source_id, data in want_payloads:
        (doc,) = [r for r in payload_docs if r["source"] == source_id]
        assert doc["data"] == data
        if source_id != "awslogs" and not source_id.startswith("record#"):
            assert doc["sequence_number"] == source_id
    assert len(event_docs) == len(want_events)
    for ev in want_events:
        assert any(_same_event(doc, ev) for doc in event_docs), ev
    # every alert reached both sinks, each within the limits the fakes enforce
    alerts = AWS.alerts()
    assert m.total("Alerts") == len({a["alert_id"] for a in alerts["sns"]}) \
        == len({a["alert_id"] for a in alerts["eventbridge"]})


def _same_event(doc: dict, ev: object) -> bool:
    if not isinstance(ev, dict):
        return doc.get("log_event") == ev
    if "log_event" in doc:
        return doc["log_event"] == ev
    return doc.get("message") == ev.get("message") and doc.get("log_event_id") == ev.get("id") \
        and doc.get("timestamp") == ev.get("timestamp")


# ----------------------------------------------------------------------------------- tests

@fuzz_settings(AWSLOGS_EXAMPLES)
@given(payloads())
def test_fuzz_direct_invocations(payload):
    data, body = payload
    run({"awslogs": {"data": data}}, [("awslogs", data, body)], False)


@st.composite
def kinesis_batches(draw):
    entries, sources, seen = [], [], set()
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    for n in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["ok"] * 6 + ["dup", "no_kinesis", "junk", "no_seq"]))
        data, body = draw(payloads())
        seq = f"4959{n:052d}"
        if kind == "dup" and seen:
            seq = sorted(seen)[0]
        if kind == "junk":
            rec = value(rng)
        elif kind == "no_kinesis":
            rec = {"eventSource": "aws:kinesis", "data": data}
        elif kind == "no_seq":
            rec = {"kinesis": {"data": data}}
        else:
            rec = {"kinesis": {"sequenceNumber": seq, "data": data}, "eventSource": "aws:kinesis"}
        entries.append(rec)
        usable = isinstance(rec, dict) and isinstance(rec.get("kinesis"), dict) \
            and isinstance(rec["kinesis"].get("sequenceNumber"), str) \
            and rec["kinesis"]["sequenceNumber"] not in seen
        if usable:
            seen.add(seq)
            sources.append((seq, data, body))
        else:
            sources.append((f"record#{n}", rec, None))
    return {"Records": entries}, sources


@fuzz_settings(KINESIS_EXAMPLES)
@given(kinesis_batches())
def test_fuzz_kinesis_batches(batch):
    event, sources = batch
    if not any(isinstance(r, dict) and isinstance(r.get("kinesis"), dict)
               for r in event["Records"]):
        run(event, [], True)   # not a Kinesis batch at all: the whole event is routed
    else:
        run(event, sources, False)


@st.composite
def top_level_events(draw):
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    kind = draw(st.sampled_from(["value", "dict", "awslogs", "records"]))
    if kind == "value":
        return value(rng)
    if kind == "dict":
        return {text(rng, 4): value(rng) for _ in range(rng.randint(0, 3))}
    if kind == "awslogs":
        return {"awslogs": rng.choice([value(rng), {"data": value(rng)}, {}])}
    return {"Records": [value(rng) for _ in range(rng.randint(0, 3))]}


@fuzz_settings(TOP_LEVEL_EXAMPLES)
@given(top_level_events())
def test_fuzz_top_level_shapes(event):
    if isinstance(event, dict) and isinstance(event.get("awslogs"), dict):
        data = event["awslogs"].get("data")
        run(event, [("awslogs", data, None)], False)
    elif isinstance(event, dict) and isinstance(event.get("Records"), list) and any(
            isinstance(r, dict) and isinstance(r.get("kinesis"), dict) for r in event["Records"]):
        raise AssertionError("generator never builds Kinesis records here")
    else:
        run(event, [], True)


# ------------------------------------------------------------------- with injected faults

FAULT_EXAMPLES = max(1, int(500 * SCALE))


@st.composite
def fault_plans(draw):
    """A seed for which calls fail: a ClientError (throttling, KMS, access denied) or a partial
    batch failure, each with the drawn probability."""
    return draw(st.integers(0, 2 ** 32)), draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]))


@fuzz_settings(FAULT_EXAMPLES)
@given(payloads(), fault_plans())
def test_fuzz_with_faults_only_the_documented_failure(payload, plan):
    from botocore.exceptions import ClientError

    from handlers.processor import DeliveryFailed
    seed, p = plan
    rng = random.Random(seed)
    lock = __import__("threading").Lock()

    def fail(op, request):
        with lock:
            r = rng.random()
        if r < p / 2:
            code = rng.choice(["ThrottlingException", "KMS.DisabledException", "AccessDenied"])
            return ClientError({"Error": {"Code": code, "Message": "injected"}}, op)
        return "partial" if r < p else None

    aws = StrictAws(fail=fail)
    app = App.from_env(aws.env, client_factory=aws.client, clock=lambda: NOW,
                       sleep=lambda s: None, metrics_sink=ListMetrics(), log=ListLogger(),
                       emit=lambda line: None)
    data, body = payload
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        app.handle({"awslogs": {"data": data}})
        raised = False
    except DeliveryFailed:
        raised = True     # the documented failure: Lambda retries the invocation
    finally:
        sys.setrecursionlimit(limit)
    assert aws.violations == []
    assert app.metrics.total("LogEvents") >= 0 and "LogEvents" in app.metrics.values
    if not raised:   # success means everything was delivered and routed
        alerts = aws.alerts()
        n = app.metrics.total("Alerts")
        assert len({a["alert_id"] for a in alerts["sns"]}) == n
        assert len({a["alert_id"] for a in alerts["eventbridge"]}) == n
        kind, events = expect_payload(body)
        malformed = sum(1 for ev in events if classify_event(ev) == "malformed")
        assert len(aws.failure_records()) == (kind == "error") + malformed
    elif p == 0.0:
        raise AssertionError("DeliveryFailed without any injected fault")
