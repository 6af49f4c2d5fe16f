"""Threshold rules: alert when one principal matches a rule at least N times in one batch.

A rule with ``threshold: N`` (N > 0) does not alert per event. After a batch (one subscription
envelope) is evaluated, its matches are grouped by (rule, principal); a group with at least N
matches becomes ONE alert (the group's first alert, with a ``threshold`` object naming the count,
the principal and the first event keys), and smaller groups are dropped. Everything else passes
through untouched and in order. The window is the batch: CloudWatch Logs delivers a log stream's
events in batches, so a burst from one principal lands together, and no state is kept between
invocations (nothing an attacker can fill or reset).

The principal is ``userIdentity.arn``, else ``principalId``, else ``type:accountId``, else
``"unknown"`` (e.g. failed console sign-ins for users that do not exist); an assumed-role session
counts as its role (``sessionContext.sessionIssuer.arn``), so a fresh RoleSessionName per call
does not evade the threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MAX_KEYS = 20
MAX_KEY_CHARS = 256          # x 4 UTF-8 bytes, plus the rule: under DynamoDB's 2,048-byte key


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


def role_principal_of(event: dict[str, Any] | None) -> str:
    """Who a threshold counts (review F4): :func:`principal_of`, except that an assumed-role
    session counts as its role (``sessionContext.sessionIssuer.arn``, else the role named in the
    session's ARN), so fresh RoleSessionNames do not each start a count of their own."""
    ui = event.get("userIdentity") if isinstance(event, dict) else None
    if isinstance(ui, dict) and ui.get("type") == "AssumedRole":
        ctx = ui.get("sessionContext")
        issuer = ctx.get("sessionIssuer") if isinstance(ctx, dict) else None
        if isinstance(issuer, dict):
            arn = issuer.get("arn")
            if isinstance(arn, str) and arn and issuer.get("type", "Role") == "Role":
                return arn
        arn = ui.get("arn")
        m = _ASSUMED_ROLE.match(arn) if isinstance(arn, str) else None
        if m:
            return f"arn:{m['partition']}:iam::{m['account']}:role/{m['role']}"
    return principal_of(event)


_ASSUMED_ROLE = re.compile(r"arn:(?P<partition>aws[-a-z]*):sts::(?P<account>\d{12}):"
                           r"assumed-role/(?P<role>[^/]+)/")


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
        key = (rid, role_principal_of(alert.get("event")))
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
        first["threshold"] = threshold_block([_match_key(a) for a in group], limit, item[1])
        result.append(first)
    return result


def match_key(event_id: Any, log_event_id: Any) -> Any:
    """How a threshold group names one match: its eventID (a string), else its log event id."""
    return event_id if isinstance(event_id, str) else log_event_id


def threshold_block(keys: list[Any], limit: int, principal: str) -> dict[str, Any]:
    """The ``threshold`` object of a collapsed group (``keys``: :func:`match_key` of each match)."""
    return {"count": len(keys), "limit": limit, "principal": principal, "window": "batch",
            "event_keys": keys[:MAX_KEYS]}


def _match_key(alert: dict[str, Any]) -> Any:
    event, delivery = alert.get("event"), alert.get("delivery")
    return match_key(event.get("eventID") if isinstance(event, dict) else None,
                     delivery.get("log_event_id") if isinstance(delivery, dict) else None)


def key_of(rule: Any, event: Any) -> str:
    """The value of a rule's ``dedup_key`` for a record: ``principal`` is
    :func:`principal_of` (for a threshold rule :func:`role_principal_of`: an assumed role's
    sessions count together); other entries are record field paths (``-`` when missing)."""
    fields = getattr(rule, "dedup_key", None) or ("principal",)
    who = role_principal_of if getattr(rule, "threshold", 0) else principal_of
    if fields == ("principal",):
        return _bounded(who(event if isinstance(event, dict) else None))
    parts: list[str] = []
    for f in fields:
        if f == "principal":
            parts.append(who(event if isinstance(event, dict) else None)[:MAX_KEY_CHARS])
            continue
        cur: Any = event
        for p in f.split("."):
            cur = cur.get(p) if isinstance(cur, dict) else None
        parts.append(_key_part(cur))
    return _bounded("|".join(parts))


def _key_part(value: Any) -> str:
    """A record value as part of a key: strings and scalars as text; an object or array (a
    hostile record may nest them thousands deep) only by its type, never rendered."""
    if isinstance(value, str):
        return value[:MAX_KEY_CHARS]
    if value is None:
        return "-"
    if isinstance(value, bool | int | float):
        return str(value)[:MAX_KEY_CHARS]
    return f"<{type(value).__name__}>"


def _bounded(key: str) -> str:
    """At most MAX_KEY_CHARS, and valid UTF-8 (a lone surrogate cannot go to DynamoDB)."""
    key = key[:MAX_KEY_CHARS]
    if key.isascii():
        return key
    return key.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_KEY_CHARS]
