"""Where alerts and unprocessable records go: SNS, EventBridge, the failure queue, or the log.

Every sink packs its requests within the service's documented limits *in bytes* (moto does not
enforce them, so these functions do), retries partial failures with bounded backoff, and returns
the ids it could not deliver so the caller can fail the invocation (or the Kinesis record).

boto3 is imported lazily, on the first publish: a cold start that raises no alert never pays
for it.
"""

from __future__ import annotations

import re
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from handlers import __version__
from handlers.alerts import detail_type, fit, routing_keys
from handlers.alerts import fit
from handlers.jsonsafe import dumps as safe_dumps

SNS_MAX_BYTES = 262_144          # Publish / PublishBatch: message + attributes, and batch total
SNS_MAX_BATCH = 10
EVENTBRIDGE_MAX_ENTRY_BYTES = 262_144   # API text; AWS raised event size to 1 MB in 2026: configurable
EVENTBRIDGE_MAX_REQUEST_BYTES = 262_144
EVENTBRIDGE_MAX_BATCH = 10
SQS_MAX_BYTES = 262_144          # FAILURE_QUEUE_MAX_BYTES default: queues created with 256 KiB keep it
SQS_MAX_BATCH_BYTES = 1_048_576  # SendMessageBatch total (and the largest MaximumMessageSize)
SQS_MAX_BATCH = 10
SNS_MAX_ATTRIBUTES = 10
SNS_ATTRIBUTE_CHARS = 128        # our cap on a routing attribute value
EVENT_SOURCE = "trailwatch"      # contract name; detail-type is one per kind (alerts.DETAIL_TYPES)

ClientFactory = Callable[[str], Any]
_GROUP_ID_CHARS = re.compile(r"[^A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]")


def _attr_char(c: str) -> str:
    # SNS accepts XML 1.0 characters in a String attribute value; anything else becomes "?".
    ok = c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
    return c if ok else "?"


def _attr_value(value: str) -> str:
    value = value[:SNS_ATTRIBUTE_CHARS]
    if value.isascii() and value.isprintable():
        return value
    return "".join(map(_attr_char, value))


# (name, value) -> (attribute, its size): most values repeat (kind, rule, severity, account,
# region, event name); bounded, since record values are attacker-chosen. Attributes are shared
# between messages and never modified.
_ATTRIBUTES: dict[tuple[str, str], tuple[dict[str, str], int]] = {}
_ATTRIBUTES_MAX = 1024
_ATTRIBUTE_SETS: dict[tuple[Any, ...], tuple[dict[str, dict[str, str]], int]] = {}


def _make_attribute(name: str, value: str) -> tuple[dict[str, str], int]:
    """A String message attribute and the bytes SNS counts for it (name, "String", value); size
    0 when the cleaned value is empty (SNS rejects empty values)."""
    clean = _attr_value(value)
    size = len(name) + 6 + len(clean.encode()) if clean else 0   # 6: "String"
    return {"DataType": "String", "StringValue": clean}, size


def _attribute(name: str, value: str) -> tuple[dict[str, str], int]:
    """:func:`_make_attribute`, cached on the capped value (all ``_attr_value`` reads)."""
    value = value[:SNS_ATTRIBUTE_CHARS]
    hit = _ATTRIBUTES.get((name, value))
    if hit is None:
        hit = _make_attribute(name, value)
        if len(_ATTRIBUTES) >= _ATTRIBUTES_MAX:
            _ATTRIBUTES.clear()
        _ATTRIBUTES[(name, value)] = hit
    return hit


def _group_id(alert: dict[str, Any]) -> str:
    """FIFO ``MessageGroupId``: the event's account (ordering per account), max 128 chars."""
    gid = _GROUP_ID_CHARS.sub("_", routing_keys(alert).get("account", ""))[:128]
    return gid or "trailwatch"


# botocore's defaults (60 s connect and read timeouts, retries on top) can outlive a 60 s Lambda.
# Calls here are small: fail a stuck one fast and let the sink's own loop retry within the deadline.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
BOTOCORE_MAX_ATTEMPTS = 2     # total attempts per call inside botocore (its throttling backoff)
MAX_POOL_CONNECTIONS = 32     # >= the processor's publishing concurrency, so threads never queue


def client_config() -> Any:
    from botocore.config import Config

    return Config(user_agent_extra=f"trailwatch/{__version__}",
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  max_pool_connections=MAX_POOL_CONNECTIONS,
                  retries={"mode": "standard", "total_max_attempts": BOTOCORE_MAX_ATTEMPTS})


def default_client_factory(service: str) -> Any:
    import boto3  # deferred: keeps the cold start small

    return boto3.client(service, config=client_config())


