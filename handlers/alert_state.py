"""Thresholds and dedup windows that hold across invocations.

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

* Dedup (threshold 0): the first match of a (rule or group, key) in a bucket opens the bucket
  (its alert id, set if nobody holds it) and alerts; later matches only add to the bucket's
  count, and the alert that opens the next bucket carries the previous bucket's count. A
  retried invocation re-opens with the same alert id, so an alert whose delivery failed is
  raised again (a duplicate beats a loss).
* Threshold: each invocation adds its matches to the bucket's count; the count of this bucket
  plus the previous one reaching N alerts (so a burst of N within any W minutes is never missed;
  N spread over up to 2W may alert too), once per bucket. Matches that arrive after the next
  bucket's (out of order) also add the next bucket's count, and a crossing found so is raised
  in the next bucket, so it alerts once whichever half arrives last. A retried invocation that
  added to a bucket already over N (its tag is on the bucket) raises its alert again.

State lives in DynamoDB when ``ALERT_STATE_TABLE_NAME`` names a table (key ``pk``, TTL on
``expires_at``; the template creates it on demand): one item per (rule or group, key, window
size), each bucket a few attributes named by its number (``c_<n>`` count, ``o_<n>`` opener,
``t_<n>`` invocation tags, ``b_<n>``/``a_<n>`` the previous/next bucket's count as the bucket's
last matches saw it). An invocation makes ONE call per item it has alerts for, whatever the
number of buckets its matches fall in (one per MAX_BUCKETS_PER_CALL past that): an UpdateItem
that ADDs the counts and tags, SETs the openers (``if_not_exists``), the neighbour counts and
the TTL, REMOVEs buckets whose TTL has passed, and returns the item as it was before
(``ALL_OLD``). That update is atomic, so replaying the invocation's groups in order on the
returned item decides exactly as the earlier per-bucket calls did one after another, with two
differences for thresholds, both toward a duplicate: out of order, whether a bucket's alert was
raised through the previous bucket's look-ahead is read from that bucket's last match (an
earlier look-ahead followed by matches taking the previous bucket's own pair to N is missed:
the bucket alerts again); and a retried invocation re-raises a bucket over N it took part in
whether or not it raised it. A bucket's tags (16 characters per invocation adding to it) live
until the bucket is an hour and two windows old, so a busy key holds several buckets' worth; a
container stops tagging a bucket once it holds :data:`MAX_TAGS` (a later invocation's retry on
that bucket then does not re-raise), which keeps the hottest item far below DynamoDB's 400 KB.
An item the table refuses anyway (``ValidationException``) is that item's error alone: its
alerts pass (thresholds count within the invocation, ``StateErrors``) and the invocation's
other items are still called. The backtest's :class:`MemoryStore` applies the same change to a dict (keeping
every bucket), so replay and table agree.

Without a table the processor works as before and logs so at cold start: every match alerts (no
dedup windows) and thresholds count within one invocation (a :class:`MemoryStore` emptied per
invocation). Every table call is bounded (one botocore attempt with 0.5 s connect and 1 s read
timeouts, :func:`handlers.clients.state_table_config`; a few attempts on throttling here, never
past the budget); when the table cannot be used, no alert is suppressed: dedup lets every match
through and thresholds fall back to the invocation's own count, and the error is logged and
counted (``StateErrors``). Only alerts reach this module: records that match no rule cost nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from handlers.clients import for_state_table
from handlers.detection.thresholds import _key_part, key_of

ENV_TABLE = "ALERT_STATE_TABLE_NAME"
KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
MAX_TAGS = 64                         # threshold invocation tags a container adds per bucket
MAX_ATTEMPTS = 3                      # per call, on throttling / 5xx (botocore adds none: see below)
RETRY_BASE_SECONDS = 0.05
RETRYABLE = frozenset(("ProvisionedThroughputExceededException", "ThrottlingException",
                       "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable",
                       "TransactionConflictException"))
TTL_MARGIN_SECONDS = 3600
# Bucket attributes of an item: c_<bucket> count, o_<bucket> dedup opener, t_<bucket> threshold
# invocation tags (a String Set of TAG_CHARS hex digits of a digest of each invocation's first
# alert id).
COUNT, OPENER, TAGS = "c_", "o_", "t_"
# Threshold buckets also keep the neighbours' counts as the bucket's last matches saw them:
# b_<bucket> (the bucket before), a_<bucket> (the bucket after).
BEFORE, AFTER = "b_", "a_"
PREFIXES = (COUNT, OPENER, TAGS, BEFORE, AFTER)
TAG_CHARS = 16
# At most this many buckets in one call (DynamoDB's 4 KB expression limit); more buckets of one
# item in one invocation (a payload spanning dozens of windows) take one call per this many.
MAX_BUCKETS_PER_CALL = 24
MAX_REMOVED_PER_CALL = 16
STATE_BUDGET_SECONDS = 3.0            # per invocation, waiting on the table
# An eventTime further ahead than this, or before CloudTrail existed, is not the behaviour's time
# (a forged or corrupt record): it is windowed at the processor's clock instead.
MAX_FUTURE_SECONDS = 86_400
MIN_EVENT_SECONDS = 1_356_998_400.0   # 2013-01-01T00:00:00Z
_UTC = UTC


class StateError(RuntimeError):
    """The state table could not be used for this call."""


class Change:
    """One call's change to one item, a (rule or window group, key, window size): matches added
    to buckets, dedup buckets opened (if nobody holds them), threshold buckets tagged with the
    invocation and given the neighbours' counts as this call's matches of them see them (the
    neighbour's count before the call plus what this call adds to it first: ``seen_before`` /
    ``seen_after`` hold that addition), the item's TTL, and the first bucket whose TTL has not
    passed (``stale_before``: the store may drop older ones this call does not touch)."""

    __slots__ = ("adds", "opens", "tags", "seen_before", "seen_after", "expires", "stale_before")

    def __init__(self, adds: dict[int, int] | None = None, opens: dict[int, str] | None = None,
                 tags: dict[int, str] | None = None, seen_before: dict[int, int] | None = None,
                 seen_after: dict[int, int] | None = None, expires: int = 0,
                 stale_before: int | None = None) -> None:
        self.adds = adds if adds is not None else {}
        self.opens = opens if opens is not None else {}
        self.tags = tags if tags is not None else {}
        self.seen_before = seen_before if seen_before is not None else {}
        self.seen_after = seen_after if seen_after is not None else {}
        self.expires = expires
        self.stale_before = stale_before


class State:
    """An item's buckets as they were just before a call: per bucket its count, the alert id
    that opened it (dedup), the tags of the invocations that added to it (thresholds), and the
    neighbours' counts its last matches saw (``before``: b - 1, ``after``: b + 1)."""

    __slots__ = ("counts", "openers", "tags", "before", "after")

    def __init__(self, counts: dict[int, int] | None = None,
                 openers: dict[int, str] | None = None,
                 tags: dict[int, frozenset[str]] | None = None,
                 before: dict[int, int] | None = None, after: dict[int, int] | None = None
                 ) -> None:
        self.counts = counts if counts is not None else {}
        self.openers = openers if openers is not None else {}
        self.tags = tags if tags is not None else {}
        self.before = before if before is not None else {}
        self.after = after if after is not None else {}

    def __repr__(self) -> str:
        return f"State(counts={self.counts}, openers={self.openers}, tags={self.tags}, " \
               f"before={self.before}, after={self.after})"

    def copy(self) -> State:
        return State(dict(self.counts), dict(self.openers), dict(self.tags),
                     dict(self.before), dict(self.after))

    def buckets(self) -> set[int]:
        return set(self.counts) | set(self.openers) | set(self.tags) | set(self.before) | \
            set(self.after)


