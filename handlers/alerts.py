"""Alert documents: deterministic ids, incident-response context, and byte-exact size fitting.

The alert contract is versioned (``schema``) and published as a JSON Schema beside this module
(:data:`SCHEMA_FILE`); the "Alert contract and routing" section of docs/processor.md lists what
changed from ``trailwatch.alert/1``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from handlers.jsonsafe import dumps as _safe_dumps

SCHEMA = "trailwatch.alert/2"
SCHEMA_FILE = Path(__file__).with_name("alert-schema-v2.json")

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
    "requestID",
    "sharedEventID",
    "eventCategory",
    "managementEvent",
    "readOnly",
    "vpcEndpointId",
    "vpcEndpointAccountId",
    "sessionCredentialFromConsole",
)
USER_IDENTITY_FIELDS = ("type", "arn", "accountId", "principalId", "accessKeyId", "userName",
                        "invokedBy", "identityProvider")
SESSION_ISSUER_FIELDS = ("type", "arn", "accountId", "principalId", "userName")
# Bulky context, truncated (bulkiest first) when an alert would exceed a sink's limit.
BULKY_FIELDS = ("requestParameters", "responseElements", "additionalEventData", "resources",
                "serviceEventDetails", "insightDetails", "tlsDetails")
# Free-text identity fields that may be shortened as a last resort (never removed).
LAST_RESORT_FIELDS = ("errorMessage", "userAgent")
PREVIEW_CHARS = 256
TITLE_CHARS = 256          # = ASFF Title
DESCRIPTION_CHARS = 1024   # = ASFF Description
TEXT_VALUE_CHARS = 128     # a record value repeated in title/remediation or an aggregate
MAX_RESOURCES = 10         # affected ARNs per alert (EventBridge entry size counts each one)
MAX_ARN_CHARS = 1024
DEFAULT_AGGREGATION_THRESHOLD = 20
AGGREGATE_SAMPLES = 10
DETAIL_TYPES = {"rule_match": "trailwatch rule match",
                "oversize_event": "trailwatch oversize event",
                "delivery_delayed": "trailwatch delivery delayed"}


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


def _identity(ui: dict[str, Any]) -> dict[str, Any]:
    """The identity block: who, with which key, through which role session (MFA, source identity)."""
    out = {k: ui[k] for k in USER_IDENTITY_FIELDS if k in ui}
    sc = ui.get("sessionContext")
    if sc.__class__ is dict:
        ctx: dict[str, Any] = {}
        issuer = sc.get("sessionIssuer")
        if issuer.__class__ is dict:
            ctx["sessionIssuer"] = {k: issuer[k] for k in SESSION_ISSUER_FIELDS if k in issuer}
        attrs = sc.get("attributes")
        if attrs.__class__ is dict:
            ctx["attributes"] = {k: attrs[k] for k in ("mfaAuthenticated", "creationDate")
                                 if k in attrs}
        for k in ("sourceIdentity", "ec2RoleDelivery"):
            if k in sc:
                ctx[k] = sc[k]
        out["sessionContext"] = ctx
    return out


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record[k] for k in IDENTITY_FIELDS if k in record}
    ui = record.get("userIdentity")
    if ui.__class__ is dict:
        out["userIdentity"] = _identity(ui)
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


def _text(value: Any) -> str:
    return value if value.__class__ is str else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _partition(record: dict[str, Any]) -> str:
    region = _text(record.get("awsRegion"))
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


# arn:partition:service:region:account:resource (EventBridge and Security Hub get only these).
_ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|aws)?:[^\x00-\x1f]+\Z")

# Request parameters that name a resource whose ARN is unambiguous, per event source.
_NAMED = {
    "s3.amazonaws.com": (("bucketName", "arn:{p}:s3:::{v}"),),
    "iam.amazonaws.com": (("userName", "arn:{p}:iam::{a}:user/{v}"),
                          ("roleName", "arn:{p}:iam::{a}:role/{v}"),
                          ("groupName", "arn:{p}:iam::{a}:group/{v}")),
    "cloudtrail.amazonaws.com": (("name", "arn:{p}:cloudtrail:{r}:{a}:trail/{v}"),),
    "kms.amazonaws.com": (("keyId", "arn:{p}:kms:{r}:{a}:key/{v}"),),
    "ec2.amazonaws.com": (("groupId", "arn:{p}:ec2:{r}:{a}:security-group/{v}"),),
}


def affected_resources(record: dict[str, Any]) -> list[str]:
    """ARNs of the resources an event acted on (not the caller), at most :data:`MAX_RESOURCES`.

    From CloudTrail's ``resources`` list, ARN-valued request parameters, and the few resource names
    whose ARN is unambiguous (S3 bucket, IAM user/role/group, trail, KMS key, security group).
    """
    found: list[str] = []
    candidates: list[Any] = []
    res = record.get("resources")
    if res.__class__ is list:
        candidates += [r.get("ARN") for r in res if r.__class__ is dict]
    params = record.get("requestParameters")
    if params.__class__ is dict:
        for value in params.values():
            if value.__class__ is str:
                if value.startswith("arn:"):    # nothing else can be kept below
                    candidates.append(value)
            elif value.__class__ is list:
                candidates += value[:MAX_RESOURCES]
        named = _NAMED.get(_text(record.get("eventSource")))
        if named:
            acct, region = _text(record.get("recipientAccountId")), _text(record.get("awsRegion"))
            for key, template in named:
                v = params.get(key)
                if (v.__class__ is str and v and not v.startswith("arn:") and "/" not in v
                        and (acct or "{a}" not in template) and (region or "{r}" not in template)):
                    candidates.append(template.format(p=_partition(record), a=acct, r=region, v=v))
    for arn in candidates:
        if (arn.__class__ is str and arn.startswith("arn:") and len(arn) <= MAX_ARN_CHARS
                and arn not in found and _ARN.match(arn)):
            found.append(arn)
            if len(found) == MAX_RESOURCES:
                break
    return found


def principal_of(event: dict[str, Any]) -> str:
    """The acting principal of an alert's ``event`` (ARN, else principal id, else account)."""
    ui = event.get("userIdentity")
    if ui.__class__ is dict:
        for k in ("arn", "principalId", "accountId"):
            if ui.get(k).__class__ is str and ui[k]:
                return ui[k]
        issuer = (ui.get("sessionContext") or {}).get("sessionIssuer")
        if issuer.__class__ is dict and _text(issuer.get("arn")):
            return issuer["arn"]
    return "unknown"


