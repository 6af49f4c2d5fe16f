"""Where alerts and unprocessable records go: SNS, EventBridge, the failure queue, or the log.

Every sink packs its requests within the service's documented limits *in bytes* (moto does not
enforce them, so these functions do), retries partial failures with bounded backoff, and returns
the ids it could not deliver so the caller can fail the invocation (or the Kinesis record).

boto3 is imported lazily, on the first publish: a cold start that raises no alert never pays
for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from handlers import __version__
from handlers.alerts import detail_type, fit, routing_keys

SNS_MAX_BYTES = 262_144          # Publish / PublishBatch: message + attributes, and batch total
SNS_MAX_BATCH = 10
EVENTBRIDGE_MAX_ENTRY_BYTES = 262_144   # API text; AWS raised event size to 1 MB in 2026: configurable
EVENTBRIDGE_MAX_REQUEST_BYTES = 262_144
EVENTBRIDGE_MAX_BATCH = 10
SQS_MAX_BYTES = 262_144          # conservative: queues created with an explicit 256 KiB keep it
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


def _group_id(alert: dict[str, Any]) -> str:
    """FIFO ``MessageGroupId``: the event's account (ordering per account), max 128 chars."""
    gid = _GROUP_ID_CHARS.sub("_", routing_keys(alert).get("account", ""))[:128]
    return gid or "trailwatch"


def default_client_factory(service: str) -> Any:
    import boto3  # deferred: keeps the cold start small
    from botocore.config import Config

    return boto3.client(service, config=Config(user_agent_extra=f"trailwatch/{__version__}",
                                               retries={"mode": "standard", "max_attempts": 5}))


class _Lazy:
    def __init__(self, service: str, factory: ClientFactory) -> None:
        self.service = service
        self.factory = factory
        self._client: Any = None

    def __call__(self) -> Any:
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
    """Send entries in batches; retry the ones a partial failure reports, with bounded backoff."""

    name = "sink"
    max_attempts = 4
    base_delay = 0.2
    max_delay = 2.0

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep
        self.calls = 0

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _deliver(self, entries: dict[str, Any], batches: list[list[str]]) -> list[dict[str, str]]:
        pending = [i for b in batches for i in b]
        errors: dict[str, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
            failed: list[str] = []
            for batch in self._rebatch(pending, batches, attempt):
                self.calls += 1
                for ident, err in self._send_batch(batch, entries):
                    failed.append(ident)
                    errors[ident] = err
            if not failed:
                return []
            pending = failed
        return [{"id": i, "error": errors[i]} for i in pending]

    def _rebatch(self, pending: list[str], batches: list[list[str]], attempt: int) -> list[list[str]]:
        if attempt == 0:
            return batches
        keep = set(pending)
        return [[i for i in b if i in keep] for b in batches if any(i in keep for i in b)]


class SnsSink(_RetryingSink):
    """Publishes each alert as the SNS message body (the alert JSON itself), via PublishBatch."""

    name = "sns"

    def __init__(self, topic_arn: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep, max_bytes: int = SNS_MAX_BYTES) -> None:
        super().__init__(sleep)
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
        attrs: dict[str, dict[str, str]] = {}
        size = 0
        for k, v in routing_keys(alert).items():
            v = _attr_value(v)
            if v:
                attrs[k] = {"DataType": "String", "StringValue": v}
                size += len(k) + 6 + (len(v) if v.isascii() else len(v.encode()))   # 6: "String"
        expected = "true" if alert.get("expected_change") else "false"
        attrs["expected_change"] = {"DataType": "String", "StringValue": expected}
        size += 15 + 6 + len(expected)
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

    def publish(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes = self.prepare(alerts)
        return self._deliver(entries, pack(sizes, SNS_MAX_BATCH, self.max_bytes))

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
                 max_request_bytes: int = EVENTBRIDGE_MAX_REQUEST_BYTES) -> None:
        super().__init__(sleep)
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

    def publish(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes = self.prepare(alerts)
        return self._deliver(entries, pack(sizes, EVENTBRIDGE_MAX_BATCH, self.max_request_bytes))

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().put_events(Entries=[entries[i] for i in ids])
        if not resp.get("FailedEntryCount"):
            return []
        # Result entries are in request order.
        return [(ident, f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}")
                for ident, r in zip(ids, resp.get("Entries", []), strict=False) if r.get("ErrorCode")]


class FailureQueue(_RetryingSink):
    """SQS queue for records and payloads trailwatch could not process (never dropped)."""

    name = "failure_queue"
    MESSAGE_BUDGET = 200_000  # leaves room for the JSON wrapper within SQS_MAX_BYTES

    def __init__(self, queue_url: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(sleep)
        self.queue_url = queue_url
        self.client = _Lazy("sqs", client_factory)

    @classmethod
    def body(cls, failure: dict[str, Any]) -> bytes:
        doc = dict(failure)
        for key in ("message", "data"):
            val = doc.get(key)
            if isinstance(val, str):
                raw = val.encode("utf-8", "surrogatepass")
                if len(raw) > cls.MESSAGE_BUDGET:
                    doc[key] = raw[: cls.MESSAGE_BUDGET].decode("utf-8", "ignore")
                    doc[f"{key}_truncated"] = True
                    doc[f"{key}_bytes"] = len(raw)
        return orjson.dumps(doc)

    def send(self, failures: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        if not failures:
            return []
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        for n, failure in enumerate(failures):
            ident = f"f{n}"
            body = self.body(failure)
            entries[ident] = {"Id": ident, "MessageBody": body.decode("utf-8")}
            sizes.append((ident, len(body)))
        return self._deliver(entries, pack(sizes, SQS_MAX_BATCH, SQS_MAX_BYTES))

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().send_message_batch(QueueUrl=self.queue_url,
                                                Entries=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])]