class MemoryStore:
    """The table's item operation on a dict: the backtest (one for the whole replay), and the
    processor without a table (``per_invocation``: emptied at each invocation, as before). It
    keeps every bucket (no TTL here: the replay needs a window's state however late a record)."""

    name = "memory"

    def __init__(self, per_invocation: bool = False) -> None:
        self.items: dict[str, State] = {}
        self.per_invocation = per_invocation

    def begin(self) -> None:
        if self.per_invocation:
            self.items.clear()

    def update(self, pk: str, change: Change) -> State:
        old = self.items.get(pk)
        if old is None:
            old = State()
        item = self.items[pk] = old.copy()     # the caller owns (and replays on) ``old``
        for b, extra in change.seen_before.items():
            item.before[b] = old.counts.get(b - 1, 0) + extra
        for b, extra in change.seen_after.items():
            item.after[b] = old.counts.get(b + 1, 0) + extra
        for b, n in change.adds.items():
            item.counts[b] = item.counts.get(b, 0) + n
        for b, owner in change.opens.items():
            item.openers.setdefault(b, owner)
        for b, tag in change.tags.items():
            item.tags[b] = item.tags.get(b, frozenset()) | {tag}
        return old


class DynamoStore:
    """The state table: one UpdateItem per item and call (``ReturnValues=ALL_OLD``), bounded
    retries, and a breaker per invocation: after one failed call, or once the invocation has
    spent ``budget_seconds`` waiting on the table, the rest of the invocation does not call it
    again (its alerts pass, as on a failure), so a slow table cannot eat the time publishing
    needs. An item holds its buckets in attributes named by bucket number: ``c_<b>`` (count,
    ``ADD``), ``o_<b>`` (dedup opener, ``SET if_not_exists``), ``t_<b>`` (threshold
    invocation tags, a String Set, ``ADD``); buckets whose TTL has passed are removed by
    later calls that know of them (``REMOVE``), and the whole item expires with ``expires_at``."""

    name = "dynamodb"
    SEEN_ITEMS = 4096                     # items whose buckets this container remembers

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
        self.seen: dict[str, set[int]] = {}   # pk -> buckets its item held at our last call
        self.full_tags: dict[str, set[int]] = {}   # pk -> buckets with MAX_TAGS tags or more

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
                if code == "ValidationException":
                    # this item's request (e.g. an item over 400 KB): its alerts pass, the
                    # other items of the invocation are still called
                    raise StateError(last[:300]) from None
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

    def update(self, pk: str, change: Change) -> State:
        remove = self._stale(pk, change)
        # A threshold bucket holding MAX_TAGS tags already gets no more from this container:
        # the item stays far below DynamoDB's 400 KB for the hottest key (the cost: a retry of
        # a later invocation on that bucket does not re-raise an alert whose delivery failed).
        full = self.full_tags.get(pk)
        if full:
            for b in full & change.tags.keys():
                del change.tags[b]
        out = self._call("update_item", **update_request(pk, change, remove))
        old = parse_item((out or {}).get("Attributes") or {})
        if len(self.seen) >= self.SEEN_ITEMS and pk not in self.seen:
            self.seen.clear()
            self.full_tags.clear()
        self.seen[pk] = (old.buckets() | set(change.adds)) - set(remove)
        crowded = {b for b, tags in old.tags.items() if len(tags) >= MAX_TAGS}
        if crowded or pk in self.full_tags:
            self.full_tags[pk] = crowded
        return old

    def _stale(self, pk: str, change: Change) -> list[int]:
        """Buckets to remove in this call: those of the item this container knows of, and the
        two before each bucket touched, whose TTL has passed (the old one-item-per-bucket
        layout let TTL delete them then), never one this call reads or writes."""
        if change.stale_before is None:
            return []
        known = set(self.seen.get(pk, ()))
        for b in change.adds:
            known.update((b - 2, b - 3))
        keep = {b + d for b in change.adds for d in (-1, 0, 1)}
        stale = sorted(b for b in known if 0 <= b < change.stale_before and b not in keep)
        return stale[-MAX_REMOVED_PER_CALL:]


