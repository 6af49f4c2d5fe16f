"""Threshold rules: alert when one principal matches a rule at least N times in one batch.

A rule with ``threshold: N`` (N > 0) does not alert per event. After a batch (one subscription
envelope) is evaluated, its matches are grouped by (rule, principal); a group with at least N
matches becomes ONE alert (the group's first alert, with a ``threshold`` object naming the count,
the principal and the first event keys), and smaller groups are dropped. Everything else passes
through untouched and in order. The window is the batch: CloudWatch Logs delivers a log stream's
events in batches, so a burst from one principal lands together, and no state is kept between
invocations (nothing an attacker can fill or reset).

The principal is ``userIdentity.arn``, else ``principalId``, else ``type:accountId``, else
``"unknown"`` (e.g. failed console sign-ins for users that do not exist).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_KEYS = 20


def principal_of(event: dict[str, Any] | None) -> str:
    """A stable name for who did it, from an alert's (or a record's) ``userIdentity``."""
    ui = event.get("userIdentity") if isinstance(event, dict) else None
    if not isinstance(ui, dict):
        return "unknown"
    for key in ("arn", "principalId"):
        v = ui.get(key)
        if isinstance(v, str) and v:
            return v
    if ui.get("type") or ui.get("accountId"):
        return f"{ui.get('type')}:{ui.get('accountId')}"
    return "unknown"


def thresholds_of(rules: Iterable[Any]) -> dict[str, int]:
    return {r.id: r.threshold for r in rules if getattr(r, "threshold", 0)}


def apply_thresholds(alerts: list[dict[str, Any]], limits: dict[str, int]) -> list[dict[str, Any]]:
    """Collapse the alerts of threshold rules (``limits``: rule id -> N) as described above."""
    if not limits or not alerts:
        return alerts
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out: list[Any] = []
    for alert in alerts:
        rule = alert.get("rule")
        rid = rule.get("id") if isinstance(rule, dict) else None
        if rid not in limits or alert.get("kind") != "rule_match":
            out.append(alert)
            continue
        key = (rid, principal_of(alert.get("event")))
        group = groups.get(key)
        if group is None:
            groups[key] = group = []
            out.append(key)          # the group's place: where its first match was
        group.append(alert)
    result: list[dict[str, Any]] = []
    for item in out:
        if isinstance(item, dict):
            result.append(item)
            continue
        group = groups[item]
        limit = limits[item[0]]
        if len(group) < limit:
            continue
        first = dict(group[0])
        keys = [_event_key(a) for a in group]
        first["threshold"] = {"count": len(group), "limit": limit, "principal": item[1],
                              "window": "batch", "event_keys": keys[:MAX_KEYS]}
        result.append(first)
    return result


def _event_key(alert: dict[str, Any]) -> str | None:
    ev = alert.get("event")
    if isinstance(ev, dict) and isinstance(ev.get("eventID"), str):
        return ev["eventID"]
    delivery = alert.get("delivery")
    return delivery.get("log_event_id") if isinstance(delivery, dict) else None