class RecordFacts:
    """What every alert on one record shares: the summarised event, its resources, the delivery
    block and the record values the texts repeat. Built once per record however many rules hit
    it (the alerts share these objects and never modify them; :func:`fit` copies before it
    truncates)."""

    __slots__ = ("event", "resources", "delivery", "who", "what", "where")

    def __init__(self, record: dict[str, Any], envelope: dict[str, Any],
                 log_event: dict[str, Any], lag: float | None) -> None:
        event = self.event = summarize(record)
        self.resources = affected_resources(record)
        self.delivery = delivery_info(envelope, log_event, lag)
        # Record values are clipped before they are repeated: the texts add little to an
        # alert's size.
        self.who = _clip(principal_of(event), TEXT_VALUE_CHARS)
        self.what = _join2(" ", event.get("eventSource"), event.get("eventName"))
        self.where = _join2("/", event.get("recipientAccountId"), event.get("awsRegion"))


def _join2(sep: str, a: Any, b: Any) -> str:
    """The non-empty strings among ``a``, ``b`` (each clipped), joined by ``sep``."""
    a = _clip(a, TEXT_VALUE_CHARS) if a.__class__ is str else ""
    b = _clip(b, TEXT_VALUE_CHARS) if b.__class__ is str else ""
    return f"{a}{sep}{b}" if a and b else a or b


def rule_static_texts(rule_doc: dict[str, Any]) -> tuple[str, str, str | None]:
    """The parts of a rule's alert texts that depend on the rule only: (title head, description,
    remediation or None when it names the record's principal). :attr:`handlers.detection.rules.Rule.
    alert_texts` keeps them, so they are built once per rule."""
    desc = rule_doc.get("description") or f'Rule {rule_doc["id"]} matched a CloudTrail event.'
    if rule_doc.get("cis"):
        desc += f' (CIS AWS Foundations Benchmark {rule_doc["cis"]}.)'
    remediation = rule_doc.get("remediation")
    return (f'{rule_doc.get("title") or rule_doc["id"]}: ', _clip(desc, DESCRIPTION_CHARS),
            _clip(remediation, DESCRIPTION_CHARS) if remediation else None)


def _rule_texts(rule: Any, facts: RecordFacts) -> tuple[str, str, str]:
    head, description, remediation = rule.alert_texts
    what = facts.what or "event"
    title = f"{head}{what} by {facts.who}"
    if facts.where:
        title += f" in {facts.where}"
    if remediation is None:
        remediation = _clip(
            f'Confirm with {facts.who} that {facts.what or "this change"} was authorised; if not, '
            "revert it and rotate the credentials used (see eventID in CloudTrail event history).",
            DESCRIPTION_CHARS)
    return _clip(title, TITLE_CHARS), description, remediation


