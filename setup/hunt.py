"""Hunt: run a detection rule over a trail's log group history, server-side.

The rules are CloudWatch Logs filter patterns, so ``FilterLogEvents`` evaluates them where the
events are stored and returns only candidates. A rule the service cannot read as written
(processor-only syntax, or over the 1,024-character pattern limit) is sent as the coarser
pattern its guards imply (the eventName values it requires), or as no pattern at all. Every
returned event is then checked with the processor's own engine, so the answer is exactly the
records the rule matches, whatever the service evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from handlers.alerts import principal_of
from handlers.detection.patterns import MAX_PATTERN_CHARS, lint_pattern
from handlers.detection.rules import Rule
from setup.errors import UsageError

_DURATION = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_time(value: str, now: float) -> float:
    """``7d``, ``12h``, ``30m`` (before ``now``) or an ISO 8601 time -> epoch seconds."""
    m = _DURATION.match(value.strip())
    if m:
        return now - int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    from datetime import datetime, timezone
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {value!r}", "use 7d, 12h, 30m or an ISO 8601 time such as "
                         "2026-12-01T00:00:00Z", code="BadTime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def server_pattern(rule: Rule) -> tuple[str, bool]:
    """(the filter pattern sent to CloudWatch Logs, whether it is the rule itself).

    Not the rule itself: the rule uses syntax the service may read differently, so the pattern
    sent is a superset (its required eventName values, or every event)."""
    text = rule.pattern.text
    if not rule.processor_only and not lint_pattern(text) and len(text) <= MAX_PATTERN_CHARS:
        return text, True
    names = rule.pattern.event_names
    if names and all(_SAFE_NAME.match(n) for n in names):
        coarse = "{ " + " || ".join(f'($.eventName = "{n}")' for n in sorted(names)) + " }"
        if len(coarse) <= MAX_PATTERN_CHARS:
            return coarse, False
    return "", False


@dataclass
class HuntStats:
    pages: int = 0
    scanned: int = 0          # events the service returned
    matched: int = 0
    unreadable: int = 0       # returned events that are not JSON objects


def hunt(logs: Any, log_group: str, rule: Rule, start: float, end: float,
         stats: HuntStats | None = None,
         progress: Callable[[HuntStats], None] | None = None) -> Iterator[dict[str, Any]]:
    """The events of ``log_group`` between ``start`` and ``end`` (epoch seconds) that ``rule``
    matches, oldest first per stream, as output documents (the whole record included)."""
    stats = stats if stats is not None else HuntStats()
    pattern, _ = server_pattern(rule)
    kw: dict[str, Any] = {"logGroupName": log_group, "startTime": int(start * 1000),
                          "endTime": int(end * 1000)}
    if pattern:
        kw["filterPattern"] = pattern
    for page in logs.get_paginator("filter_log_events").paginate(**kw):
        stats.pages += 1
        for ev in page.get("events", []):
            stats.scanned += 1
            try:
                record = orjson.loads(ev.get("message", ""))
            except orjson.JSONDecodeError:
                stats.unreadable += 1
                continue
            if record.__class__ is not dict:
                stats.unreadable += 1
                continue
            if not rule.pattern.match(record):
                continue
            stats.matched += 1
            yield {"rule": rule.id, "severity": rule.severity, "title": rule.title,
                   "eventTime": record.get("eventTime"), "eventName": record.get("eventName"),
                   "eventSource": record.get("eventSource"),
                   "account": record.get("recipientAccountId"), "region": record.get("awsRegion"),
                   "principal": principal_of(record), "eventID": record.get("eventID"),
                   "log_group": log_group, "log_stream": ev.get("logStreamName"),
                   "timestamp": ev.get("timestamp"), "record": record}
        if progress is not None:
            progress(stats)
