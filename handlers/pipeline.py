"""The pure pipeline: decode -> records -> rules -> alerts. No AWS calls, no globals.

``decode_*`` turn an invocation's input into subscription envelopes; :class:`Pipeline` turns one
envelope into a :class:`BatchResult` (counts, lag samples, alerts, and the records that must go to
the failure queue). Sinks and metrics live in :mod:`handlers.processor`.
"""

from __future__ import annotations

import binascii
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

try:  # zlib-ng: the zlib API with an inflate about twice as fast; stdlib zlib when absent
    from zlib_ng import zlib_ng as _inflate
except ImportError:  # pragma: no cover - exercised by tests through the ``lib`` argument
    _inflate = zlib  # type: ignore[assignment]

from handlers import alerts as A
from handlers.canary import CANARY_EVENTS, canary_nonce, observation
from handlers.detection.patterns import PatternIndex, compile_pattern
from handlers.detection.rules import Rule, build_index
from handlers.detection.thresholds import key_of, match_key, threshold_block
from handlers.expected import is_expected_change
from handlers.jsonsafe import dumps

CLOUDTRAIL_MAX_EVENT_BYTES = 262_144   # CloudTrail never sends larger events (since eventVersion 1.05)
# A Kinesis record carries up to 1 MiB of gzip; real CloudTrail batches inflate ~10x. 16 MiB leaves
# headroom over that (peak RSS measured in docs/processor.md); larger is refused as a possible bomb.
DEFAULT_MAX_DECOMPRESSED = 16 * 1024 * 1024
# CloudWatch Logs timestamps are epoch milliseconds; outside this range a value cannot be a real
# delivery time (and lags computed from it would be values CloudWatch metrics reject).
MAX_TIMESTAMP_MS = 2 ** 53
DEFAULT_LAG_THRESHOLD = 900.0
DEFAULT_SKEW_TOLERANCE = 60.0
_UTC = timezone.utc
_MISSING: Any = object()
_NUMBER = (int, float)


