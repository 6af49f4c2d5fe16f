"""Chat sink: alerts rendered as Amazon Q Developer in chat applications custom notifications.

Enabled by ``CHAT_TOPIC_ARN`` (contract name): an SNS topic mapped to a Slack channel or Teams
channel in Amazon Q Developer in chat applications (formerly AWS Chatbot). Each alert becomes one
message in AWS's documented custom-notification format::

    {"version": "1.0", "source": "custom", "id": ...,
     "content": {"textType": "client-markdown", "title": ..., "description": ...,
                 "nextSteps": [...], "keywords": [...]},
     "metadata": {"threadId": ..., "summary": ..., "eventType": ..., "relatedResources": [...],
                  "additionalContext": {...}}}

Every value that comes from a CloudTrail record is attacker-influenced, so it is shown inside
inline code with the characters chat clients treat as markup or mentions (`` ` < > ``) replaced:
a crafted user agent can neither ping a channel nor fake a link. Texts are capped well below the
SNS limit (the caps are ours: AWS documents the schema, not lengths).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from handlers.alerts import principal_of, routing_keys
from handlers.clients import default_client_factory
from handlers.sinks.base import ClientFactory, _Lazy, _RetryingSink, pack
from handlers.sinks.sns import SNS_MAX_BATCH, SNS_MAX_BYTES, _group_id

ENV_TOPIC = "CHAT_TOPIC_ARN"
TITLE_CHARS = 250
DESCRIPTION_CHARS = 4000
NEXT_STEPS = 5
STEP_CHARS = 500
KEYWORDS = 10
KEYWORD_CHARS = 75
VALUE_CHARS = 300
EMOJI = {"CRITICAL": ":rotating_light:", "HIGH": ":red_circle:", "MEDIUM": ":large_orange_diamond:",
         "LOW": ":large_blue_circle:", "INFO": ":information_source:"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(value: Any) -> str:
    """An untrusted value as inline code that cannot break out into markup or mentions."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = text.replace("`", "'").replace("<", "‹").replace(">", "›").replace("\n", " ")
    return f"`{_clip(text, VALUE_CHARS)}`" if text else "`-`"


def _plain(value: Any, limit: int = VALUE_CHARS) -> str:
    return _clip(str(value).replace("<", "‹").replace(">", "›").replace("`", "'"), limit)


