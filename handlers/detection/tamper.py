"""Tamper rules: changes to the delivery path trailwatch watches over (HIGH, on by default).

The processor watches the resources the template names in its environment (read once, at cold
start, by :mod:`handlers.settings` into :class:`~handlers.settings.TamperNames`; checked here):

``TRAIL_NAME``                 the trail, by name or ARN (records naming either match)
``TRAIL_LOG_GROUP_NAME``       the trail's log group (and trailwatch's CIS filters/alarms on it)
``DELIVERY_ROLE_NAME``         the role CloudTrail assumes to write the log group; unset or
                               empty: the role ``trailwatch apply`` creates for ``TRAIL_NAME``
                               (:func:`default_role_name`, in the ARN's Region, else ``AWS_REGION``)
``AWS_LAMBDA_FUNCTION_NAME``   the processor itself (set by Lambda)

A rule is built only for a resource that is named (an unset variable watches nothing rather than
everything). A value that cannot be used (not a valid name for its resource) skips that one rule:
:func:`tamper_rules` reports it in ``errors`` (the processor logs ``rule skipped`` and counts
``RuleErrors``, which is alarmed) and never raises at cold start. Each rule carries match / no_match sample records beside it, generated for the same
names, and the test suite runs every one. Rules are data in the filter-pattern language, like
every other rule (:mod:`handlers.detection.rules`); the values come from validated names only.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers.detection.patterns import compile_pattern
from handlers.detection.rules import Rule
from handlers.settings import TamperNames

CIS_PREFIX = "trailwatch-cis-"          # setup/wiring/cis_alarms.py: names of trailwatch's CIS resources
MAX_ALARM_NAMES = 100                   # DeleteAlarms accepts at most 100 names
DEFENSE_EVASION = "TA0005"
CLOUD_LOGS = "T1562.008"                # Impair Defenses: Disable or Modify Cloud Logs
DISABLE_TOOLS = "T1562.001"             # Impair Defenses: Disable or Modify Tools
_SAFE = {
    "TRAIL_NAME": re.compile(r"^[A-Za-z0-9._-]{3,128}$"),
    "TRAIL_LOG_GROUP_NAME": re.compile(r"^[A-Za-z0-9._/#-]{1,512}$"),
    "DELIVERY_ROLE_NAME": re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$"),
    "AWS_LAMBDA_FUNCTION_NAME": re.compile(r"^[A-Za-z0-9_-]{1,140}$"),
}

# A trail ARN as the template's TrailName AllowedPattern accepts it: (region, name).
_TRAIL_ARN = re.compile(r"^arn:aws[a-z-]*:cloudtrail:([a-z0-9-]+):\d{12}:trail/([^/]+)$")
ROLE_NAME_MAX = 64

TRAIL_EVENTS = ("UpdateTrail", "StopLogging", "DeleteTrail", "PutEventSelectors",
                "PutInsightSelectors")
LOG_GROUP_EVENTS = ("DeleteLogGroup", "PutRetentionPolicy", "DeleteSubscriptionFilter",
                    "PutSubscriptionFilter", "DisassociateKmsKey")
ROLE_EVENTS = ("PutRolePolicy", "DeleteRolePolicy", "UpdateAssumeRolePolicy", "AttachRolePolicy",
               "DeleteRole")
# Lambda records carry the API version in eventName ("UpdateFunctionCode20150331v2").
FUNCTION_EVENTS = ("RemovePermission", "DeleteFunction", "UpdateFunctionCode",
                   "UpdateFunctionConfiguration", "DeleteEventSourceMapping")


class TamperConfigError(ValueError):
    pass


def default_role_name(trail_name: str, region: str | None = None) -> str:
    """The delivery role ``trailwatch apply`` creates for a trail: ``trailwatch-cwl-<trail>-<home
    region>``, over 64 characters cut with a stable hash suffix.

    The twin of ``setup.wiring.models.default_role_name`` (the processor may not import
    ``setup``); tests/handlers/detection/test_tamper.py holds the two equal."""
    base = f"trailwatch-cwl-{trail_name}" + (f"-{region}" if region else "")
    base = re.sub(r"[^\w+=,.@-]", "-", base)
    if len(base) <= ROLE_NAME_MAX:
        return base
    digest = hashlib.sha256(f"{trail_name}@{region or ''}".encode()).hexdigest()[:8]
    return f"{base[: ROLE_NAME_MAX - 9]}-{digest}"


def names_of(config: Any) -> TamperNames:
    """The names to watch: from the processor's settings (or a :class:`TamperNames`), or read
    from a mapping in the processor's environment format (the CLI and tests pass one)."""
    if config is None:
        return TamperNames()
    if isinstance(config, TamperNames):
        return config
    names = getattr(config, "tamper", None)
    if isinstance(names, TamperNames):
        return names
    return TamperNames.from_env(config)


