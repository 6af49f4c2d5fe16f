"""Alert documents: deterministic ids, incident-response context, and byte-exact size fitting."""

from __future__ import annotations

import hashlib
from typing import Any

from handlers.jsonsafe import dumps as _safe_dumps

SCHEMA = "trailwatch.alert/1"

# Fields of the CloudTrail record copied into every alert, in this order.
IDENTITY_FIELDS = (
    "eventID",
    "eventTime",
    "eventName",
    "eventSource",
    "eventType",
    "awsRegion",
    "recipientAccountId",
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "errorMessage",
)
USER_IDENTITY_FIELDS = ("type", "arn", "accountId", "principalId", "invokedBy", "userName")
# Bulky context, truncated (bulkiest first) when an alert would exceed a sink's limit.
BULKY_FIELDS = ("requestParameters", "responseElements", "additionalEventData", "resources",
                "serviceEventDetails", "insightDetails")
# Free-text identity fields that may be shortened as a last resort (never removed).
LAST_RESORT_FIELDS = ("errorMessage", "userAgent")
PREVIEW_CHARS = 256


class AlertTooLarge(ValueError):
    pass


def alert_id(kind: str, rule_id: str, event_key: str) -> str:
    """Same event + same rule -> same id, across retries and duplicate deliveries."""
    digest = hashlib.sha256(f"{kind}\x1f{rule_id}\x1f{event_key}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def event_key(record: dict[str, Any] | None, log_event_id: str | None) -> str:
    if record is not None:
        eid = record.get("eventID")
        if eid.__class__ is str and eid:
            return f"eventID:{eid}"
    return f"logEvent:{log_event_id}"


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record[k] for k in IDENTITY_FIELDS if k in record}
    ui = record.get("userIdentity")
    if ui.__class__ is dict:
        out["userIdentity"] = {k: ui[k] for k in USER_IDENTITY_FIELDS if k in ui}
    for k in BULKY_FIELDS:
        v = record.get(k)
        if v is not None:
            out[k] = v
    addendum = record.get("addendum")
    if addendum.__class__ is dict:
        out["addendum"] = addendum
    return out


def delivery_info(envelope: dict[str, Any], log_event: dict[str, Any],
                  lag: float | None) -> dict[str, Any]:
    ts = log_event.get("timestamp")
    return {
        "owner": envelope.get("owner"),
        "log_group": envelope.get("logGroup"),
        "log_stream": envelope.get("logStream"),
        "log_event_id": log_event.get("id"),
        "delivered_at_ms": ts,
        "delivery_lag_seconds": None if lag is None else round(lag, 3),
    }


def rule_alert(rule: Any, record: dict[str, Any], envelope: dict[str, Any],
               log_event: dict[str, Any], lag: float | None, *,
               expected_change: bool = False) -> dict[str, Any]:
    """``expected_change`` is decided by :mod:`handlers.expected` (configured principal AND
    trailwatch's user agent AND a managed resource), never from the user agent alone."""
    return {
        "schema": SCHEMA,
        "alert_id": alert_id("rule", rule.id, event_key(record, log_event.get("id"))),
        "kind": "rule_match",
        "rule": rule.doc,
        "event": summarize(record),
        "delivery": delivery_info(envelope, log_event, lag),
        "expected_change": bool(expected_change),
        "truncated_fields": [],
    }


def oversize_alert(envelope: dict[str, Any], log_event: dict[str, Any], size: int,
                   limit: int, first_bytes: int = 1024) -> dict[str, Any]:
    msg = log_event.get("message") or ""
    head = msg.encode("utf-8", "surrogatepass")[:first_bytes].decode("utf-8", "ignore")
    return {
        "schema": SCHEMA,
        "alert_id": alert_id("oversize_event", "trailwatch-oversize-event",
                             event_key(None, log_event.get("id"))),
        "kind": "oversize_event",
        "rule": {"id": "trailwatch-oversize-event", "title": "Log event larger than CloudTrail's "
                 "256 KB event limit", "severity": "MEDIUM"},
        "event": {"size_bytes": size, "limit_bytes": limit, "first_bytes": head},
        "delivery": delivery_info(envelope, log_event, None),
        "expected_change": False,
        "truncated_fields": [],
    }


