"""Canary recognition in the processor (``trailwatch verify --canary``).

The canary's call must be one CloudTrail records for CloudWatch Logs. The CloudWatch Logs User
Guide's page "Logging Amazon CloudWatch Logs API calls in AWS CloudTrail" lists the actions
"logged as events in CloudTrail log files"; ``PutMetricFilter`` and ``DeleteMetricFilter`` are on
it, ``TagResource``/``TagLogGroup`` are not (awsdocs/amazon-cloudwatch-logs-user-guide,
``doc_source/logging_cw_api_calls_cwl.md``, last version; the live page's list could not be read
in full). So the canary puts a metric filter on the trail's log group and deletes it again:

* named ``trailwatch-canary-<nonce>``,
* with the pattern ``{ $.trailwatchCanary = "<nonce>" }``, which no CloudTrail record matches (no
  record has a top-level ``trailwatchCanary`` field), so it never publishes a data point,
* publishing to the ``Trailwatch/Canary`` metric ``TrailwatchCanary`` only.

A record is a canary only when *all* of these hold, so an attacker cannot hide a real change
behind the name:

* it is a successful CloudWatch Logs ``PutMetricFilter`` with exactly that name, pattern and one
  metric transformation to exactly that metric,
* on the log group this batch was delivered from (the group the processor is subscribed to), in
  the account that owns it (the envelope's ``owner``).

Canaries of earlier trailwatch versions (a ``TagResource``, or legacy ``TagLogGroup``, setting
exactly one tag ``trailwatch:canary=<nonce>`` on that group) are still recognised.

A canary-shaped call on any other resource is an ordinary event (rules run on it as usual). For a
canary the processor logs ``canary_observed`` with the nonce and its lags, emits a ``CanaryLag``
sample (eventTime -> processor receipt, seconds) and raises no alert.
"""

from __future__ import annotations

import re

from collections.abc import Callable, Mapping
from typing import Any

from handlers import emf

CANARY_TAG = "trailwatch:canary"
CANARY_FILTER_PREFIX = "trailwatch-canary-"
CANARY_METRIC = {"metricName": "TrailwatchCanary", "metricNamespace": "Trailwatch/Canary",
                 "metricValue": "1"}
LEGACY_EVENTS = ("TagResource", "TagLogGroup")
# tuple: `in` never hashes a JSON value
CANARY_EVENTS = ("PutMetricFilter",) + LEGACY_EVENTS
OBSERVED = "canary_observed"
# The nonces the CLI makes (setup/verify/canary.py new_nonce, "-member" for the member probe)
_NONCE = re.compile(r"tw-[0-9a-f]{32}(?:-member)?")


def canary_filter(nonce: str) -> dict[str, Any]:
    """The metric filter the canary puts (PutMetricFilter's parameters but the log group)."""
    return {"filterName": CANARY_FILTER_PREFIX + nonce,
            "filterPattern": f'{{ $.trailwatchCanary = "{nonce}" }}',
            "metricTransformations": [dict(CANARY_METRIC)]}


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


def _metric_filter_nonce(params: Mapping[str, Any]) -> str | None:
    name = params.get("filterName")
    if not isinstance(name, str) or not name.startswith(CANARY_FILTER_PREFIX):
        return None
    nonce = name[len(CANARY_FILTER_PREFIX):]
    if not _NONCE.fullmatch(nonce):       # only what the CLI's new_nonce() makes: no quote or
        return None                       # operator can reach the filter pattern
    expected = canary_filter(nonce)
    transforms = params.get("metricTransformations")
    if params.get("filterPattern") != expected["filterPattern"] or \
            not isinstance(transforms, list) or len(transforms) != 1 or \
            not isinstance(transforms[0], dict) or \
            any(transforms[0].get(k) != v for k, v in CANARY_METRIC.items()) or \
            transforms[0].get("dimensions"):
        return None
    return nonce


def canary_nonce(record: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    """The nonce when ``record`` is trailwatch's canary on the envelope's own log group."""
    if record.get("eventName") not in CANARY_EVENTS or \
            record.get("eventSource") != "logs.amazonaws.com" or record.get("errorCode"):
        return None
    params = record.get("requestParameters")
    if not isinstance(params, dict):
        return None
    if record["eventName"] == "PutMetricFilter":
        nonce = _metric_filter_nonce(params)
        account, name = record.get("recipientAccountId"), params.get("logGroupName")
    else:
        tags = params.get("tags")
        if not isinstance(tags, dict) or len(tags) != 1:
            return None
        nonce = tags.get(CANARY_TAG)
        if record["eventName"] == "TagResource":
            where = _group_of_arn(params.get("resourceArn"))
            if where is None:
                return None
            account, name = where
        else:
            account, name = record.get("recipientAccountId"), params.get("logGroupName")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        return None
    ui = record.get("userIdentity")
    if isinstance(ui, dict) and ui.get("type") == "Root":
        return None     # trailwatch never runs as root: root's call is alerted, canary-shaped or not
    group, owner = envelope.get("logGroup"), envelope.get("owner")
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