def update_request(pk: str, change: Change, remove: Iterable[int] = ()) -> dict[str, Any]:
    """The UpdateItem request of one :class:`Change` (DynamoDB Developer Guide, "Using update
    expressions"): each action keyword once, no attribute the target of two actions, every
    expression name and value used. Every action reads the item as it was before the update
    (same page), so ``if_not_exists(c_<b-1>, :z) + :k`` is the neighbour's count before this
    call (plus ``:k``) even when the call also adds to it. ``ALL_OLD`` returns the item as it
    was before this update, from which the caller computes everything it needs (the update
    is atomic)."""
    names: dict[str, str] = {}
    placeholder: dict[str, str] = {}
    values: dict[str, Any] = {":e": {"N": str(change.expires)}}

    def name(attr: str) -> str:
        if attr not in placeholder:
            placeholder[attr] = ph = f"#a{len(placeholder)}"
            names[ph] = attr
        return placeholder[attr]

    sets, adds = [f"{name(TTL_ATTRIBUTE)} = :e"], []
    for i, (b, n) in enumerate(sorted(change.adds.items())):
        values[f":c{i}"] = {"N": str(n)}
        adds.append(f"{name(COUNT + str(b))} :c{i}")
        if b in change.opens:
            o = name(OPENER + str(b))
            values[f":o{i}"] = {"S": change.opens[b]}
            sets.append(f"{o} = if_not_exists({o}, :o{i})")
        if b in change.tags:
            values[f":t{i}"] = {"SS": [change.tags[b]]}
            adds.append(f"{name(TAGS + str(b))} :t{i}")
        for prefix, extras, d in ((BEFORE, change.seen_before, -1),
                                  (AFTER, change.seen_after, 1)):
            if b in extras:
                values[":z"] = {"N": "0"}
                values[f":{prefix[0]}{i}"] = {"N": str(extras[b])}
                sets.append(f"{name(prefix + str(b))} = if_not_exists("
                            f"{name(COUNT + str(b + d))}, :z) + :{prefix[0]}{i}")
    drops = [name(prefix + str(b)) for b in remove for prefix in PREFIXES]
    expr = "SET " + ", ".join(sets)
    if adds:
        expr += " ADD " + ", ".join(adds)
    if drops:
        expr += " REMOVE " + ", ".join(drops)
    return {"Key": {KEY: {"S": pk}}, "UpdateExpression": expr,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_OLD"}


def parse_item(attrs: Mapping[str, Any]) -> State:
    """An item's buckets from its DynamoDB attributes; anything else is ignored."""
    state = State()
    for name, value in attrs.items():
        prefix, sep, num = name.partition("_")
        if not sep or not num.isdigit() or not isinstance(value, dict):
            continue
        b = int(num)
        kind = prefix + "_"
        try:
            if kind in (COUNT, BEFORE, AFTER) and "N" in value:
                {COUNT: state.counts, BEFORE: state.before, AFTER: state.after}[kind][b] = \
                    int(value["N"])
            elif kind == OPENER and "S" in value:
                state.openers[b] = str(value["S"])
            elif kind == TAGS and "SS" in value:
                state.tags[b] = frozenset(value["SS"])
        except (TypeError, ValueError):
            continue
    return state


def _error_code(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str((resp.get("Error") or {}).get("Code") or "")
    return ""


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


_ISO: dict[float, str] = {}      # window boundaries repeat: each formatted once (bounded)


def _iso(seconds: float) -> str:
    text = _ISO.get(seconds)
    if text is None:
        try:
            text = datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (ValueError, OverflowError, OSError):
            text = "-"
        if len(_ISO) >= 1024:
            _ISO.clear()
        _ISO[seconds] = text
    return text


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
            gkey = (_window_name(rule, alert), key_of(rule, event), bucket)
            group = groups.get(gkey)
            if group is None:
                groups[gkey] = group = []
                out.append(gkey)
            group.append(alert)
        decided = self._decide(groups, now)
        result: list[dict[str, Any]] = []
        for item in out:
            if item.__class__ is not tuple:
                result.append(item)
            else:
                result.extend(decided[item])
        return result

    def _decide(self, groups: dict[tuple[str, str, int], list[dict[str, Any]]], now: float
                ) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
        """What each group keeps, with one store call per item (rule or group, key, window
        size) and this invocation (or per MAX_BUCKETS_PER_CALL buckets of it)."""
        decided: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        # per item, its groups in order: (gkey, rule, group, batch, owner) where owner is the
        # opener's alert id (dedup) or the invocation's tag (threshold)
        items: dict[str, list[tuple[Any, ...]]] = {}
        for gkey, group in groups.items():
            rule = self.rules[_rule_id(group[0])]
            if rule.threshold:
                batch = sum(int((a.get("threshold") or {}).get("count") or 1) for a in group)
                owner = _tag(group[0]["alert_id"])
            elif self.dedup:
                batch, owner = len(group), str(group[0]["alert_id"])
            else:
                decided[gkey] = group           # no table: every match alerts
                continue
            items.setdefault(f"{gkey[0]}|{gkey[1]}|{rule.window_minutes * 60}", []).append(
                (gkey, rule, group, batch, owner))
        for pk, plans in items.items():
            for i in range(0, len(plans), MAX_BUCKETS_PER_CALL):
                chunk = plans[i:i + MAX_BUCKETS_PER_CALL]
                try:
                    # the store's answer is ours: replayed on in place (tags are only read)
                    state = self.store.update(pk, self._change(chunk, now))
                    for plan in chunk:
                        decided[plan[0]] = self._replay(*plan, state)
                except Exception as e:  # noqa: BLE001 - a duplicate beats a loss
                    for gkey, rule, group, batch, _ in chunk:
                        if gkey not in decided:
                            decided[gkey] = self._failed(rule, group, batch, e)
        return decided

    @staticmethod
    def _change(chunk: list[tuple[Any, ...]], now: float) -> Change:
        change = Change()
        size = 0
        order: set[int] = set()                 # buckets of the groups decided so far
        for gkey, rule, _, batch, owner in chunk:
            bucket = gkey[2]
            size = rule.window_minutes * 60
            change.adds[bucket] = change.adds.get(bucket, 0) + batch
            if rule.threshold:
                change.tags[bucket] = owner
                # what this call added to the neighbours before this group (groups decide in
                # order, each seeing the ones before it)
                change.seen_before[bucket] = change.adds[bucket - 1] if bucket - 1 in order else 0
                change.seen_after[bucket] = change.adds[bucket + 1] if bucket + 1 in order else 0
            else:
                change.opens[bucket] = owner
            order.add(bucket)
        # the item lives as long as the newest bucket it can hold needs (a record may be dated
        # up to MAX_FUTURE_SECONDS ahead); a bucket's own TTL is the old per-bucket item's
        latest = int((now + MAX_FUTURE_SECONDS) // size)
        change.expires = int((max(latest, *change.adds) + 2) * size + TTL_MARGIN_SECONDS)
        change.stale_before = int((now - TTL_MARGIN_SECONDS) // size) - 2
        return change

    def _replay(self, gkey: tuple[str, str, int], rule: Any, group: list[dict[str, Any]],
                batch: int, owner: str, state: State) -> list[dict[str, Any]]:
        """One group's decision on ``state`` (the item before this call, plus the groups of
        this call decided before it), as the per-group calls made it one after another."""
        _, key, bucket = gkey
        first = group[0]
        stats = self.stats
        counts = state.counts
        if not rule.threshold:                  # dedup: the first alert id opens the bucket
            counts[bucket] = counts.get(bucket, 0) + batch
            if state.openers.setdefault(bucket, owner) != owner:
                stats["deduplicated"] += len(group)
                return []
            alert = dict(first)
            alert["window"] = self._block(rule, key, bucket, counts[bucket],
                                          counts.get(bucket - 1, 0))
            stats["deduplicated"] += len(group) - 1
            return [alert]
        limit = rule.threshold
        alerted_here, alerted_next = _alerted(state, bucket, limit), \
            _alerted(state, bucket + 1, limit)
        state.before[bucket] = counts.get(bucket - 1, 0)
        state.after[bucket] = counts.get(bucket + 1, 0)
        count = counts[bucket] = counts.get(bucket, 0) + batch
        total = count
        if total < limit:
            total += counts.get(bucket - 1, 0)
        if total < limit:
            # the next window may already hold matches delivered before these (review F3):
            # this window plus the next reaching N is the next window's crossing, so it alerts
            # once whichever half arrives last
            later = counts.get(bucket + 1, 0)
            if later and count + later >= limit:
                total = count + later
                bucket += 1
        if total < limit:
            stats["below_threshold"] += len(group)
            return []
        # a window alerts once: when its pair of counts first reaches N on a match of its own
        # (or of the window before, looking ahead); a retried invocation (its tag already on
        # the bucket it added to) raises its alert again: a duplicate beats a loss
        if (alerted_next if bucket != gkey[2] else alerted_here) and \
                owner not in state.tags.get(gkey[2], ()):
            stats["deduplicated"] += len(group)
            return []
        block = dict(first.get("threshold") or {})
        block.update(count=total, limit=limit, window=f"{rule.window_minutes}m")
        alert = dict(first)
        alert["threshold"] = block
        alert["window"] = self._block(rule, key, bucket, total, None)
        stats["deduplicated"] += len(group) - 1
        return [alert]

    def _failed(self, rule: Any, group: list[dict[str, Any]], batch: int, e: Exception
                ) -> list[dict[str, Any]]:
        self.stats["state_errors"] += 1
        if self.log is not None:
            what = "alert state table unavailable" if isinstance(e, StateError) else \
                f"alert window failed ({type(e).__name__})"
            self.log.error(f"{what}: alerts pass without cross-invocation windows",
                           extra={"error": str(e)[:300]})
        if rule.threshold:      # the invocation's own count, as without a table
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


def _window_name(rule: Any, alert: dict[str, Any]) -> str:
    """The window's name: the rule's (or its window group's), and the account whose log group
    sent the match (the envelope's ``owner``, set by CloudWatch Logs, not by the sender): a
    record another account sends to an organization-wide destination opens that account's
    windows only, never the trail's own (review: a member account's forged record for the
    management account's root opened the day's window and silenced the real one)."""
    name = rule.window_group or rule.id
    delivery = alert.get("delivery")
    owner = delivery.get("owner") if delivery.__class__ is dict else None
    if owner.__class__ is str and owner:
        return f"{name}|@{_key_part(owner)}"
    return name


def _tag(alert_id: Any) -> str:
    """An invocation's tag on a threshold bucket: a short digest of its group's first alert id
    (alert ids are 32 hex digits in the processor, readable in the backtest)."""
    return hashlib.blake2b(str(alert_id).encode("utf-8", "surrogatepass"),
                           digest_size=TAG_CHARS // 2).hexdigest()


def _alerted(state: State, bucket: int, limit: int) -> bool:
    """Whether ``bucket``'s threshold alert was raised already, from the counts its matches and
    its neighbour's saw: a bucket alerts on a match of its own that takes its count plus the
    previous bucket's to the limit, or on a match of the previous bucket that, its own pair
    below the limit, takes its count plus this bucket's (non-zero) there. The first is exact
    (counts only grow, so the bucket's last match saw the most); the second is decided on the
    previous bucket's last match (an earlier match of it that looked ahead, followed by more
    that took its own pair to the limit, is missed: the bucket alerts again, a duplicate)."""
    c = state.counts
    own = c.get(bucket, 0)
    if own and own + state.before.get(bucket, 0) >= limit:
        return True
    prev = c.get(bucket - 1, 0)
    ahead = state.after.get(bucket - 1, 0)
    return bool(prev and prev + state.before.get(bucket - 1, 0) < limit and ahead
                and prev + ahead >= limit)


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
