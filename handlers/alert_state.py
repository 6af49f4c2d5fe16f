"""Thresholds and dedup windows that hold across invocations (issue 20).

CloudWatch Logs decides how many events one invocation sees, so "N matches by one principal in W
minutes" and "one alert per rule and key per W minutes" cannot be decided inside one invocation.
A rule says what it wants as data (:class:`handlers.detection.rules.Rule`):

``window_minutes``  W > 0: the rule's window (0: no window, every match alerts, as before)
``threshold``       N > 0: alert when one key reaches N matches within W minutes
``dedup_key``       what names "one key": ``principal`` (default: userIdentity.arn, else
                    principalId, ...), or record fields (``recipientAccountId``, ``userIdentity.arn``)
``window_group``    rules that report the same behaviour and share one window per key

Windows are epoch-aligned buckets of W minutes of ``eventTime`` (the time of the behaviour,
which CloudTrail sets; the processor's clock only when a record has none), so replaying records
in order (``trailwatch rules backtest``) gives the same alerts as delivering them live.

* Dedup (threshold 0): the first match of a (rule or group, key) in a bucket claims the bucket
  with a conditional write and alerts; later matches only add to the bucket's count, and the
  alert that opens the next bucket carries the previous bucket's count. A retried invocation
  re-claims with the same alert id, so an alert whose delivery failed is raised again (a
  duplicate beats a loss).
* Threshold: each invocation adds its matches to the bucket's count; the count of this bucket
  plus the previous one reaching N alerts (so a burst of N within any W minutes is never missed;
  N spread over up to 2W may alert too), once per bucket (a conditional write). Matches that
  arrive after the next bucket's (out of order) also add the next bucket's count, and a crossing
  found so is claimed in the next bucket, so it alerts once whichever half arrives last.

State lives in DynamoDB when ``ALERT_STATE_TABLE_NAME`` names a table (key ``pk``, TTL on
``expires_at``; the template creates it on demand). Without one the processor works as before
and logs so at cold start: every match alerts (no dedup windows) and thresholds count within one
invocation (a :class:`MemoryStore` emptied per invocation). Every table call is bounded (one
botocore attempt with 0.5 s connect and 1 s read timeouts, :func:`handlers.clients.state_table_config`;
a few attempts on throttling here, never past the budget); when the table cannot be used, no alert is suppressed: dedup lets every match
through and thresholds fall back to the invocation's own count, and the error is logged and
counted (``StateErrors``). Only alerts reach this module: records that match no rule cost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from handlers.clients import for_state_table
from handlers.detection.thresholds import key_of

ENV_TABLE = "ALERT_STATE_TABLE_NAME"
KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
MAX_ATTEMPTS = 3                      # per call, on throttling / 5xx (botocore adds none: see below)
RETRY_BASE_SECONDS = 0.05
RETRYABLE = frozenset(("ProvisionedThroughputExceededException", "ThrottlingException",
                       "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable",
                       "TransactionConflictException"))
TTL_MARGIN_SECONDS = 3600
STATE_BUDGET_SECONDS = 3.0            # per invocation, waiting on the table
# An eventTime further ahead than this, or before CloudTrail existed, is not the behaviour's time
# (a forged or corrupt record): it is windowed at the processor's clock instead.
MAX_FUTURE_SECONDS = 86_400
MIN_EVENT_SECONDS = 1_356_998_400.0   # 2013-01-01T00:00:00Z
_UTC = UTC


class StateError(RuntimeError):
    """The state table could not be used for this call."""


class MemoryStore:
    """The table's operations on a dict: the backtest (one for the whole replay), and the
    processor without a table (``per_invocation``: emptied at each invocation, as before)."""

    name = "memory"

    def __init__(self, per_invocation: bool = False) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.per_invocation = per_invocation

    def begin(self) -> None:
        if self.per_invocation:
            self.items.clear()

    def add(self, pk: str, n: int, expires: int) -> int:
        item = self.items.setdefault(pk, {})
        item["n"] = item.get("n", 0) + n
        item[TTL_ATTRIBUTE] = max(item.get(TTL_ATTRIBUTE, 0), expires)
        return item["n"]

    def claim(self, pk: str, attr: str, owner: str, expires: int, n: int = 0) -> tuple[bool, int]:
        item = self.items.setdefault(pk, {})
        held = item.get(attr)
        owned = held is None or held == owner
        if owned:
            item[attr] = owner
        item["n"] = item.get("n", 0) + n
        item[TTL_ATTRIBUTE] = max(item.get(TTL_ATTRIBUTE, 0), expires)
        return owned, item["n"]

    def count(self, pk: str) -> int:
        return int(self.items.get(pk, {}).get("n", 0))


class DynamoStore:
    """The state table: conditional writes, bounded retries, and a breaker per invocation: after
    one failed call, or once the invocation has spent ``budget_seconds`` waiting on the table,
    the rest of the invocation does not call it again (its alerts pass, as on a failure), so a
    slow table cannot eat the time publishing needs."""

    name = "dynamodb"

    def __init__(self, table: str, client: Any, sleep: Callable[[float], None] = time.sleep,
                 log: Any = None, budget_seconds: float = STATE_BUDGET_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        # a client, or a callable making one on first use (no boto3 client at cold start)
        self._client = client
        self.sleep = sleep
        self.log = log
        self.budget = budget_seconds
        self.monotonic = monotonic
        self.spent = 0.0
        self.broken: str | None = None

    @property
    def client(self) -> Any:
        if callable(self._client) and not hasattr(self._client, "update_item"):
            self._client = self._client()
        return self._client

    def begin(self) -> None:
        self.broken = None
        self.spent = 0.0

    def _call(self, op: str, **kw: Any) -> dict[str, Any] | None:
        """The call's response; None when a condition failed; StateError otherwise."""
        if self.broken is None and self.spent >= self.budget:
            self.broken = f"state table calls took {self.spent:.1f} s in this invocation " \
                          f"(budget {self.budget:.1f} s)"
        if self.broken is not None:
            raise StateError(f"state table unavailable earlier in this invocation: {self.broken}")
        last = ""
        for attempt in range(MAX_ATTEMPTS):
            started = self.monotonic()
            try:
                out = getattr(self.client, op)(TableName=self.table, **kw)
                self.spent += self.monotonic() - started
                return out
            except Exception as e:  # noqa: BLE001 - classified below
                self.spent += self.monotonic() - started
                code = _error_code(e)
                if code == "ConditionalCheckFailedException":
                    return None
                last = f"{code or type(e).__name__}: {e}"
                if code not in RETRYABLE or attempt == MAX_ATTEMPTS - 1:
                    break
                delay = RETRY_BASE_SECONDS * (2 ** attempt)
                if self.spent + delay >= self.budget:     # no retry the budget cannot pay for
                    last += f" (no retry: {self.spent:.1f} s of the {self.budget:.1f} s budget spent)"
                    break
                self.sleep(delay)
                self.spent += delay
        self.broken = last[:300]
        raise StateError(self.broken)

    def add(self, pk: str, n: int, expires: int) -> int:
        out = self._call("update_item", Key={KEY: {"S": pk}},
                         UpdateExpression="ADD #n :n SET #e = :e",
                         ExpressionAttributeNames={"#n": "n", "#e": TTL_ATTRIBUTE},
                         ExpressionAttributeValues={":n": {"N": str(n)}, ":e": {"N": str(expires)}},
                         ReturnValues="UPDATED_NEW")
        return _count(out)

    def claim(self, pk: str, attr: str, owner: str, expires: int, n: int = 0) -> tuple[bool, int]:
        names = {"#a": attr, "#n": "n", "#e": TTL_ATTRIBUTE}
        values = {":o": {"S": owner}, ":n": {"N": str(n)}, ":e": {"N": str(expires)}}
        out = self._call("update_item", Key={KEY: {"S": pk}},
                         UpdateExpression="SET #a = :o, #e = :e ADD #n :n",
                         ConditionExpression="attribute_not_exists(#a) OR #a = :o",
                         ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                         ReturnValues="UPDATED_NEW")
        if out is not None:
            return True, _count(out)
        if not n:
            return False, 0
        return False, self.add(pk, n, expires)

    def count(self, pk: str) -> int:
        out = self._call("get_item", Key={KEY: {"S": pk}}, ConsistentRead=True,
                         ProjectionExpression="#n", ExpressionAttributeNames={"#n": "n"})
        item = (out or {}).get("Item") or {}
        try:
            return int(item.get("n", {}).get("N", 0))
        except (TypeError, ValueError):
            return 0