class PayloadError(ValueError):
    """A subscription payload that cannot be decoded. ``kind`` is a stable machine-readable name."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


# ----------------------------------------------------------------------------------- decode

INFLATE_BACKEND = _inflate.__name__


def decompress(raw: bytes, max_bytes: int, lib: Any = _inflate) -> bytes:
    """gzip or zlib (header auto-detected), refusing output larger than ``max_bytes``.

    ``lib`` is ``zlib_ng.zlib_ng`` when installed (the Lambda artifact bundles it), else ``zlib``;
    both have the same API and produce the same bytes.
    """
    d = lib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        out = d.decompress(raw, max_bytes + 1)
    except lib.error as e:
        raise PayloadError("not_compressed", f"data is not gzip or zlib: {e}") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise PayloadError("too_large", f"decompressed data exceeds the {max_bytes}-byte cap "
                           f"(MAX_DECOMPRESSED_BYTES); refusing a possible decompression bomb")
    if not d.eof:
        raise PayloadError("truncated", f"compressed stream ends early after {len(out)} bytes")
    if d.unused_data:
        # CloudWatch Logs sends exactly one gzip member. A second member or junk after the stream
        # is refused whole (routed as a payload error), never silently ignored.
        raise PayloadError("trailing_data", f"{len(d.unused_data)} byte(s) after the end of the "
                           f"compressed stream (a second gzip member or junk)")
    return out


def decode_subscription_data(data: Any, max_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> dict[str, Any]:
    """``awslogs.data`` (or a Kinesis record's data) -> the subscription envelope dict."""
    if isinstance(data, _Whole):
        raise PayloadError("bad_record", "Kinesis batch entry without a kinesis object, data or a "
                           "unique sequence number")
    if not isinstance(data, str | bytes) or not data:
        raise PayloadError("bad_envelope", "missing data")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)   # = b64decode(validate=True), no copy
    except (binascii.Error, ValueError) as e:
        raise PayloadError("bad_base64", f"data is not valid base64: {e}") from None
    body = decompress(raw, max_bytes)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise PayloadError("bad_json", f"decompressed data is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("messageType"), str):
        raise PayloadError("bad_envelope", "not a CloudWatch Logs subscription payload "
                           "(no messageType)")
    if doc["messageType"] == "DATA_MESSAGE" and not isinstance(doc.get("logEvents"), list):
        raise PayloadError("bad_envelope", "DATA_MESSAGE without a logEvents list")
    return doc


def iter_sources(event: Any) -> tuple[str, list[tuple[str, Any]]]:
    """Split an invocation event into (mode, [(source_id, base64 data), ...]).

    Kinesis: the source id is the record's sequence number (what ``batchItemFailures`` reports).
    A record that is not a Kinesis record, or has no usable sequence number, gets ``record#N`` and
    its whole record as data, so it is routed as a payload error instead of failing the batch.
    """
    if isinstance(event, dict):
        awslogs = event.get("awslogs")
        if isinstance(awslogs, dict):
            return "awslogs", [("awslogs", awslogs.get("data"))]
        records = event.get("Records")
        if isinstance(records, list) and records and any(
                isinstance(r, dict) and isinstance(r.get("kinesis"), dict) for r in records):
            out: list[tuple[str, Any]] = []
            seen: set[str] = set()
            for n, r in enumerate(records):
                kin = r.get("kinesis") if isinstance(r, dict) else None
                seq = kin.get("sequenceNumber") if isinstance(kin, dict) else None
                if isinstance(seq, str) and seq and seq not in seen and not seq.startswith("record#"):
                    seen.add(seq)
                    out.append((seq, kin.get("data")))
                else:
                    out.append((f"record#{n}", _Whole(r)))
            return "kinesis", out
    raise PayloadError("unsupported_event", "expected {'awslogs': {'data': ...}} or Kinesis "
                       "'Records' carrying CloudWatch Logs subscription data")


class _Whole:
    """A Kinesis batch entry that is not a usable Kinesis record: routed whole as a payload error."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def source_data(data: Any) -> Any:
    """The JSON value to keep in a payload failure record (the data, or the whole bad entry)."""
    return data.value if isinstance(data, _Whole) else data


# ----------------------------------------------------------------------------------- records

def parse_event_time(value: Any) -> float | None:
    """CloudTrail eventTime ("2023-07-10T09:41:14Z") -> epoch seconds, or None."""
    if type(value) is not str:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.timestamp()


def _text(value: Any) -> str | None:
    """An envelope field as text (it may be any JSON value in a hostile payload)."""
    if value is None or value.__class__ is str:
        return value
    return dumps(value).decode("utf-8")


def utf8_size(message: str) -> int:
    if message.isascii():
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


@dataclass
class Settings:
    max_event_bytes: int = CLOUDTRAIL_MAX_EVENT_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED
    lag_threshold: float = DEFAULT_LAG_THRESHOLD
    skew_tolerance: float = DEFAULT_SKEW_TOLERANCE
    # EXPECTED_CHANGE_PRINCIPALS: role ARNs that run trailwatch (empty: nothing is marked expected)
    expected_principals: frozenset[str] = frozenset()


class BatchResult:
    """What one envelope produced. A plain class with slots (not a dataclass): one is made per
    payload, and a dataclass costs about a millisecond to define at cold start."""

    __slots__ = ("log_group", "log_stream", "log_events", "records", "oversize", "malformed",
                 "skewed", "no_event_time", "delivery_lags", "receipt_lags", "delayed", "alerts",
                 "failures", "canaries", "pending")

    def __init__(self, log_group: str | None = None, log_stream: str | None = None) -> None:
        self.log_group = log_group
        self.log_stream = log_stream
        self.log_events = self.records = self.oversize = self.malformed = 0
        self.skewed = self.no_event_time = 0
        self.delivery_lags: list[float] = []
        self.receipt_lags: list[float] = []
        self.delayed: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.canaries: list[dict[str, Any]] = []   # trailwatch's own canary
        # process_envelope(lazy=True): alert id -> what its rule-match alert is built from
        self.pending: dict[str, tuple[Any, ...]] = {}


# The canary's event names, filed in the pipeline's rule dispatcher as one more (first) key: a
# record meets the canary check only when its eventName is one of them, at no cost for the others.
_CANARY = "canary"
_CANARY_PATTERN = compile_pattern(
    "{ " + " || ".join(f'$.eventName = "{name}"' for name in CANARY_EVENTS) + " }")


class Pipeline:
    def __init__(self, rules: list[Rule], settings: Settings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.index = build_index(rules)
        # [_CANARY] + the rules' matches for a canary-named record, else the rules' matches
        self._matches = PatternIndex([(_CANARY, _CANARY_PATTERN)]
                                     + [(r, r.pattern) for r in rules]).matches
        self.settings = settings or Settings()
        self.clock = clock

    def _failure(self, result: BatchResult, env: dict[str, Any], ev: Any, reason: str,
                 detail: str) -> None:
        result.malformed += 1
        doc: dict[str, Any] = {
            "reason": reason,
            "detail": detail,
            "owner": env.get("owner"),
            "log_group": env.get("logGroup"),
            "log_stream": env.get("logStream"),
        }
        if isinstance(ev, dict):
            doc["log_event_id"] = ev.get("id")
            doc["timestamp"] = ev.get("timestamp")
            doc["message"] = ev.get("message")     # kept as its JSON value, whatever its type
            extra = {k: v for k, v in ev.items() if k not in ("id", "timestamp", "message")}
            if extra or "message" not in ev:
                doc["log_event"] = ev              # anything else it carried, whole
        else:
            doc["log_event_id"] = None
            doc["timestamp"] = None
            doc["message"] = None
            doc["log_event"] = ev                  # not an object: the whole value
        result.failures.append(doc)

    def process_envelope(self, env: dict[str, Any], lazy: bool = False) -> BatchResult:
        """Process one DATA_MESSAGE envelope (the hot loop: locals only, no attribute writes).

        ``lazy``: rule matches become placeholders (:func:`placeholder`) and ``result.pending``
        says how to build each; :func:`build_alerts` builds those that survive the windows stage,
        so a match that is deduplicated, suppressed or below its threshold is never built."""
        s = self.settings
        limit = s.max_event_bytes
        quick = limit // 4          # a str of <= limit/4 chars is <= limit UTF-8 bytes
        threshold = s.lag_threshold
        skew = -s.skew_tolerance
        now = self.clock()
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        matches = self._matches
        fromisoformat = datetime.fromisoformat
        rule_alert = A.rule_alert
        principals = s.expected_principals
        times: dict[str, float | None] = {}   # events of one batch share their seconds
        result = BatchResult(log_group=env.get("logGroup"), log_stream=env.get("logStream"))
        delivery_lags = result.delivery_lags
        receipt_lags = result.receipt_lags
        alerts = result.alerts
        seen: set[tuple[str, str]] = set()
        alert_id = A.alert_id
        RecordFacts = A.RecordFacts
        groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}   # threshold rules
        events = env.get("logEvents") or ()
        n_oversize = n_skewed = n_no_time = 0
        max_ts = MAX_TIMESTAMP_MS
        lg_text = _text(result.log_group)
        ls_text = _text(result.log_stream)
        pending = result.pending if lazy else None
        # what a placeholder's alert is built from keeps only the envelope and log event fields
        # the alert reads (delivery_info): not the whole payload (every log event's message)
        # until the end of the invocation
        slim_env = {"owner": env.get("owner"), "logGroup": env.get("logGroup"),
                    "logStream": env.get("logStream")} if lazy else env

        for ev in events:
            try:
                msg = ev["message"]
                ts = ev["timestamp"]
                eid = ev.get("id")
            except (KeyError, TypeError, AttributeError):
                msg = ts = eid = None
            if msg.__class__ is not str or ts.__class__ not in _NUMBER or not 0 <= ts <= max_ts \
                    or (eid is not None and eid.__class__ is not str):
                self._failure(result, env, ev, "bad_log_event",
                              "log event needs a string message, a numeric epoch-millisecond "
                              "timestamp and a string id")
                continue
            if len(msg) > quick:
                size = utf8_size(msg)
                if size > limit:
                    n_oversize += 1
                    alerts.append(A.oversize_alert(env, ev, size, limit))
                    continue
            try:
                rec = loads(msg)
            except decode_error as e:
                self._failure(result, env, ev, "invalid_json", str(e))
                continue
            if rec.__class__ is not dict or not ("eventVersion" in rec or "eventID" in rec
                                                  or "eventType" in rec or "eventSource" in rec):
                self._failure(result, env, ev, "not_cloudtrail",
                              "JSON is not a CloudTrail record (no eventVersion/eventID/"
                              "eventType/eventSource)")
                continue
            delivered = ts / 1000.0
            receipt_lags.append(now - delivered)
            et = rec.get("eventTime")
            if et.__class__ is str:
                t = times.get(et, _MISSING)
                if t is _MISSING:   # parse_event_time, inlined: this runs for most records
                    try:
                        dt = fromisoformat(et)
                        t = (dt if dt.tzinfo is not None else dt.replace(tzinfo=_UTC)).timestamp()
                    except ValueError:
                        t = None
                    times[et] = t
            else:
                t = None
            if t is None:
                n_no_time += 1
                lag = None
            else:
                lag = delivered - t
                delivery_lags.append(lag)
                if lag > threshold:
                    addendum = rec.get("addendum")
                    reason = addendum.get("reason") if addendum.__class__ is dict else None
                    if reason is not None and reason.__class__ is not str:   # any JSON value
                        reason = dumps(reason).decode("utf-8") \
                            if not isinstance(reason, bool | int | float) else str(reason)
                    result.delayed.append({
                        "key": A.event_key(rec, ev.get("id")),
                        "lag": lag,
                        "reason": reason,
                        "log_group": lg_text,
                        "log_stream": ls_text,
                    })
                elif lag < skew:
                    n_skewed += 1
            hits = matches(rec)
            if hits and hits[0] is _CANARY:     # verify --canary: logged, never alerted
                nonce = canary_nonce(rec, env)
                if nonce is not None:
                    result.canaries.append(observation(nonce, rec, env, ev, lag, now - delivered))
                    continue
                hits = hits[1:]
            if hits:
                key = A.event_key(rec, eid)
                facts = None
                expected = None
                # lazy: the log event as a placeholder's alert reads it (not its message)
                lev = ev if pending is None else {"id": eid, "timestamp": ts}
                for rule in hits:
                    # (rule, event key) is what the alert id hashes: a redelivered event gets no
                    # second alert, and the id is computed only for alerts that are built.
                    once = (rule.id, key)
                    if once in seen:
                        continue
                    seen.add(once)
                    if expected is None:
                        expected = is_expected_change(rec, principals) if principals else False
                    if rule.threshold:
                        # Threshold rule: the alert is built only if the group reaches N.
                        gkey = (rule.id, key_of(rule, rec))
                        group = groups.get(gkey)
                        if group is None:
                            groups[gkey] = group = []
                            alerts.append(gkey)   # the group's place: where its first match was
                        group.append((rule, rec, lev, lag, key, expected))
                        continue
                    ident = alert_id("rule", rule.id, key)
                    if pending is not None:
                        if facts is None:
                            facts = [None]      # built once for all the record's alerts
                        pending[ident] = (rule, rec, slim_env, lev, lag, expected, facts)
                        alerts.append(placeholder(rule, rec, ident, slim_env["owner"]))
                        continue
                    if facts is None:
                        facts = RecordFacts(rec, env, ev, lag)
                    alerts.append(rule_alert(rule, rec, env, ev, lag, ident=ident,
                                             expected_change=expected, facts=facts))
        result.log_events = len(events)
        result.oversize = n_oversize
        result.records = result.log_events - n_oversize - result.malformed
        result.skewed = n_skewed
        result.no_event_time = n_no_time
        result.alerts = self._collapse(alerts, groups, slim_env, pending) if groups else alerts
        return result


    @staticmethod
    def _collapse(alerts: list[Any], groups: dict[tuple[str, str], list[tuple[Any, ...]]],
                  env: dict[str, Any], pending: dict[str, tuple[Any, ...]] | None = None
                  ) -> list[dict[str, Any]]:
        """Threshold rules (:mod:`handlers.detection.thresholds`): each (rule, principal) group with at
        least N matches becomes one alert, in the place of its first match; smaller groups are
        dropped, except for rules with a window (``window_minutes``): :mod:`handlers.alert_state`
        adds their count to the window's. Only the alerts that are kept are ever built."""
        out: list[dict[str, Any]] = []
        for item in alerts:
            if item.__class__ is not tuple:
                out.append(item)
                continue
            group = groups[item]
            rule, rec, ev, lag, key, expected = group[0]
            if len(group) < rule.threshold and not rule.window_minutes:
                continue
            ident = A.alert_id("rule", rule.id, key)
            if pending is not None:
                pending[ident] = (rule, rec, env, ev, lag, expected, [None])
                alert = placeholder(rule, rec, ident, env.get("owner"))
            else:
                alert = A.rule_alert(rule, rec, env, ev, lag, ident=ident, expected_change=expected)
            alert["threshold"] = threshold_block(
                [match_key(g[1].get("eventID"), g[2].get("id")) for g in group], rule.threshold,
                item[1])
            out.append(alert)
        return out


def placeholder(rule: Rule, record: dict[str, Any], ident: str,
                owner: Any = None) -> dict[str, Any]:
    """A rule match before its alert is built: what the windows stage reads (kind, id, rule, the
    record itself as ``event``: suppressions, keys and times are read from the record, as the
    pipeline's own threshold groups read them; and the sending account, ``delivery.owner``, as
    on the alert). Never published: :func:`build_alerts` replaces it."""
    return {"kind": "rule_match", "alert_id": ident, "rule": rule.doc, "event": record,
            "delivery": {"owner": owner}}


# What the windows stage adds to an alert, carried from a placeholder to the alert built from it.
_CARRIED = ("threshold", "window")


def build_alerts(alerts: list[dict[str, Any]], pending: dict[str, tuple[Any, ...]]
                 ) -> list[dict[str, Any]]:
    """The alerts to publish: each placeholder in ``alerts`` (an id in ``pending``) replaced by
    its rule-match alert (what :func:`handlers.alerts.rule_alert` builds, plus the ``threshold``
    and ``window`` blocks given to the placeholder); other alerts as they are."""
    if not pending:
        return alerts
    out: list[dict[str, Any]] = []
    for a in alerts:
        p = pending.get(a["alert_id"]) if a.get("kind") == "rule_match" else None
        if p is None:
            out.append(a)
            continue
        rule, rec, env, ev, lag, expected, shared = p
        facts = shared[0]
        if facts is None:
            facts = shared[0] = A.RecordFacts(rec, env, ev, lag)
        full = A.rule_alert(rule, rec, env, ev, lag, ident=a["alert_id"],
                            expected_change=expected, facts=facts)
        for k in _CARRIED:
            if k in a:
                full[k] = a[k]
        out.append(full)
    return out


def iter_cases(rules: list[Rule]) -> Iterator[tuple[Rule, str, dict[str, Any]]]:
    """(rule, "match"|"no_match", record) for every test case carried by the rules."""
    for rule in rules:
        for kind in ("match", "no_match"):
            for rec in rule.tests.get(kind, ()):
                yield rule, kind, rec