def _names(config: Any, errors: list[str] | None = None) -> dict[str, str]:
    """The usable names, by field of :class:`TamperNames` (``trail``, ``log_group``,
    ``delivery_role``, ``function``); each checked against its variable's :data:`_SAFE`."""
    given = names_of(config)
    out: dict[str, str] = {}

    def take(field: str, key: str, value: str) -> None:
        if _SAFE[key].match(value):
            out[field] = value
            return
        msg = (f"{key}={value[:200]!r} is not a valid name for it: its tamper rule is not "
               "loaded")
        if errors is None:
            raise TamperConfigError(msg)
        errors.append(msg)

    region = given.region
    trail = given.trail
    arn = _TRAIL_ARN.match(trail)
    if arn:
        region, trail = arn.groups()
    if trail:
        take("trail", "TRAIL_NAME", trail)
    if given.log_group:
        take("log_group", "TRAIL_LOG_GROUP_NAME", given.log_group)
    if given.function:
        take("function", "AWS_LAMBDA_FUNCTION_NAME", given.function)
    role = given.delivery_role
    if not role and "trail" in out:
        role = default_role_name(out["trail"], region)
    if role:
        take("delivery_role", "DELIVERY_ROLE_NAME", role)
    return out


def _any(selector: str, values: list[str]) -> str:
    return "(" + " || ".join(f'{selector} = "{v}"' for v in values) + ")"


def _events(names: tuple[str, ...], versioned: bool = False) -> str:
    values = [v for n in names for v in ((n, f"{n}20*") if versioned else (n,))]
    return _any("$.eventName", values)


@dataclass(frozen=True)
class Spec:
    id: str
    title: str
    description: str
    remediation: str
    technique: str
    pattern: str
    samples: Callable[[], dict[str, list[dict[str, Any]]]]


def _record(source: str, name: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"eventVersion": "1.09", "eventSource": source, "eventName": name,
            "eventTime": "2026-01-10T09:00:00Z", "awsRegion": "us-east-1",
            "eventID": f"sample-{name}-{zlib.crc32(repr(params).encode()):08x}",
            "eventType": "AwsApiCall", "recipientAccountId": "111122223333",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/mallory",
                             "accountId": "111122223333"},
            "sourceIPAddress": "198.51.100.7", "userAgent": "aws-cli/2.15.0",
            "requestParameters": params, "responseElements": None, **extra}


def _trail(name: str) -> Spec:
    src = "cloudtrail.amazonaws.com"
    arn = f"arn:aws:cloudtrail:us-east-1:111122223333:trail/{name}"
    key = {"PutEventSelectors": "trailName", "PutInsightSelectors": "trailName"}
    who = _any("$.requestParameters.name", [name, f"*:trail/{name}"])
    who2 = _any("$.requestParameters.trailName", [name, f"*:trail/{name}"])

    def samples() -> dict[str, list[dict[str, Any]]]:
        match = [_record(src, e, {key.get(e, "name"): name if i % 2 else arn})
                 for i, e in enumerate(TRAIL_EVENTS)]
        no = [_record(src, "StopLogging", {"name": "someone-elses-trail"}),
              _record(src, "GetTrailStatus", {"name": arn}),
              _record(src, "UpdateTrail", {"name": f"{name}-copy"})]
        return {"match": match, "no_match": no}
    return Spec("trailwatch-tamper-trail", f"CloudTrail trail {name} changed, stopped or deleted",
                f"A call changed the trail {name} that feeds trailwatch (UpdateTrail, StopLogging, "
                "DeleteTrail, PutEventSelectors, PutInsightSelectors): events may stop reaching "
                "the log group.",
                "Confirm the change was authorised; otherwise restore with `trailwatch apply` and "
                "`aws cloudtrail start-logging`, then run `trailwatch verify --canary`.",
                CLOUD_LOGS,
                f"{{ $.eventSource = {src} && {_events(TRAIL_EVENTS)} && ({who} || {who2}) }}",
                samples)