def _error_code(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str((resp.get("Error") or {}).get("Code") or "")
    return ""


def _count(out: dict[str, Any] | None) -> int:
    try:
        return int(((out or {}).get("Attributes") or {}).get("n", {}).get("N", 0))
    except (TypeError, ValueError):
        return 0


# ----------------------------------------------------------------------------------- windows

def event_seconds(event: Any, now: float) -> float:
    """The record's eventTime in epoch seconds; ``now`` when it has none, cannot be read, or is
    implausible (more than a day ahead of ``now``, or before CloudTrail existed)."""
    et = event.get("eventTime") if isinstance(event, dict) else None
    if isinstance(et, str):
        try:
            dt = datetime.fromisoformat(et)
            seconds = (dt if dt.tzinfo else dt.replace(tzinfo=_UTC)).timestamp()
        except (ValueError, OverflowError):
            return now
        if MIN_EVENT_SECONDS <= seconds <= now + MAX_FUTURE_SECONDS:
            return seconds
    return now


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return "-"


class Windows:
    """Applies the rules' windows, thresholds and suppressions to one invocation's alerts."""

    def __init__(self, rules: Iterable[Any], store: Any, suppressions: Iterable[Any] = (),
                 log: Any = None, clock: Callable[[], float] = time.time,
                 dedup: bool = True) -> None:
        self.rules = {r.id: r for r in rules}
        self.dedup = dedup          # False: the processor without a table (every match alerts)
        self.windowed = {rid for rid, r in self.rules.items() if r.window_minutes > 0}
        self.suppressions = list(suppressions)
        self.store = store
        self.log = log
        self.clock = clock
        self.stats: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self.windowed or self.suppressions)

    def apply(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The alerts to publish, in order: suppressed matches dropped, each window's first
        match (or threshold crossing) kept, the rest counted. ``self.stats`` says what happened."""
        stats = self.stats = {"suppressed": 0, "deduplicated": 0, "below_threshold": 0,
                              "state_errors": 0}
        if not alerts or not self.active:
            return alerts
        self.store.begin()
        now = self.clock()
        out: list[Any] = []
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for alert in alerts:
            rule = self.rules.get(_rule_id(alert)) if alert.get("kind") == "rule_match" else None
            if rule is None:
                out.append(alert)
                continue
            event = alert.get("event")
            if self.suppressions and any(s.matches(rule.id, event, now)
                                         for s in self.suppressions):
                stats["suppressed"] += 1
                continue
            if rule.id not in self.windowed:
                out.append(alert)
                continue
            size = rule.window_minutes * 60
            bucket = int(event_seconds(event, now) // size)
            gkey = (rule.window_group or rule.id, key_of(rule, event), bucket)
            group = groups.get(gkey)
            if group is None:
                groups[gkey] = group = []
                out.append(gkey)
            group.append(alert)
        result: list[dict[str, Any]] = []
        for item in out:
            if item.__class__ is not tuple:
                result.append(item)
                continue
            group = groups[item]
            rule = self.rules[_rule_id(group[0])]
            kept = self._decide(rule, item, group)
            result.extend(kept)
        return result

    def _decide(self, rule: Any, gkey: tuple[str, str, int], group: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
        name, key, bucket = gkey
        size = rule.window_minutes * 60
        pk = f"{name}|{key}|{size}|{bucket}"
        expires = int((bucket + 2) * size + TTL_MARGIN_SECONDS)
        first = group[0]
        stats = self.stats
        try:
            if rule.threshold:
                batch = sum(int((a.get("threshold") or {}).get("count") or 1) for a in group)
                count = self.store.add(pk, batch, expires)
                total = count
                if total < rule.threshold:
                    total += self.store.count(f"{name}|{key}|{size}|{bucket - 1}")
                if total < rule.threshold:
                    # the next window may already hold matches delivered before these (review
                    # F3): this window plus the next reaching N is the next window's crossing,
                    # claimed there, so it alerts once whichever half arrives last
                    later = self.store.count(f"{name}|{key}|{size}|{bucket + 1}")
                    if later and count + later >= rule.threshold:
                        total = count + later
                        bucket += 1
                        pk = f"{name}|{key}|{size}|{bucket}"
                        expires = int((bucket + 2) * size + TTL_MARGIN_SECONDS)
                if total < rule.threshold:
                    stats["below_threshold"] += len(group)
                    return []
                owned, _ = self.store.claim(pk, "alerted", str(first["alert_id"]), expires)
                if not owned:
                    stats["deduplicated"] += len(group)
                    return []
                block = dict(first.get("threshold") or {})
                block.update(count=total, limit=rule.threshold,
                             window=f"{rule.window_minutes}m")
                alert = dict(first)
                alert["threshold"] = block
                alert["window"] = self._block(rule, key, bucket, total, None)
                stats["deduplicated"] += len(group) - 1
                return [alert]
            if not self.dedup:
                return group
            owned, count = self.store.claim(pk, "opener", str(first["alert_id"]), expires,
                                            n=len(group))
            if not owned:
                stats["deduplicated"] += len(group)
                return []
            previous = self.store.count(f"{name}|{key}|{size}|{bucket - 1}")
            alert = dict(first)
            alert["window"] = self._block(rule, key, bucket, count, previous)
            stats["deduplicated"] += len(group) - 1
            return [alert]
        except Exception as e:  # noqa: BLE001 - a duplicate beats a loss
            stats["state_errors"] += 1
            if self.log is not None:
                what = "alert state table unavailable" if isinstance(e, StateError) else \
                    f"alert window failed ({type(e).__name__})"
                self.log.error(f"{what}: alerts pass without cross-invocation windows",
                               extra={"error": str(e)[:300]})
            if rule.threshold:      # the invocation's own count, as without a table
                batch = sum(int((a.get("threshold") or {}).get("count") or 1) for a in group)
                return group if batch >= rule.threshold else []
            return group            # dedup never costs an alert

    @staticmethod
    def _block(rule: Any, key: str, bucket: int, count: int, previous: int | None
               ) -> dict[str, Any]:
        size = rule.window_minutes * 60
        out: dict[str, Any] = {"minutes": rule.window_minutes, "key": key,
                               "start": _iso(bucket * size), "end": _iso((bucket + 1) * size),
                               "matches": count}
        if rule.window_group:
            out["group"] = rule.window_group
        if previous:
            out["previous_window_matches"] = previous
        return out


def _rule_id(alert: dict[str, Any]) -> Any:
    rule = alert.get("rule")
    return rule.get("id") if isinstance(rule, dict) else None


def store_from_env(env: Mapping[str, str], client_factory: Callable[[str], Any],
                   sleep: Callable[[float], None] = time.sleep, log: Any = None) -> Any | None:
    """The DynamoDB store when ``ALERT_STATE_TABLE_NAME`` is set, else None (the caller uses a
    fresh :class:`MemoryStore` per invocation)."""
    table = env.get(ENV_TABLE)
    if not table:
        return None
    factory = for_state_table(client_factory)   # the default: one attempt, short timeouts
    return DynamoStore(table, lambda: factory("dynamodb"), sleep, log)
