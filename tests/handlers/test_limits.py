"""Byte limits recomputed from AWS's documented formulas, at limit-1, limit and limit+1, with
multibyte text (trap 13), through strict fakes that refuse what AWS would refuse.

The formulas are written here from aws-facts.md section 6, not imported from the code:
- SNS Publish/PublishBatch: 262,144 bytes per message *including* its attributes (name, DataType
  and value bytes); a PublishBatch holds at most 10 messages and 262,144 bytes in total.
- EventBridge PutEvents entry: 14 bytes for Time (if set) + UTF-8 bytes of Source, DetailType,
  Detail and each Resources entry; at most 10 entries.
- CloudWatch Logs PutLogEvents: sum of UTF-8 message bytes + 26 bytes per event <= 1,048,576.
- Decompression: ``MAX_DECOMPRESSED_BYTES`` is the largest size accepted; one byte more is refused
  and a bomb is never inflated past the cap (checked with tracemalloc).
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import orjson
import pytest

from handlers import alerts as A
from handlers.detection.patterns import compile_pattern
from handlers.pipeline import PayloadError, decode_subscription_data, decompress
from handlers.detection.rules import Rule
from handlers.sinks.eventbridge import EventBridgeSink, eventbridge_entry_size
from handlers.sinks.failure_queue import FailureQueue
from handlers.sinks.sns import SnsSink
from handlers.sinks.base import pack

SNS_LIMIT = 262_144
SNS_BATCH = 10
EB_BATCH = 10
SQS_LIMIT = 262_144          # the smallest MaximumMessageSize a queue may still have (trap 13)
PUT_LOG_EVENTS_LIMIT = 1_048_576
PUT_LOG_EVENTS_OVERHEAD = 26


def sns_message_size(entry: dict) -> int:
    size = len(entry["Message"].encode("utf-8"))
    for name, attr in (entry.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(attr["DataType"].encode())
        size += len(attr.get("StringValue", "").encode())
    return size


def eb_entry_size(entry: dict) -> int:
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if entry.get(key) is not None:
            size += len(entry[key].encode("utf-8"))
    return size + sum(len(r.encode("utf-8")) for r in entry.get("Resources") or [])


class StrictSns:
    def __init__(self, limit: int = SNS_LIMIT) -> None:
        self.limit = limit
        self.batches: list[list[dict]] = []

    def publish_batch(self, TopicArn, PublishBatchRequestEntries):  # noqa: N803
        entries = PublishBatchRequestEntries
        assert 1 <= len(entries) <= SNS_BATCH, "PublishBatch holds 1..10 messages"
        sizes = [sns_message_size(e) for e in entries]
        assert max(sizes) <= self.limit, f"message of {max(sizes)} bytes > {self.limit}"
        assert sum(sizes) <= self.limit, f"batch of {sum(sizes)} bytes > {self.limit}"
        self.batches.append(entries)
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}


class StrictEvents:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batches: list[list[dict]] = []

    def put_events(self, Entries):  # noqa: N803
        assert 1 <= len(Entries) <= EB_BATCH
        sizes = [eb_entry_size(e) for e in Entries]
        assert max(sizes) <= self.limit, f"entry of {max(sizes)} bytes > {self.limit}"
        assert sum(sizes) <= self.limit, f"request of {sum(sizes)} bytes > {self.limit}"
        self.batches.append(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


class StrictSqs:
    def __init__(self) -> None:
        self.batches: list[list[dict]] = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803
        assert 1 <= len(Entries) <= 10
        sizes = [len(e["MessageBody"].encode("utf-8")) for e in Entries]
        assert max(sizes) <= SQS_LIMIT and sum(sizes) <= SQS_LIMIT
        self.batches.append(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


RULE = Rule(id="limits", title="Limits", severity="HIGH",
            pattern=compile_pattern("{ $.eventName = UpdateTrail }"))


def alert_with_pad(pad: str, i: int = 0) -> dict:
    rec = {"eventVersion": "1.11", "eventID": f"ev-{i}", "eventName": "UpdateTrail",
           "eventTime": "2026-11-20T10:00:00Z", "awsRegion": "eu-west-1",
           "recipientAccountId": "111122223333",
           "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/a"},
           "requestParameters": {"pad": pad}}
    env = {"owner": "111122223333", "logGroup": "g", "logStream": "s"}
    return A.rule_alert(RULE, rec, env, {"id": f"le-{i}", "timestamp": 1}, 1.0)


def pad_of(n_bytes: int, char: str) -> str:
    unit = len(char.encode())
    return char * (n_bytes // unit) + "a" * (n_bytes % unit)


def alert_of_size(n_bytes: int, char: str, i: int = 0) -> dict:
    """An alert whose JSON serialisation is exactly n_bytes UTF-8 bytes."""
    base = len(orjson.dumps(alert_with_pad("", i)))
    alert = alert_with_pad(pad_of(n_bytes - base, char), i)
    assert len(orjson.dumps(alert)) == n_bytes
    return alert


def sns_attribute_bytes() -> int:
    fake = StrictSns()
    SnsSink("arn:aws:sns:eu-west-1:111122223333:t", client_factory=lambda s: fake,
            sleep=lambda s: None).publish([alert_with_pad("x")])
    (entry,) = fake.batches[0]
    assert entry["MessageAttributes"], "alerts carry routing attributes"
    return sns_message_size(entry) - len(entry["Message"].encode())


# ------------------------------------------------------------------------------- pack

@pytest.mark.parametrize("second,batches", [(155, 1), (156, 1), (157, 2)])
def test_pack_total_bytes_boundary(second, batches):
    assert len(pack([("a", 100), ("b", second)], 10, 256)) == batches


@pytest.mark.parametrize("count,batches", [(9, 1), (10, 1), (11, 2)])
def test_pack_count_boundary(count, batches):
    out = pack([(str(i), 1) for i in range(count)], 10, 1000)
    assert len(out) == batches and [i for b in out for i in b] == [str(i) for i in range(count)]


def test_pack_item_of_exactly_the_limit_is_alone_and_one_more_byte_is_refused():
    assert pack([("a", 1), ("b", 256), ("c", 1)], 10, 256) == [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError):
        pack([("a", 257)], 10, 256)


# ------------------------------------------------------------------------------- SNS

@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_sns_message_plus_attributes_at_the_limit(char, delta):
    attrs = sns_attribute_bytes()
    alert = alert_of_size(SNS_LIMIT - attrs + delta, char)
    fake = StrictSns()
    failed = SnsSink("arn:aws:sns:eu-west-1:111122223333:t", client_factory=lambda s: fake,
                     sleep=lambda s: None).publish([alert])
    assert failed == []
    (entry,) = fake.batches[0]
    body = orjson.loads(entry["Message"])
    if delta <= 0:     # fits exactly as it is: must not be truncated
        assert entry["Message"].encode() == orjson.dumps(alert)
        assert not body.get("truncated_fields")
    else:              # one byte over: truncated, still identified, within the limit
        assert "requestParameters" in body["truncated_fields"]
        assert body["alert_id"] == alert["alert_id"]
    assert sns_message_size(entry) <= SNS_LIMIT


@pytest.mark.parametrize("delta,calls", [(-1, 1), (0, 1), (1, 2)])
def test_sns_publish_batch_total_boundary(delta, calls):
    attrs = sns_attribute_bytes()
    half = SNS_LIMIT // 2
    alerts = [alert_of_size(half - attrs, "é", 0), alert_of_size(half - attrs + delta, "é", 1)]
    fake = StrictSns()
    SnsSink("arn:aws:sns:eu-west-1:111122223333:t", client_factory=lambda s: fake,
            sleep=lambda s: None).publish(alerts)
    assert len(fake.batches) == calls
    sent = [orjson.loads(e["Message"]) for b in fake.batches for e in b]
    assert not any(m.get("truncated_fields") for m in sent)


def test_sns_batches_hold_at_most_ten_messages():
    fake = StrictSns()
    SnsSink("arn:aws:sns:eu-west-1:111122223333:t", client_factory=lambda s: fake,
            sleep=lambda s: None).publish([alert_with_pad("x", i) for i in range(21)])
    assert [len(b) for b in fake.batches] == [10, 10, 1]


def test_sns_attribute_size_counts_name_type_and_value():
    attrs = {"kind": {"DataType": "String", "StringValue": "rule_match"},
             "sévérité": {"DataType": "String", "StringValue": "HÏGH"}}
    expected = (4 + 6 + 10) + (len("sévérité".encode()) + 6 + len("HÏGH".encode()))
    assert SnsSink.attributes_size(attrs) == expected == 20 + 11 + 6 + 5


# ------------------------------------------------------------------------------- EventBridge

def test_eventbridge_entry_size_is_the_documented_formula():
    entry = {"Source": "trailwatch", "DetailType": "trailwatch alert", "Detail": '{"k":"é"}',
             "Resources": ["arn:aws:iam::1:role/r", "ü"], "EventBusName": "not-counted-1234"}
    assert eventbridge_entry_size(entry) == 10 + 16 + 10 + 21 + 2
    assert eventbridge_entry_size(dict(entry, Time="2026-11-20T10:00:00Z")) == 14 + 59
    assert eventbridge_entry_size({"Source": "s"}) == 1


@pytest.mark.parametrize("limit", [4_096, 262_144])
@pytest.mark.parametrize("char", ["a", "€"])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_eventbridge_detail_leaves_room_for_source_and_detail_type(limit, char, delta):
    probe = StrictEvents(limit)
    EventBridgeSink("bus", client_factory=lambda s: probe, sleep=lambda s: None,
                    max_entry_bytes=limit).publish([alert_with_pad("x")])
    (entry,) = probe.batches[0]
    fixed = eb_entry_size(entry) - len(entry["Detail"].encode())
    assert fixed >= len("trailwatch")    # Source and DetailType count toward the entry
    alert = alert_of_size(limit - fixed + delta, char)
    fake = StrictEvents(limit)
    assert EventBridgeSink("bus", client_factory=lambda s: fake, sleep=lambda s: None,
                           max_entry_bytes=limit).publish([alert]) == []
    (entry,) = fake.batches[0]
    assert eb_entry_size(entry) <= limit
    detail = orjson.loads(entry["Detail"])
    assert bool(detail.get("truncated_fields")) is (delta > 0)


@pytest.mark.parametrize("delta,calls", [(0, 1), (1, 2)])
def test_eventbridge_request_total_boundary(delta, calls):
    limit = 8_192
    probe = StrictEvents(limit)
    EventBridgeSink("bus", client_factory=lambda s: probe, sleep=lambda s: None,
                    max_entry_bytes=limit, max_request_bytes=limit).publish([alert_with_pad("x")])
    (entry,) = probe.batches[0]
    fixed = eb_entry_size(entry) - len(entry["Detail"].encode())
    half = limit // 2
    alerts = [alert_of_size(half - fixed, "a", 0), alert_of_size(half - fixed + delta, "a", 1)]
    fake = StrictEvents(limit)
    EventBridgeSink("bus", client_factory=lambda s: fake, sleep=lambda s: None,
                    max_entry_bytes=limit, max_request_bytes=limit).publish(alerts)
    assert len(fake.batches) == calls


# ------------------------------------------------------------------------------- SQS

class RecordingS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket, Key, Body, **_):  # noqa: N803
        assert isinstance(Body, bytes) and 1 <= len(Key.encode()) <= 1024
        self.objects[(Bucket, Key)] = Body
        return {}


def failure_body_size(failure: dict) -> int:
    """The record as compact JSON in UTF-8 (SQS carries any of these characters as they are)."""
    import json
    return len(json.dumps(failure, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def failure_of_size(n_bytes: int, char: str, i: int = 0) -> dict:
    shell = {"reason": "invalid_json", "message": "", "log_event_id": str(i)}
    return dict(shell, message=pad_of(n_bytes - failure_body_size(shell), char))


@pytest.mark.parametrize("char", ["a", "😀"])
def test_failure_queue_bodies_fit_the_smallest_sqs_limit(char):
    """Issue 11: records over the queue's limit are kept whole in the S3 archive; the queue
    message is a pointer that fits the smallest SQS MaximumMessageSize."""
    fake, s3 = StrictSqs(), RecordingS3()
    big = char * 300_000
    failures = [{"reason": "invalid_json", "message": big, "log_event_id": str(i)}
                for i in range(3)]
    factory = {"sqs": fake, "s3": s3}.__getitem__
    assert FailureQueue("q", client_factory=factory, sleep=lambda s: None,
                        archive_bucket="archive").send(failures) == []
    sent = [orjson.loads(e["MessageBody"]) for b in fake.batches for e in b]
    assert [m["log_event_id"] for m in sent] == ["0", "1", "2"]
    for m, f in zip(sent, failures, strict=True):
        assert m["archive"]["bucket"] == "archive"
        assert m["archived_bytes"] == failure_body_size(f)
        assert orjson.loads(s3.objects[("archive", m["archive"]["key"])]) == f   # whole
    # Without an archive nothing is cut: each record is reported undelivered, none is sent.
    fake2 = StrictSqs()
    bad = FailureQueue("q", client_factory=lambda s: fake2, sleep=lambda s: None).send(failures)
    assert [b["id"] for b in bad] == ["f0", "f1", "f2"] and fake2.batches == []


@pytest.mark.parametrize("char", ["a", "€"])
@pytest.mark.parametrize("delta,archived", [(-1, False), (0, False), (1, True)])
def test_failure_record_of_exactly_the_queue_limit_is_sent_whole(char, delta, archived):
    fake, s3 = StrictSqs(), RecordingS3()
    failure = failure_of_size(SQS_LIMIT + delta, char)
    assert failure_body_size(failure) == SQS_LIMIT + delta
    factory = {"sqs": fake, "s3": s3}.__getitem__
    assert FailureQueue("q", client_factory=factory, sleep=lambda s: None,
                        archive_bucket="archive").send([failure]) == []
    ((entry,),) = fake.batches
    msg = orjson.loads(entry["MessageBody"])
    assert bool(s3.objects) is archived
    assert ("archive" in msg) is archived
    if not archived:
        assert msg == failure


# ------------------------------------------------------------------------------- PutLogEvents

def put_log_events_size(messages: list[str]) -> int:
    return sum(len(m.encode("utf-8")) + PUT_LOG_EVENTS_OVERHEAD for m in messages)


@pytest.mark.parametrize("char", ["a", "é", "😀"])
@pytest.mark.parametrize("delta,oversize", [(-1, False), (0, False), (1, True)])
def test_largest_event_cloudtrail_sends_passes_and_fits_one_put_log_events(char, delta, oversize):
    """CloudTrail's cap (256 KB, not CWL's 1 MB event size): a maximal CloudTrail event is a
    record, still fits one PutLogEvents batch with its 26 bytes; one byte more is oversize."""
    from handlers.pipeline import Pipeline
    head = '{"eventVersion":"1.11","eventID":"big","eventTime":"2025-11-20T10:00:00Z","p":"'
    room = 262_144 + delta - len(head) - 2
    msg = head + pad_of(room, char) + '"}'
    assert len(msg.encode()) == 262_144 + delta
    assert put_log_events_size([msg]) <= PUT_LOG_EVENTS_LIMIT
    env = {"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
           "logEvents": [{"id": "1", "timestamp": 1_763_632_800_000, "message": msg}]}
    res = Pipeline([], clock=lambda: 1_763_632_900.0).process_envelope(env)
    assert (res.oversize, res.records) == ((1, 0) if oversize else (0, 1))


def test_put_log_events_batch_formula():
    # 26 bytes per event: 1,048,550 bytes of message is the most one event can carry.
    assert put_log_events_size(["a" * 1_048_550]) == PUT_LOG_EVENTS_LIMIT
    assert put_log_events_size(["a" * 262_118] * 4) == PUT_LOG_EVENTS_LIMIT
    assert put_log_events_size(["é" * 131_059] * 4) == PUT_LOG_EVENTS_LIMIT


# ------------------------------------------------------------------------------- decompression

def _zlib_ng():
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover
        return []
    return [zlib_ng]


BACKENDS = [zlib, *_zlib_ng()]


@pytest.mark.parametrize("lib", BACKENDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("size,ok", [(4095, True), (4096, True), (4097, False)])
def test_decompression_cap_is_inclusive(lib, size, ok):
    raw = gzip.compress(("é" * (size // 2) + "a" * (size % 2)).encode())
    if ok:
        assert len(decompress(raw, 4096, lib)) == size
    else:
        with pytest.raises(PayloadError) as info:
            decompress(raw, 4096, lib)
        assert info.value.kind == "too_large"


@pytest.mark.parametrize("delta,ok", [(-1, True), (0, True), (1, False)])
def test_subscription_payload_cap_boundary(delta, ok):
    import base64
    body = orjson.dumps({"messageType": "CONTROL_MESSAGE", "logEvents": [], "pad": ""})
    cap = 10_000
    doc = {"messageType": "CONTROL_MESSAGE", "logEvents": [],
           "pad": "é" * ((cap + delta - len(body)) // 2) + "a" * ((cap + delta - len(body)) % 2)}
    raw = orjson.dumps(doc)
    assert len(raw) == cap + delta
    data = base64.b64encode(gzip.compress(raw)).decode()
    if ok:
        assert decode_subscription_data(data, cap)["messageType"] == "CONTROL_MESSAGE"
    else:
        with pytest.raises(PayloadError) as info:
            decode_subscription_data(data, cap)
        assert info.value.kind == "too_large"


def _bomb(n_bytes: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(n_bytes >> 20)]
    return b"".join(parts) + c.flush()


@pytest.mark.parametrize("lib", BACKENDS, ids=lambda m: m.__name__)
def test_bomb_is_refused_within_a_memory_bound(lib):
    cap = 1 << 20                    # 1 MiB cap
    bomb = _bomb(64 << 20)           # 64 MiB of zeros in ~64 KB
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(PayloadError) as info:
            decompress(bomb, cap, lib)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "too_large"
    assert peak < 4 * cap, f"peak {peak} bytes while refusing a bomb with a {cap}-byte cap"


def test_eventbridge_batches_hold_at_most_ten_entries():
    fake = StrictEvents(262_144)
    EventBridgeSink("bus", client_factory=lambda s: fake, sleep=lambda s: None).publish(
        [alert_with_pad("x", i) for i in range(21)])
    assert [len(b) for b in fake.batches] == [10, 10, 1]
    assert all(e["EventBusName"] == "bus" and e["Source"] and e["DetailType"]
               for b in fake.batches for e in b)


class PartlyFailingEvents(StrictEvents):
    """Fails the entries whose Detail names one of ``bad`` (by eventID), every time."""

    def __init__(self, bad):
        super().__init__(262_144)
        self.bad = bad

    def put_events(self, Entries):  # noqa: N803
        super().put_events(Entries)
        out = [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}
               if orjson.loads(e["Detail"])["event"]["eventID"] in self.bad else {"EventId": "x"}
               for e in Entries]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in out), "Entries": out}


def test_eventbridge_failed_entries_are_mapped_to_their_alerts():
    alerts = [alert_with_pad("x", i) for i in range(5)]
    fake = PartlyFailingEvents({"ev-1", "ev-3"})
    sleeps = []
    failed = EventBridgeSink("bus", client_factory=lambda s: fake,
                             sleep=sleeps.append).publish(alerts)
    assert sorted(f["id"] for f in failed) == sorted([alerts[1]["alert_id"],
                                                      alerts[3]["alert_id"]])
    assert all("ThrottlingException" in f["error"] for f in failed)
    # retried (only the failing two) with bounded backoff, then reported
    assert len(fake.batches) > 1 and all(len(b) == 2 for b in fake.batches[1:])
    assert sleeps and all(s > 0 for s in sleeps)


def test_pack_starts_each_new_batch_from_zero_bytes():
    assert pack([("a", 200), ("b", 100), ("c", 156)], 10, 256) == [["a"], ["b", "c"]]
    assert pack([("a", 1)] * 10 + [("b", 128), ("c", 128)], 10, 256) == [["a"] * 10, ["b", "c"]]


@pytest.mark.parametrize("lib", BACKENDS, ids=lambda m: m.__name__)
def test_decompression_errors_explain_themselves(lib):
    with pytest.raises(PayloadError) as big:
        decompress(gzip.compress(b"x" * 5000), 4096, lib)
    assert "4096" in big.value.detail
    with pytest.raises(PayloadError) as cut:
        decompress(gzip.compress(b"x" * 5000)[:-12], 8192, lib)
    assert cut.value.kind == "truncated" and cut.value.detail
    with pytest.raises(PayloadError) as junk:
        decompress(b"definitely not gzip", 8192, lib)
    assert junk.value.kind == "not_compressed" and junk.value.detail