def _log_group(group: str) -> list[Spec]:
    src = "logs.amazonaws.com"
    ids = [group, f"*:log-group:{group}", f"*:log-group:{group}:*"]
    who = "(" + _any("$.requestParameters.logGroupName", [group]) + " || " + \
        _any("$.requestParameters.logGroupIdentifier", ids) + " || " + \
        _any("$.requestParameters.resourceIdentifier", ids) + ")"

    def samples() -> dict[str, list[dict[str, Any]]]:
        match = [_record(src, e, {"logGroupName": group, **({"filterName": "x"} if "Subscription"
                                                              in e else {})})
                 for e in LOG_GROUP_EVENTS]
        match.append(_record(src, "DisassociateKmsKey", {
            "resourceIdentifier": f"arn:aws:logs:us-east-1:111122223333:log-group:{group}"}))
        no = [_record(src, "DeleteLogGroup", {"logGroupName": f"{group}-scratch"}),
              _record(src, "DescribeSubscriptionFilters", {"logGroupName": group}),
              _record(src, "PutRetentionPolicy", {"logGroupName": "/aws/lambda/other"})]
        return {"match": match, "no_match": no}

    alarms = " || ".join(f'$.requestParameters.alarmNames[{i}] = "{CIS_PREFIX}*"'
                         for i in range(MAX_ALARM_NAMES))

    def cis_samples() -> dict[str, list[dict[str, Any]]]:
        return {"match": [
            _record(src, "DeleteMetricFilter", {"logGroupName": group,
                                                "filterName": f"{CIS_PREFIX}root-usage"}),
            _record("monitoring.amazonaws.com", "DeleteAlarms",
                    {"alarmNames": ["unrelated", f"{CIS_PREFIX}root-usage"]}),
        ], "no_match": [
            _record(src, "DeleteMetricFilter", {"logGroupName": group, "filterName": "team-x"}),
            _record(src, "DeleteMetricFilter", {"logGroupName": "other",
                                                "filterName": f"{CIS_PREFIX}root-usage"}),
            _record("monitoring.amazonaws.com", "DeleteAlarms", {"alarmNames": ["team-x"]}),
            _record("monitoring.amazonaws.com", "DescribeAlarms",
                    {"alarmNames": [f"{CIS_PREFIX}root-usage"]}),
        ]}
    return [
        Spec("trailwatch-tamper-log-group", f"CloudTrail log group {group} changed or deleted",
             f"A call deleted or re-wired the trail's log group {group} (DeleteLogGroup, "
             "PutRetentionPolicy, Delete/PutSubscriptionFilter, DisassociateKmsKey): delivery, "
             "retention, encryption or processing may be gone.",
             "Confirm the change; otherwise re-run `trailwatch apply` and redeploy the template, "
             "then `trailwatch verify --canary`.", CLOUD_LOGS,
             f"{{ $.eventSource = {src} && {_events(LOG_GROUP_EVENTS)} && {who} }}", samples),
        Spec("trailwatch-tamper-cis-monitoring", "trailwatch CIS metric filter or alarm deleted",
             f"A call deleted one of trailwatch's CIS metric filters on {group} or its "
             f"{CIS_PREFIX}* alarms: CIS monitoring is silenced.",
             "Run `trailwatch apply --cis-alarms` to restore them, then find who deleted them.",
             CLOUD_LOGS,
             f"{{ ($.eventSource = {src} && $.eventName = DeleteMetricFilter && "
             f'$.requestParameters.logGroupName = "{group}" && '
             f'$.requestParameters.filterName = "{CIS_PREFIX}*") || '
             f"($.eventSource = monitoring.amazonaws.com && $.eventName = DeleteAlarms && "
             f"({alarms})) }}", cis_samples),
    ]