def delivery_delayed_alert(delayed: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """One alert per invocation summarising every event delivered later than the threshold."""
    keys = sorted(d["key"] for d in delayed)
    reasons: dict[str, int] = {}
    for d in delayed:
        if d["reason"]:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    worst = max(delayed, key=lambda d: d["lag"])
    streams = sorted({f'{d["log_group"]}:{d["log_stream"]}' for d in delayed})
    return {
        "schema": SCHEMA,
        "alert_id": alert_id("delivery_delayed", "trailwatch-delivery-delayed", "|".join(keys)),
        "kind": "delivery_delayed",
        "rule": {"id": "trailwatch-delivery-delayed",
                 "title": "CloudTrail delivered events later than the lag threshold",
                 "severity": "LOW"},
        "event": {
            "count": len(delayed),
            "max_lag_seconds": round(worst["lag"], 3),
            "threshold_seconds": threshold,
            "addendum": {"reason": worst["reason"]} if worst["reason"] else None,
            "reasons": reasons,
            "worst_event": worst["key"],
            "event_keys": keys[:20],
            "streams": streams[:10],
        },
        "delivery": None,
        "expected_change": False,
        "truncated_fields": [],
    }


def _dumps(doc: Any) -> bytes:
    """orjson, or (surrogates, nesting deeper than orjson's 254, non-str keys) the iterative
    encoder of :mod:`handlers.jsonsafe`; U+FFFE/U+FFFF escaped so SNS -> SQS delivery accepts it."""
    return _safe_dumps(doc)


def _marker(value: Any, size: int) -> dict[str, Any]:
    text = value if isinstance(value, str) else _dumps(value).decode("utf-8", "replace")
    return {"trailwatch_truncated": True, "original_bytes": size, "preview": text[:PREVIEW_CHARS]}


def fit(alert: dict[str, Any], budget: int) -> bytes:
    """Serialise ``alert`` to at most ``budget`` bytes.

    Bulky context fields are replaced by a marker, bulkiest first, until it fits; identity fields
    are never removed (long free-text ones are shortened only as a last resort). The names of the
    truncated fields are recorded in the serialised alert's ``truncated_fields``; ``alert`` itself is
    never modified (each sink fits the same alert to its own limit).
    """
    body = _dumps(alert)
    if len(body) <= budget:
        return body
    alert = dict(alert)
    event = alert.get("event")
    if not isinstance(event, dict):
        raise AlertTooLarge(f"alert {alert.get('alert_id')} is {len(body)} bytes > {budget}")
    event = dict(event)
    alert["event"] = event
    truncated = list(alert.get("truncated_fields") or [])
    sizes = sorted(((len(_dumps(event[k])), k) for k in BULKY_FIELDS if k in event), reverse=True)
    for size, key in sizes:
        event[key] = _marker(event[key], size)
        truncated.append(key)
        alert["truncated_fields"] = truncated
        body = _dumps(alert)
        if len(body) <= budget:
            return body
    for key in LAST_RESORT_FIELDS + ("first_bytes",):
        if isinstance(event.get(key), str) and len(event[key]) > PREVIEW_CHARS:
            event[key] = event[key][:PREVIEW_CHARS] + "…[truncated]"
            truncated.append(key)
            alert["truncated_fields"] = truncated
            body = _dumps(alert)
            if len(body) <= budget:
                return body
    # Identity fields alone are too large (a hostile record can make eventID or userIdentity a
    # huge value). Replace the largest remaining event/delivery values by markers, largest
    # first; the alert keeps its id, kind, rule and every field's name.
    for block in ("event", "delivery"):
        part = alert.get(block)
        if not isinstance(part, dict):
            continue
        part = dict(part)
        alert[block] = part
        sizes = sorted(((len(_dumps(v)), k) for k, v in part.items()
                        if not (isinstance(v, dict) and v.get("trailwatch_truncated"))),
                       reverse=True)
        for size, key in sizes:
            if size <= 64:
                break
            part[key] = _marker(part[key], size)
            truncated.append(key if block == "event" else f"delivery.{key}")
            alert["truncated_fields"] = truncated
            body = _dumps(alert)
            if len(body) <= budget:
                return body
    raise AlertTooLarge(f"alert {alert.get('alert_id')} is {len(body)} bytes after truncation, "
                        f"limit {budget}")