def notification(alert: dict[str, Any]) -> dict[str, Any]:
    """The custom notification for one alert (AWS's documented schema, version 1.0)."""
    rule = alert.get("rule") or {}
    event = alert.get("event") if isinstance(alert.get("event"), dict) else {}
    keys = routing_keys(alert)
    severity = str(rule.get("severity") or "MEDIUM")
    agg = alert.get("aggregate") or {}
    title = f"{EMOJI.get(severity, '')} [{severity}] {_plain(alert.get('title') or rule.get('title'), TITLE_CHARS)}"
    lines = [_plain(alert.get("description") or "", 1024)]
    kind = alert.get("kind")
    if kind == "rule_match":
        ui = event.get("userIdentity") if isinstance(event.get("userIdentity"), dict) else {}
        sc = ui.get("sessionContext") if isinstance(ui.get("sessionContext"), dict) else {}
        mfa = (sc.get("attributes") or {}).get("mfaAuthenticated")
        lines += [
            f"*Who:* {code(principal_of(event))} (key {code(ui.get('accessKeyId'))}, "
            f"MFA {code(mfa)})",
            f"*What:* {code(event.get('eventSource'))} {code(event.get('eventName'))}"
            + (f" failed with {code(event.get('errorCode'))}" if event.get("errorCode") else ""),
            f"*Where:* account {code(keys.get('account'))}, region {code(keys.get('region'))}, "
            f"from {code(event.get('sourceIPAddress'))}",
            f"*When:* {code(event.get('eventTime'))} (event {code(event.get('eventID'))})",
        ]
        if agg:
            lines.append(f"*Aggregated:* {agg.get('count')} matches from this principal between "
                         f"{code(agg.get('first_event_time'))} and {code(agg.get('last_event_time'))}")
        attack = rule.get("attack") or {}
        if attack.get("techniques") or attack.get("tactics"):
            lines.append("*ATT&CK:* " + ", ".join(code(t) for t in (attack.get("tactics") or [])
                                                  + (attack.get("techniques") or [])))
        if alert.get("expected_change"):
            lines.append("_Marked as an expected change by a configured trusted principal._")
    elif kind == "oversize_event":
        lines.append(f"*Log group:* {code((alert.get('delivery') or {}).get('log_group'))}, "
                     f"*size:* {code(event.get('size_bytes'))} bytes")
    elif kind == "delivery_delayed":
        lines.append(f"*Events:* {code(event.get('count'))}, *worst lag:* "
                     f"{code(event.get('max_lag_seconds'))} s, *reasons:* {code(event.get('reasons'))}")
    lines.append(f"*Rule:* {code(rule.get('id'))}" + (f" (CIS {code(rule.get('cis'))})"
                                                       if rule.get("cis") else ""))
    steps = [_plain(alert.get("remediation") or rule.get("remediation") or "", STEP_CHARS)]
    region, eid = keys.get("region"), event.get("eventID")
    if kind == "rule_match" and region and isinstance(eid, str):
        steps.append(f"Open the event in CloudTrail: https://console.aws.amazon.com/cloudtrailv2/"
                     f"home?region={_plain(region)}#/events/{_plain(eid)}")
    steps.append(f"Alert id for the SOC ticket: {alert.get('alert_id')}")
    keywords = [k for k in (severity, keys.get("rule_id"), keys.get("account"), keys.get("region"),
                            keys.get("event_name")) if k]
    resources = [r for r in alert.get("resources") or () if isinstance(r, str)]
    return {
        "version": "1.0",
        "source": "custom",
        "id": alert.get("alert_id"),
        "content": {
            "textType": "client-markdown",
            "title": _clip(title.strip(), TITLE_CHARS),
            "description": _clip("\n".join(x for x in lines if x), DESCRIPTION_CHARS),
            "nextSteps": [s for s in steps if s][:NEXT_STEPS],
            "keywords": [_clip(_plain(k), KEYWORD_CHARS) for k in keywords][:KEYWORDS],
        },
        "metadata": {
            "threadId": _clip(f"{keys.get('rule_id', kind)}:{principal_of(event)}", 200),
            "summary": _plain(alert.get("title") or "", TITLE_CHARS),
            "eventType": str(kind),
            "relatedResources": resources,
            "additionalContext": {k: _clip(v, VALUE_CHARS) for k, v in keys.items()},
        },
    }


class ChatSink(_RetryingSink):
    """Publishes custom notifications to the chat topic (PublishBatch, SNS byte limits)."""

    name = "chat"
    # An optional sink: an SNS refusal no retry cures (botocore sns PublishBatch errors: the
    # topic deleted or not ours, its KMS key disabled/missing/denied, a parameter it cannot
    # take) is permanent, so it never fails the invocation and re-publishes to the primary
    # sinks. Throttling and internal errors stay transient.
    permanent_call_errors = frozenset({
        "NotFound", "AuthorizationError", "InvalidParameter", "ParameterValueInvalid",
        "InvalidSecurity", "KMSDisabled", "KMSInvalidState", "KMSNotFound", "KMSOptInRequired",
        "KMSAccessDenied"})
    permanent_entry_errors = permanent_call_errors

    def __init__(self, topic_arn: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(sleep)
        self.topic_arn = topic_arn
        self.client = _Lazy("sns", client_factory)

    def prepare(self, alerts: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        fifo = self.topic_arn.endswith(".fifo")
        for alert in alerts:
            body = orjson.dumps(notification(alert))
            assert len(body) <= SNS_MAX_BYTES   # every text above is capped far below it
            ident = alert["alert_id"]
            entry = {"Id": ident, "Message": body.decode("utf-8")}
            if fifo:
                entry["MessageGroupId"] = _group_id(alert)
                entry["MessageDeduplicationId"] = ident
            entries[ident] = entry
            sizes.append((ident, len(body)))
        return entries, sizes

    def publish(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes = self.prepare(alerts)
        return self._deliver(entries, pack(sizes, SNS_MAX_BATCH, SNS_MAX_BYTES))

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().publish_batch(TopicArn=self.topic_arn,
                                           PublishBatchRequestEntries=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])]
