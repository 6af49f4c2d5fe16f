"""The SNS alert topic: routing attributes (cached per value, bounded) and FIFO group ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from handlers.alerts import fit, routing_keys
from handlers.clients import default_client_factory
from handlers.sinks.base import ClientFactory, _Lazy, _prepare_each, _RetryingSink, pack

SNS_MAX_BYTES = 262_144          # Publish / PublishBatch: message + attributes, and batch total
SNS_MAX_BATCH = 10
SNS_MAX_ATTRIBUTES = 10
SNS_ATTRIBUTE_CHARS = 128        # our cap on a routing attribute value
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


_STR = {str}
# _fast_key(alert) -> the same (attributes, size) as _ATTRIBUTE_SETS holds for it; bounded alike
_FAST_SETS: dict[tuple[Any, ...], tuple[dict[str, dict[str, str]], int]] = {}


def _fast_key(alert: dict[str, Any]) -> tuple[Any, ...] | None:
    """The key :meth:`SnsSink.attributes_with_size` looks shared attributes up by: the raw
    routing values (kind, rule id, severity, account, Region, event name) and expected_change,
    when all are strings of at most :data:`SNS_ATTRIBUTE_CHARS`; else None (the attributes are
    then built from the routing keys each time, their caches keyed on capped values)."""
    rule, event, delivery = alert.get("rule"), alert.get("event"), alert.get("delivery")
    if rule.__class__ is not dict or event.__class__ is not dict:
        return None
    account = event.get("recipientAccountId")
    if not (account.__class__ is str and account):
        account = delivery.get("owner") if delivery.__class__ is dict else None
    values = (alert.get("kind"), rule.get("id"), rule.get("severity"), account,
              event.get("awsRegion"), event.get("eventName"))
    if set(map(type, values)) != _STR or max(map(len, values)) > SNS_ATTRIBUTE_CHARS:
        return None
    return values, bool(alert.get("expected_change"))


def _group_id(alert: dict[str, Any]) -> str:
    """FIFO ``MessageGroupId``: the event's account (ordering per account), max 128 chars."""
    gid = _GROUP_ID_CHARS.sub("_", routing_keys(alert).get("account", ""))[:128]
    return gid or "trailwatch"


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
        # The common case first: an alert whose routing values are short strings finds its
        # shared attributes by those values (:func:`_fast_key`) without building routing keys.
        rule, event, delivery = alert.get("rule"), alert.get("event"), alert.get("delivery")
        if rule.__class__ is dict and event.__class__ is dict:
            account = event.get("recipientAccountId")
            if not (account.__class__ is str and account):
                account = delivery.get("owner") if delivery.__class__ is dict else None
            values = (alert.get("kind"), rule.get("id"), rule.get("severity"), account,
                      event.get("awsRegion"), event.get("eventName"))
            if set(map(type, values)) == _STR and max(map(len, values)) <= SNS_ATTRIBUTE_CHARS:
                hit = _FAST_SETS.get((values, bool(alert.get("expected_change"))))
                ident = alert.get("alert_id")
                if hit is not None and ident.__class__ is str and ident and \
                        len(ident) <= SNS_ATTRIBUTE_CHARS and ident.isascii() and \
                        ident.isprintable():
                    attrs = {"alert_id": {"DataType": "String", "StringValue": ident}}
                    attrs.update(hit[0])
                    return attrs, hit[1] + 14 + len(ident)   # 14: "alert_id" + "String"
        return SnsSink._attributes_with_size(alert)

    @staticmethod
    def _attributes_with_size(alert: dict[str, Any]) -> tuple[dict[str, dict[str, str]], int]:
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
            fast = _fast_key(alert)
            if fast is not None:
                if len(_FAST_SETS) >= _ATTRIBUTES_MAX:
                    _FAST_SETS.clear()
                _FAST_SETS[fast] = hit
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