def rule_alert(rule: Any, record: dict[str, Any], envelope: dict[str, Any],
               log_event: dict[str, Any], lag: float | None, *,
               expected_change: bool = False, ident: str | None = None,
               facts: RecordFacts | None = None) -> dict[str, Any]:
    """A rule-match alert. ``expected_change`` is decided by the caller from trusted configuration
    (never from the record: user agents and other record fields are evidence, not authority).
    ``ident`` is the alert id when the caller already computed it (the pipeline dedupes on it);
    ``facts`` the record's :class:`RecordFacts` when other rules hit the same record."""
    if facts is None:
        facts = RecordFacts(record, envelope, log_event, lag)
    title, description, remediation = _rule_texts(rule, facts)
    return {
        "schema": SCHEMA,
        "alert_id": ident or alert_id("rule", rule.id, event_key(record, log_event.get("id"))),
        "kind": "rule_match",
        "title": title,
        "description": description,
        "remediation": remediation,
        "rule": rule.doc,
        "event": facts.event,
        "resources": facts.resources,
        "delivery": facts.delivery,
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
        "title": _clip(f"Log event of {size} bytes in {envelope.get('logGroup')} is larger than "
                       f"CloudTrail's {limit}-byte event limit", TITLE_CHARS),
        "description": "CloudTrail never delivers events larger than 256 KB, so this log event was "
                       "written by something other than CloudTrail (or was altered). It was not "
                       "parsed; its first bytes are in event.first_bytes.",
        "remediation": "Find the writer of this log stream (CloudTrail event history: PutLogEvents "
                       "on the log group) and restrict logs:PutLogEvents on the trail's log group "
                       "to CloudTrail's role.",
        "rule": {"id": "trailwatch-oversize-event", "title": "Log event larger than CloudTrail's "
                 "256 KB event limit", "severity": "MEDIUM", "source": "trailwatch"},
        "event": {"size_bytes": size, "limit_bytes": limit, "first_bytes": head},
        "resources": [],
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
        "title": _clip(f"{len(delayed)} CloudTrail event(s) delivered up to "
                       f"{round(worst['lag'])} s after they happened (threshold {threshold:g} s)",
                       TITLE_CHARS),
        "description": "Alerts on these events arrived late: detections ran after the lag "
                       "threshold. event.reasons counts CloudTrail's addendum reasons "
                       "(DELIVERY_DELAY, SERVICE_OUTAGE, UPDATED_DATA).",
        "remediation": "Check the AWS Health Dashboard for CloudTrail or CloudWatch Logs events in "
                       "the affected Regions; review the late events (event.event_keys) by hand.",
        "rule": {"id": "trailwatch-delivery-delayed",
                 "title": "CloudTrail delivered events later than the lag threshold",
                 "severity": "LOW", "source": "trailwatch"},
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
        "resources": [],
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


# Each alert's serialised form while one publish is in flight, shared by the sinks that fit it
# (SNS and EventBridge serialise the same alert: once is enough). Filled and emptied by
# :func:`shared_bodies`; keyed by id() and kept with the alert, so a reused id cannot match.
_BODIES: dict[int, tuple[dict[str, Any], bytes]] = {}


class shared_bodies:  # noqa: N801 - used as a context manager
    """``with shared_bodies(alerts):`` :func:`fit` serialises each of ``alerts`` once."""

    def __init__(self, alerts: Iterable[dict[str, Any]]) -> None:
        self.alerts = alerts

    def __enter__(self) -> shared_bodies:
        try:
            for a in self.alerts:
                _BODIES[id(a)] = (a, _dumps(a))
        except BaseException:
            _BODIES.clear()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _BODIES.clear()


def fit(alert: dict[str, Any], budget: int) -> bytes:
    """Serialise ``alert`` to at most ``budget`` bytes.

    Bulky context fields are replaced by a marker, bulkiest first, until it fits; identity fields
    are never removed (long free-text ones are shortened only as a last resort). The names of the
    truncated fields are recorded in the serialised alert's ``truncated_fields``; ``alert`` itself is
    never modified (each sink fits the same alert to its own limit).
    """
    hit = _BODIES.get(id(alert))
    body = hit[1] if hit is not None and hit[0] is alert else _dumps(alert)
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


# ------------------------------------------------------------------------------ routing keys

def routing_keys(alert: dict[str, Any]) -> dict[str, str]:
    """The values consumers route on (SNS attributes, EventBridge patterns, Security Hub, chat).

    ``account`` is the account the event happened in (``recipientAccountId``; for events that are
    not CloudTrail records, the log group's owner); keys without a value are left out.
    """
    rule, event, delivery = alert.get("rule"), alert.get("event"), alert.get("delivery")
    rule = rule if rule.__class__ is dict else {}
    event = event if event.__class__ is dict else {}
    delivery = delivery if delivery.__class__ is dict else {}
    out = {"alert_id": alert.get("alert_id"), "kind": alert.get("kind"),
           "rule_id": rule.get("id"), "severity": rule.get("severity"),
           "account": _text(event.get("recipientAccountId")) or delivery.get("owner"),
           "region": event.get("awsRegion"), "event_name": event.get("eventName")}
    return {k: v for k, v in out.items() if v.__class__ is str and v}


def detail_type(alert: dict[str, Any]) -> str:
    """EventBridge ``detail-type``: one per kind, so a rule selects a kind without content filters."""
    return DETAIL_TYPES.get(_text(alert.get("kind")), "trailwatch alert")


# ------------------------------------------------------------------------------ aggregation

def _short(value: Any) -> Any:
    """A record value repeated in an aggregate, bounded (record fields are attacker-sized)."""
    return _clip(value, TEXT_VALUE_CHARS) if value.__class__ is str else value if value.__class__ in (
        int, float, bool, type(None)) else None


def aggregate(alerts: Iterable[dict[str, Any]], threshold: int = DEFAULT_AGGREGATION_THRESHOLD
              ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Collapse more than ``threshold`` rule matches of one rule by one principal into one alert.

    Returns (alerts to publish, {aggregate alert_id: ids of the alerts it replaces}). Expected and
    unexpected changes are never mixed (so an expected change cannot hide an unexpected one), nor
    are accounts. ``threshold`` <= 0 disables aggregation. The aggregate keeps the earliest event
    as its ``event`` and adds ``aggregate`` = {count, first/last event time, sample event ids}.
    """
    alerts = list(alerts)
    if threshold <= 0 or len(alerts) <= threshold:   # cannot have a group above the threshold
        return alerts, {}
    # A group is one rule's alerts split further, so only rules with more than ``threshold``
    # alerts can have one: count per rule first (cheap) and group only those rules' alerts.
    per_rule: dict[Any, int] = {}
    for a in alerts:
        if a.get("kind") == "rule_match" and "aggregate" not in a:
            rid = a["rule"].get("id")
            per_rule[rid] = per_rule.get(rid, 0) + 1
    if all(n <= threshold for n in per_rule.values()):
        return alerts, {}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for a in alerts:
        if a.get("kind") == "rule_match" and "aggregate" not in a \
                and per_rule[a["rule"].get("id")] > threshold:
            key = (a["rule"].get("id"), principal_of(a["event"]),
                   _text(a["event"].get("recipientAccountId")), bool(a.get("expected_change")))
            groups.setdefault(key, []).append(a)
    replaced: dict[str, str] = {}
    made: dict[str, dict[str, Any]] = {}
    members: dict[str, list[str]] = {}
    for (rule_id, principal, _, _), group in groups.items():
        if len(group) <= threshold:
            continue
        group = sorted(group, key=lambda a: (_text(a["event"].get("eventTime")), a["alert_id"]))
        ids = sorted(a["alert_id"] for a in group)
        agg_id = alert_id("aggregate", str(rule_id), "|".join(ids))
        first, last = group[0], group[-1]
        resources: list[str] = []
        for a in group:
            for arn in a.get("resources") or ():
                if arn not in resources and len(resources) < MAX_RESOURCES:
                    resources.append(arn)
        doc = dict(first)
        doc["alert_id"] = agg_id
        doc["title"] = _clip(f"{len(group)}x {first['title']}", TITLE_CHARS)
        doc["resources"] = resources
        doc["aggregate"] = {
            "count": len(group),
            "threshold": threshold,
            "principal": _clip(principal, TEXT_VALUE_CHARS * 2),
            "first_event_time": _short(first["event"].get("eventTime")),
            "last_event_time": _short(last["event"].get("eventTime")),
            "sample_event_ids": [_short(a["event"].get("eventID"))
                                 for a in group[:AGGREGATE_SAMPLES]],
            "alert_ids": ids[:AGGREGATE_SAMPLES],
        }
        made[agg_id] = doc
        members[agg_id] = ids
        for i in ids:
            replaced[i] = agg_id
    if not made:
        return alerts, {}
    out: list[dict[str, Any]] = []
    for a in alerts:
        agg = replaced.get(a["alert_id"])
        if agg is None:
            out.append(a)
        elif agg in made:
            out.append(made.pop(agg))   # in place of its first member, once
    return out, members