def _role(role: str) -> Spec:
    src = "iam.amazonaws.com"

    def samples() -> dict[str, list[dict[str, Any]]]:
        match = [_record(src, e, {"roleName": role, "policyName": "p"}) for e in ROLE_EVENTS]
        no = [_record(src, "PutRolePolicy", {"roleName": f"{role}-other", "policyName": "p"}),
              _record(src, "GetRolePolicy", {"roleName": role, "policyName": "p"})]
        return {"match": match, "no_match": no}
    return Spec("trailwatch-tamper-delivery-role", f"CloudTrail delivery role {role} changed",
                f"A call changed the policies or trust of {role}, the role CloudTrail assumes to "
                "write the log group, or deleted it: delivery may fail silently.",
                "Confirm the change; run `trailwatch verify` (role.trust, role.stream_policy) and "
                "`trailwatch apply` to restore the documented policies.", CLOUD_LOGS,
                f"{{ $.eventSource = {src} && {_events(ROLE_EVENTS)} && "
                f'$.requestParameters.roleName = "{role}" }}', samples)


def _function(fn: str) -> Spec:
    src = "lambda.amazonaws.com"
    ids = [fn, f"*:function:{fn}", f"*:function:{fn}:*"]
    who = "(" + _any("$.requestParameters.functionName", ids) + " || " + \
        _any("$.responseElements.functionArn", ids) + ")"

    def samples() -> dict[str, list[dict[str, Any]]]:
        arn = f"arn:aws:lambda:us-east-1:111122223333:function:{fn}"
        match = [_record(src, "RemovePermission20150331v2", {"functionName": fn,
                                                             "statementId": "logs"}),
                 _record(src, "DeleteFunction20150331", {"functionName": arn}),
                 _record(src, "UpdateFunctionCode20150331v2", {"functionName": fn}),
                 _record(src, "UpdateFunctionConfiguration20150331v2",
                         {"functionName": f"{arn}:$LATEST"}),
                 _record(src, "DeleteEventSourceMapping20150331", {"uUID": "1234"},
                         responseElements={"functionArn": arn, "uUID": "1234"})]
        no = [_record(src, "DeleteFunction20150331", {"functionName": f"{fn}-other"}),
              _record(src, "GetFunction20150331v2", {"functionName": fn}),
              _record(src, "DeleteFunctionConcurrency20171031", {"functionName": "unrelated"})]
        return {"match": match, "no_match": no}
    return Spec("trailwatch-tamper-processor", f"trailwatch processor {fn} changed or removed",
                f"A call removed the processor {fn}'s invoke permission, deleted it or its event "
                "source mapping, or replaced its code or configuration: alerts may stop.",
                "Confirm the change (a `sam deploy` of trailwatch is expected); otherwise "
                "redeploy the stack and run `trailwatch verify --canary`.", DISABLE_TOOLS,
                f"{{ $.eventSource = {src} && {_events(FUNCTION_EVENTS, versioned=True)} && "
                f"{who} }}", samples)


def specs(config: Any, errors: list[str] | None = None) -> list[Spec]:
    names = _names(config, errors)
    out: list[Spec] = []
    if "trail" in names:
        out.append(_trail(names["trail"]))
    if "log_group" in names:
        out += _log_group(names["log_group"])
    if "delivery_role" in names:
        out.append(_role(names["delivery_role"]))
    if "function" in names:
        out.append(_function(names["function"]))
    return out


def tamper_rules(config: Any, errors: list[str] | None = None) -> list[Any]:
    """The tamper rules for the resources ``config`` names (the processor's settings, their
    :class:`~handlers.settings.TamperNames`, a mapping in the environment's format, or None).
    With ``errors``, a value that cannot be used is reported there and its rule left out;
    without, it raises TamperConfigError."""
    return [Rule(id=s.id, title=s.title, severity="HIGH", pattern=compile_pattern(s.pattern),
                 tests=s.samples(), description=s.description, remediation=s.remediation,
                 tactics=(DEFENSE_EVASION,), techniques=(s.technique,), source="tamper")
            for s in specs(config, errors)]
