"""Canary recognition in the processor (``trailwatch verify --canary``).

The canary tags the trail's log group with ``trailwatch:canary=<nonce>``. A record is a canary only
when *all* of these hold, so an attacker cannot hide anything behind the tag key:

* it is a successful CloudWatch Logs ``TagResource`` (or legacy ``TagLogGroup``) call,
* the tags it sets are exactly one: the ``trailwatch:canary`` key with a string nonce,
* the tagged resource is the log group this batch was delivered from (the group the processor is
  subscribed to), in the account that owns it (the envelope's ``owner``).

A canary-shaped call on any other resource is an ordinary event (rules run on it as usual). For a
canary the processor logs ``canary_observed`` with the nonce and its lags, emits a ``CanaryLag``
sample (eventTime -> processor receipt, seconds) and raises no alert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from handlers import emf

CANARY_TAG = "trailwatch:canary"
CANARY_EVENTS = ("TagResource", "TagLogGroup")   # tuple: `in` never hashes a JSON value
OBSERVED = "canary_observed"


def _group_of_arn(arn: Any) -> tuple[str, str] | None:
    """``arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]`` -> (ACCOUNT, NAME)."""
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return None
    parts = arn.split(":", 6)
    if len(parts) != 7 or parts[2] != "logs" or parts[5] != "log-group":
        return None
    name = parts[6]
    if name.endswith(":*"):
        name = name[:-2]
    return parts[4], name


def canary_nonce(record: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    """The nonce when ``record`` is trailwatch's canary on the envelope's own log group."""
    if record.get("eventName") not in CANARY_EVENTS or \
            record.get("eventSource") != "logs.amazonaws.com" or record.get("errorCode"):
        return None
    params = record.get("requestParameters")
    if not isinstance(params, dict):
        return None
    tags = params.get("tags")
    if not isinstance(tags, dict) or len(tags) != 1:
        return None
    nonce = tags.get(CANARY_TAG)
    if not isinstance(nonce, str) or not nonce:
        return None
    group, owner = envelope.get("logGroup"), envelope.get("owner")
    if record["eventName"] == "TagResource":
        where = _group_of_arn(params.get("resourceArn"))
        if where is None:
            return None
        account, name = where
    else:
        account, name = record.get("recipientAccountId"), params.get("logGroupName")
    if not group or name != group or (isinstance(owner, str) and account != owner):
        return None
    return nonce


def observation(nonce: str, record: Mapping[str, Any], envelope: Mapping[str, Any],
                log_event: Mapping[str, Any], delivery_lag: float | None,
                receipt_lag: float) -> dict[str, Any]:
    return {"nonce": nonce, "event_id": record.get("eventID"),
            "event_time": record.get("eventTime"), "log_group": envelope.get("logGroup"),
            "log_stream": envelope.get("logStream"), "log_event_id": log_event.get("id"),
            "delivery_lag_seconds": None if delivery_lag is None else round(delivery_lag, 3),
            "receipt_lag_seconds": round(receipt_lag, 3)}


def report(canaries: list[dict[str, Any]], log: Any, emit: Callable[[bytes], None],
           namespace: str, service: str, now_ms: int) -> None:
    """One ``canary_observed`` log line per canary and its CanaryLag sample (EMF)."""
    if not canaries:
        return
    lags = []
    for c in canaries:
        log.info(OBSERVED, extra=c)
        lags.append(round((c["delivery_lag_seconds"] or 0.0) + c["receipt_lag_seconds"], 3))
    for doc in emf.documents({"CanaryLag": lags}, "Seconds", namespace, service, now_ms):
        emit(doc)