_LAZY_LOCK = threading.Lock()


class _Lazy:
    def __init__(self, service: str, factory: ClientFactory) -> None:
        self.service = service
        self.factory = factory
        self._client: Any = None

    def __call__(self) -> Any:
        if self._client is None:
            with _LAZY_LOCK:   # sinks publish from several threads; build the client once
                if self._client is None:
                    self._client = self.factory(self.service)
        return self._client


def pack(items: Sequence[tuple[str, int]], max_count: int, max_total: int) -> list[list[str]]:
    """Greedy batching of (id, size) pairs so each batch has <= max_count items and total bytes."""
    batches: list[list[str]] = []
    cur: list[str] = []
    total = 0
    for ident, size in items:
        if size > max_total:
            raise ValueError(f"item {ident} is {size} bytes, larger than a whole batch ({max_total})")
        if cur and (len(cur) == max_count or total + size > max_total):
            batches.append(cur)
            cur, total = [], 0
        cur.append(ident)
        total += size
    if cur:
        batches.append(cur)
    return batches


class _RetryingSink:
    """Send entries in batches; retry the ones a partial failure reports, with bounded backoff.

    A whole call that raises (``ClientError`` after botocore's own retries, a timeout, a bug in a
    batch) fails that batch's entries, which are retried like partial failures. With a
    ``deadline`` (on ``clock``), no call starts and no backoff sleeps past it: what is left is
    reported undelivered, so the caller can fail the invocation before Lambda kills it.
    """

    name = "sink"
    max_attempts = 4
    base_delay = 0.2
    max_delay = 2.0

    def __init__(self, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sleep = sleep
        self.clock = clock
        self.calls = 0

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _deliver(self, entries: dict[str, Any], batches: list[list[str]],
                 deadline: float | None = None) -> list[dict[str, str]]:
        pending = [i for b in batches for i in b]
        errors: dict[str, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                if deadline is not None and self.clock() + delay >= deadline:
                    break
                self.sleep(delay)
            failed: list[str] = []
            for batch in self._rebatch(pending, batches, attempt):
                if deadline is not None and self.clock() >= deadline:
                    for ident in batch:
                        failed.append(ident)
                        errors.setdefault(ident, "deadline: not sent before the invocation's "
                                                 "time ran out")
                    continue
                self.calls += 1
                try:
                    results = self._send_batch(batch, entries)
                except Exception as e:  # noqa: BLE001 - a whole-call failure is this batch's
                    results = [(ident, f"{type(e).__name__}: {e}") for ident in batch]
                for ident, err in results:
                    failed.append(ident)
                    errors[ident] = err
            if not failed:
                return []
            pending = failed
        return [{"id": i, "error": errors.get(i, "deadline")} for i in pending]

    def _rebatch(self, pending: list[str], batches: list[list[str]], attempt: int) -> list[list[str]]:
        if attempt == 0:
            return batches
        keep = set(pending)
        return [[i for i in b if i in keep] for b in batches if any(i in keep for i in b)]


def _prepare_each(prepare: Callable[[Sequence[dict[str, Any]]], tuple[dict[str, Any], list[Any]]],
                  alerts: Sequence[dict[str, Any]]
                  ) -> tuple[dict[str, Any], list[tuple[str, int]], list[dict[str, str]]]:
    """``prepare`` over all alerts; if it raises, alert by alert, so one alert that cannot be
    prepared (e.g. ``AlertTooLarge``) is that alert's failure, not its batch's."""
    try:
        entries, sizes = prepare(alerts)
        return entries, sizes, []
    except Exception:  # noqa: BLE001 - isolate the bad alert below
        pass
    entries, sizes, bad = {}, [], []
    for alert in alerts:
        try:
            e, sz = prepare([alert])
        except Exception as exc:  # noqa: BLE001
            bad.append({"id": str(alert.get("alert_id")), "error": f"{type(exc).__name__}: {exc}"})
            continue
        entries.update(e)
        sizes += sz
    return entries, sizes, bad


class SnsSink(_RetryingSink):
    """Publishes each alert as the SNS message body (the alert JSON itself), via PublishBatch."""

    name = "sns"

    def __init__(self, topic_arn: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep, max_bytes: int = SNS_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sleep, clock)
        self.topic_arn = topic_arn
        self.client = _Lazy("sns", client_factory)
        self.max_bytes = max_bytes

    @staticmethod
    def attributes(alert: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Message attributes for SNS subscription filter policies (contract names):
        ``alert_id kind rule_id severity account region event_name expected_change``."""
        return SnsSink.attributes_with_size(alert)[0]

    @staticmethod
    def attributes_with_size(alert: dict[str, Any]) -> tuple[dict[str, dict[str, str]], int]:
        """(attributes, their size in bytes). Keys without a value are left out (SNS rejects
        empty values); values are cleaned of characters SNS refuses and capped."""
        keys = routing_keys(alert)
        ident = keys.pop("alert_id", None)
        # Everything but the alert id repeats from alert to alert: built once per combination.
        # Keyed on the capped values (record fields are attacker-sized: a warm function must
        # not keep them alive).
        pairs = tuple(keys.items())
        if pairs and max(map(len, keys.values())) > SNS_ATTRIBUTE_CHARS:
            pairs = tuple((k, v[:SNS_ATTRIBUTE_CHARS]) for k, v in pairs)
        shared = (pairs, bool(alert.get("expected_change")))
        hit = _ATTRIBUTE_SETS.get(shared)
        if hit is None:
            rest: dict[str, dict[str, str]] = {}
            size = 0
            for k, v in keys.items():
                attr, n = _attribute(k, v)
                if n:
                    rest[k] = attr
                    size += n
            attr, n = _attribute("expected_change", "true" if shared[1] else "false")
            rest["expected_change"] = attr
            hit = (rest, size + n)
            if len(_ATTRIBUTE_SETS) >= _ATTRIBUTES_MAX:
                _ATTRIBUTE_SETS.clear()
            _ATTRIBUTE_SETS[shared] = hit
        rest, size = hit
        attrs: dict[str, dict[str, str]] = {}
        if ident is not None:      # unique per alert: not worth a cache entry
            attr, n = _make_attribute("alert_id", ident)
            if n:
                attrs["alert_id"] = attr
                size += n
        attrs.update(rest)
        assert len(attrs) <= SNS_MAX_ATTRIBUTES
        return attrs, size

    @staticmethod
    def attributes_size(attrs: dict[str, dict[str, str]]) -> int:
        """SNS counts attribute name, data type and value bytes toward the 256 KB message size."""
        return sum(len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
                   for k, v in attrs.items())

    @property
    def fifo(self) -> bool:
        return self.topic_arn.endswith(".fifo")

    def prepare(self, alerts: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        fifo = self.fifo
        for alert in alerts:
            attrs, overhead = self.attributes_with_size(alert)
            body = fit(alert, self.max_bytes - overhead)
            ident = alert["alert_id"]
            entry = {"Id": ident, "Message": body.decode("utf-8"), "MessageAttributes": attrs}
            if fifo:   # FIFO topic: ordered per account, deduplicated by alert id for 5 minutes
                entry["MessageGroupId"] = _group_id(alert)
                entry["MessageDeduplicationId"] = ident
            entries[ident] = entry
            sizes.append((ident, len(body) + overhead))
        return entries, sizes

    def publish(self, alerts: Sequence[dict[str, Any]],
                deadline: float | None = None) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes, bad = _prepare_each(self.prepare, alerts)
        return bad + self._deliver(entries, pack(sizes, SNS_MAX_BATCH, self.max_bytes), deadline)

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().publish_batch(TopicArn=self.topic_arn,
                                           PublishBatchRequestEntries=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])]


def eventbridge_entry_size(entry: dict[str, Any]) -> int:
    """AWS's documented PutEvents entry-size calculation."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if entry.get(key):
            size += len(entry[key].encode("utf-8"))
    for res in entry.get("Resources") or ():
        size += len(res.encode("utf-8"))
    return size


class EventBridgeSink(_RetryingSink):
    name = "eventbridge"

    def __init__(self, bus_name: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep,
                 max_entry_bytes: int = EVENTBRIDGE_MAX_ENTRY_BYTES,
                 max_request_bytes: int = EVENTBRIDGE_MAX_REQUEST_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sleep, clock)
        self.bus_name = bus_name
        self.client = _Lazy("events", client_factory)
        self.max_entry_bytes = max_entry_bytes
        # A request must at least hold one maximal entry.
        self.max_request_bytes = max(max_request_bytes, max_entry_bytes)

    def prepare(self, alerts: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        for alert in alerts:
            dtype = detail_type(alert)
            resources = [r for r in alert.get("resources") or () if isinstance(r, str)]
            fixed = eventbridge_entry_size({"Source": EVENT_SOURCE, "DetailType": dtype,
                                            "Resources": resources})
            body = fit(alert, self.max_entry_bytes - fixed)
            entry = {"Source": EVENT_SOURCE, "DetailType": dtype, "Resources": resources,
                     "Detail": body.decode("utf-8"), "EventBusName": self.bus_name}
            entries[alert["alert_id"]] = entry
            sizes.append((alert["alert_id"], eventbridge_entry_size(entry)))
        return entries, sizes

    def publish(self, alerts: Sequence[dict[str, Any]],
                deadline: float | None = None) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes, bad = _prepare_each(self.prepare, alerts)
        return bad + self._deliver(entries, pack(sizes, EVENTBRIDGE_MAX_BATCH,
                                                  self.max_request_bytes), deadline)

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().put_events(Entries=[entries[i] for i in ids])
        if not resp.get("FailedEntryCount"):
            return []
        # Result entries are in request order.
        return [(ident, f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}")
                for ident, r in zip(ids, resp.get("Entries", []), strict=False) if r.get("ErrorCode")]


class FailureQueue(_RetryingSink):
    """SQS queue for records and payloads trailwatch could not process (never dropped, never cut).

    Each failure record is serialised losslessly (:func:`handlers.jsonsafe.dumps`). A record that
    does not fit the queue's ``MaximumMessageSize`` (``max_bytes``, env ``FAILURE_QUEUE_MAX_BYTES``)
    is written whole to the S3 failure archive (``archive_bucket``, env
    ``FAILURE_ARCHIVE_BUCKET``) and the queue message is a pointer: the record's small keys plus
    ``archive: {"bucket", "key"}``. Without an archive bucket such a record is undeliverable (the
    invocation fails and Lambda's retry/on-failure destination keeps the event).
    """

    name = "failure_queue"
    POINTER_KEYS = ("reason", "detail", "source", "sequence_number", "log_event_id", "timestamp",
                    "owner", "log_group", "log_stream")

    def __init__(self, queue_url: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep, max_bytes: int = SQS_MAX_BYTES,
                 archive_bucket: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(sleep, clock)
        self.queue_url = queue_url
        self.client = _Lazy("sqs", client_factory)
        self.s3 = _Lazy("s3", client_factory)
        self.max_bytes = max_bytes
        self.archive_bucket = archive_bucket or None
        self.wall_clock = wall_clock

    @staticmethod
    def body(failure: dict[str, Any]) -> bytes:
        """The whole record as JSON: lossless for any value, and only characters SQS accepts."""
        return safe_dumps(failure)

    def pointer(self, failure: dict[str, Any], bucket: str, key: str, size: int) -> bytes:
        cap = max(64, min(1024, self.max_bytes // 16))
        doc: dict[str, Any] = {}
        for k in self.POINTER_KEYS:
            if k in failure:
                v = safe_dumps(failure[k])
                doc[k] = failure[k] if len(v) <= cap else \
                    {"trailwatch_truncated": True, "original_bytes": len(v),
                     "preview": v[: cap // 8].decode("ascii", "ignore")}
        doc["archive"] = {"bucket": bucket, "key": key}
        doc["archived_bytes"] = size
        return safe_dumps(doc)

    def archive(self, body: bytes) -> tuple[str, str]:
        assert self.archive_bucket
        day = time.strftime("%Y/%m/%d", time.gmtime(self.wall_clock()))
        key = f"failures/{day}/{hashlib.sha256(body).hexdigest()}.json"   # same record, same key
        self.s3().put_object(Bucket=self.archive_bucket, Key=key, Body=body,
                             ContentType="application/json")
        return self.archive_bucket, key

    def send(self, failures: Sequence[dict[str, Any]],
             deadline: float | None = None) -> list[dict[str, str]]:
        if not failures:
            return []
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        bad: list[dict[str, str]] = []
        for n, failure in enumerate(failures):
            ident = f"f{n}"
            try:
                body = self.body(failure)
                if len(body) > self.max_bytes:
                    if not self.archive_bucket:
                        raise ValueError(f"record of {len(body)} bytes exceeds the queue's "
                                         f"{self.max_bytes} (FAILURE_QUEUE_MAX_BYTES) and no "
                                         f"FAILURE_ARCHIVE_BUCKET is set")
                    if deadline is not None and self.clock() >= deadline:
                        raise TimeoutError("deadline: not archived before the time ran out")
                    bucket, key = self.archive(body)
                    body = self.pointer(failure, bucket, key, len(body))
            except Exception as e:  # noqa: BLE001 - this record's failure, not the batch's
                bad.append({"id": ident, "error": f"{type(e).__name__}: {e}"})
                continue
            entries[ident] = {"Id": ident, "MessageBody": body.decode("utf-8")}
            sizes.append((ident, len(body)))
        return bad + self._deliver(entries, pack(sizes, SQS_MAX_BATCH, min(SQS_MAX_BATCH_BYTES, max(self.max_bytes, 1))), deadline)

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().send_message_batch(QueueUrl=self.queue_url,
                                                Entries=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])]
