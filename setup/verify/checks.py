"""``trailwatch verify``: small read-only checks, each PASS / WARN / FAIL with a remediation line.

Each check is a function of a shared, lazily-filled :class:`Context`, registered in ``CHECKS`` in
the order they are reported. A check that cannot run because an earlier fact is missing says so
(WARN/FAIL) instead of raising.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from setup.aws import AwsClients
from setup.errors import error_code, error_message
from setup.policy_eval import evaluate, evaluate_role
from setup.wiring.models import (
    DELIVERY_ACTIONS,
    Target,
    expected_stream_arns,
    stream_policy,
    trust_findings,
)
from setup.wiring.state import (
    CurrentState,
    _doc,
    member_accounts,
    read_log_group,
    read_role,
)

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
# Freshness of LatestCloudWatchLogsDeliveryTime: older than --max-delivery-age is FAIL (trap 19:
# delivery must advance), older than STALE_WARN a WARN (CloudTrail delivers in ~5 min on average).
MAX_DELIVERY_AGE = dt.timedelta(hours=2)
STALE_WARN = dt.timedelta(minutes=20)
# The documented overflow form of a stream name: <name>_<number> (aws-facts 1.4).
OVERFLOW_SUFFIX = "_1"


@dataclass
class CheckResult:
    id: str
    status: str
    message: str
    remediation: str = ""
    details: dict[str, Any] | None = None     # machine-readable facts (e.g. canary timings)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "message": self.message,
                               "remediation": self.remediation}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class Context:
    clients: AwsClients
    target: Target
    now: Callable[[], dt.datetime] = field(
        default=lambda: dt.datetime.now(dt.timezone.utc))
    max_delivery_age: dt.timedelta = MAX_DELIVERY_AGE
    cis_requested: bool = False          # `apply --cis-alarms`: CIS coverage is required
    _cache: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    @property
    def status(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            ct = self.clients.client("cloudtrail", self.target.region)
            return ct.get_trail_status(Name=self.target.trail.arn)
        return self.get("status", load)

    @property
    def state(self) -> CurrentState:
        return self.get("state", lambda: CurrentState(
            log_group=read_log_group(self.clients, self.target),
            role=read_role(self.clients, self.target.role_name_in_use, self.target.region)))

    @property
    def trail_doc(self) -> dict[str, Any]:
        """DescribeTrails' entry for the trail (global service events, selectors flag)."""
        def load() -> dict[str, Any]:
            ct = self.clients.client("cloudtrail", self.target.region)
            trails = ct.describe_trails(trailNameList=[self.target.trail.arn],
                                        includeShadowTrails=True).get("trailList", [])
            return next((t for t in trails if t.get("TrailARN") == self.target.trail.arn),
                        trails[0] if trails else {})
        return self.get("trail_doc", load)

    @property
    def event_selectors(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            ct = self.clients.client("cloudtrail", self.target.region)
            return ct.get_event_selectors(TrailName=self.target.trail.arn)
        return self.get("event_selectors", load)

    @property
    def role_policies(self) -> RolePolicies | None:
        return self.get("role_policies", lambda: read_role_policies(
            self.clients, self.state.role, self.target.region))

    @property
    def members(self) -> list[str]:
        return self.get("members", lambda: [
            a for a in member_accounts(self.clients, self.target.region)
            if a != self.target.account])


@dataclass
class RolePolicies:
    """Everything IAM evaluates for the role: inline and attached managed policy documents (the
    default version) and the permissions boundary."""

    inline: dict[str, Any]
    managed: dict[str, Any]              # policy ARN -> document
    boundary_arn: str | None = None
    boundary: Any = None

    @property
    def identity(self) -> list[Any]:
        return list(self.inline.values()) + list(self.managed.values())


def _managed_document(iam: Any, arn: str) -> Any:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _doc(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
                ["Document"])


def read_role_policies(clients: AwsClients, role: Any, region: str) -> RolePolicies | None:
    if role is None:
        return None
    iam = clients.client("iam", region)
    managed = {arn: _managed_document(iam, arn) for arn in role.attached}
    boundary_arn = (iam.get_role(RoleName=role.name)["Role"].get("PermissionsBoundary") or {}) \
        .get("PermissionsBoundaryArn")
    boundary = _managed_document(iam, boundary_arn) if boundary_arn else None
    return RolePolicies(inline=dict(role.inline), managed=managed, boundary_arn=boundary_arn,
                        boundary=boundary)


Check = Callable[[Context], CheckResult]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


@check
def trail_logging(ctx: Context) -> CheckResult:
    t = ctx.target.trail
    try:
        logging = ctx.status.get("IsLogging")
    except ClientError as e:
        return CheckResult("trail.logging", FAIL, f"GetTrailStatus failed: {error_code(e)}: "
                           f"{error_message(e)}", "allow cloudtrail:GetTrailStatus")
    if logging:
        return CheckResult("trail.logging", PASS, f"trail {t.name} exists (home {t.home_region}) "
                           "and is logging")
    return CheckResult("trail.logging", FAIL, f"trail {t.name} exists but is not logging",
                       f"aws cloudtrail start-logging --name {t.arn} --region {t.home_region}")


@check
def trail_cwl_fields(ctx: Context) -> CheckResult:
    t = ctx.target.trail
    if t.log_group_arn and t.role_arn:
        return CheckResult("trail.cloudwatch_logs", PASS,
                           f"trail delivers to {t.log_group_arn} with role {t.role_arn}")
    return CheckResult("trail.cloudwatch_logs", FAIL,
                       "the trail has no CloudWatch Logs log group and role configured",
                       "run `trailwatch apply`")


@check
def trail_group_arn(ctx: Context) -> CheckResult:
    t, target = ctx.target.trail, ctx.target
    arn = t.log_group_arn or ""
    if not arn:
        return CheckResult("trail.log_group_arn", FAIL, "no log group ARN on the trail",
                           "run `trailwatch apply`")
    if not arn.endswith(":*"):
        return CheckResult("trail.log_group_arn", FAIL, f"{arn} does not end in ':*'; CloudTrail "
                           "can't validate it", "run `trailwatch apply` (it passes the ':*' form)")
    parts = arn.split(":")
    if parts[3] != target.region or parts[4] != target.account:
        return CheckResult("trail.log_group_arn", FAIL,
                           f"{arn} is not in this account ({target.account}) and the trail's home "
                           f"region ({target.region})", "the log group must live in the caller's "
                           "account and the home region; run `trailwatch apply`")
    if arn != target.log_group_arn:
        return CheckResult("trail.log_group_arn", WARN, f"the trail delivers to {arn}, not "
                           f"{target.log_group_arn}", "pass --log-group to verify that group, or "
                           "run `trailwatch apply` to switch")
    return CheckResult("trail.log_group_arn", PASS, f"{arn}: ':*' form, this account, home region")


def _cis_expected(ctx: Context) -> bool:
    """CIS coverage is required when CIS alarms are requested or already deployed."""
    if ctx.cis_requested:
        return True
    try:
        return bool(_cis_metrics(ctx))
    except ClientError:
        return False


@check
def trail_multi_region(ctx: Context) -> CheckResult:
    t = ctx.target.trail
    if t.is_multi_region:
        return CheckResult("trail.multi_region", PASS, "multi-region trail: every Region's events "
                           "reach the log group")
    status = FAIL if _cis_expected(ctx) else WARN
    return CheckResult("trail.multi_region", status, f"trail {t.name} records only "
                       f"{t.home_region}; API calls in other Regions are not seen"
                       + (" (CIS requires a multi-region trail)" if status == FAIL else ""),
                       f"aws cloudtrail update-trail --name {t.arn} --is-multi-region-trail "
                       f"--region {t.home_region}")


def management_coverage(selectors: dict[str, Any]) -> tuple[set[str], list[str]]:
    """(read/write kinds of management events recorded: subset of {"ReadOnly", "WriteOnly"},
    notes) from a GetEventSelectors answer (basic or advanced selectors)."""
    kinds: set[str] = set()
    notes: list[str] = []
    advanced = selectors.get("AdvancedEventSelectors") or []
    basic = selectors.get("EventSelectors")
    if advanced:
        for sel in advanced:
            fields = {f.get("Field"): f for f in sel.get("FieldSelectors", [])}
            cat = fields.get("eventCategory") or {}
            if "Management" not in (cat.get("Equals") or []):
                continue
            ro = (fields.get("readOnly") or {}).get("Equals") or []
            kinds |= {"ReadOnly"} if ro == ["true"] else {"WriteOnly"} if ro == ["false"] \
                else {"ReadOnly", "WriteOnly"}
            other = sorted(k for k in fields if k not in ("eventCategory", "readOnly"))
            if other:
                notes.append(f"selector {sel.get('Name') or ''!r} also filters on "
                             f"{', '.join(other)}".replace(" ''", ""))
        return kinds, notes
    if not basic:   # no selectors at all (emulators): CloudTrail's default, all management
        return {"ReadOnly", "WriteOnly"}, notes
    for sel in basic:
        if sel.get("IncludeManagementEvents", True):
            rw = sel.get("ReadWriteType", "All")
            kinds |= {"ReadOnly", "WriteOnly"} if rw == "All" else {rw}
            if sel.get("ExcludeManagementEventSources"):
                notes.append("excludes management events from "
                             f"{', '.join(sel['ExcludeManagementEventSources'])}")
    return kinds, notes


@check
def trail_management_events(ctx: Context) -> CheckResult:
    t = ctx.target.trail
    cid = "trail.management_events"
    try:
        kinds, notes = management_coverage(ctx.event_selectors)
    except ClientError as e:
        return CheckResult(cid, WARN, f"GetEventSelectors failed: {error_code(e)}",
                           "allow cloudtrail:GetEventSelectors")
    fix = (f"aws cloudtrail put-event-selectors --trail-name {t.arn} --region {t.home_region} "
           "--event-selectors '[{\"ReadWriteType\":\"All\",\"IncludeManagementEvents\":true}]' "
           "(keeps no data selectors: merge yours in)")
    cis = _cis_expected(ctx)
    if kinds == {"ReadOnly", "WriteOnly"} and not notes:
        return CheckResult(cid, PASS, "management events recorded with ReadWriteType All")
    if not kinds:
        what = "the trail records no management events (data events only)"
    elif kinds != {"ReadOnly", "WriteOnly"}:
        what = f"the trail records only {next(iter(kinds))} management events"
    else:
        what = "management events recorded, but " + "; ".join(notes)
    status = FAIL if cis else WARN
    full = kinds == {"ReadOnly", "WriteOnly"}
    suffix = (": CIS filters on the excluded sources can never fire" if full else
              ": the CIS metric filters and alarms can never fire") if status == FAIL else \
        ("" if full else ": CIS monitoring needs ReadWriteType All")
    return CheckResult(cid, status, what + suffix, fix)


@check
def trail_global_events(ctx: Context) -> CheckResult:
    doc = ctx.trail_doc
    t = ctx.target.trail
    if doc.get("IncludeGlobalServiceEvents", True):
        return CheckResult("trail.global_service_events", PASS, "global service events (IAM, STS, "
                           "CloudFront) included")
    return CheckResult("trail.global_service_events", WARN, "global service events are excluded: "
                       "IAM and STS changes never reach the log group",
                       f"aws cloudtrail update-trail --name {t.arn} --include-global-service-events "
                       f"--region {t.home_region}")


@check
def log_group(ctx: Context) -> CheckResult:
    lg = ctx.state.log_group
    if lg is None:
        return CheckResult("log_group.exists", FAIL, f"log group {ctx.target.log_group} does not "
                           f"exist in {ctx.target.account}/{ctx.target.region}",
                           "run `trailwatch apply`")
    if lg.log_group_class != "STANDARD":
        return CheckResult("log_group.exists", FAIL, f"log group class is {lg.log_group_class}; "
                           "subscription and metric filters need STANDARD",
                           "create a new STANDARD group with `trailwatch apply --log-group NEW`")
    return CheckResult("log_group.exists", PASS, f"log group {lg.name} exists (STANDARD)")


@check
def log_group_retention(ctx: Context) -> CheckResult:
    lg = ctx.state.log_group
    if lg is None:
        return CheckResult("log_group.retention", FAIL, "no log group", "run `trailwatch apply`")
    if not lg.retention:
        return CheckResult("log_group.retention", WARN, "retention is 'never expire'",
                           "trailwatch apply --retention-days 365")
    return CheckResult("log_group.retention", PASS, f"retention {lg.retention} days")


@check
def log_group_kms(ctx: Context) -> CheckResult:
    lg = ctx.state.log_group
    if lg is None:
        return CheckResult("log_group.kms", FAIL, "no log group", "run `trailwatch apply`")
    if not lg.kms_key:
        return CheckResult("log_group.kms", WARN, "the log group is not encrypted with a KMS key",
                           "trailwatch apply --kms-key arn:...:key/... (key policy must allow "
                           f"logs.{ctx.target.region}.amazonaws.com)")
    kms = ctx.clients.client("kms", ctx.target.region)
    try:
        meta = kms.describe_key(KeyId=lg.kms_key)["KeyMetadata"]
    except ClientError as e:
        status = FAIL if error_code(e) == "NotFoundException" else WARN
        return CheckResult("log_group.kms", status, f"encrypted with {lg.kms_key}, but DescribeKey "
                           f"failed: {error_code(e)}", "the key must exist; allow kms:DescribeKey "
                           "to check it")
    state = meta.get("KeyState", "Enabled")
    if state != "Enabled" or meta.get("Enabled") is False:
        return CheckResult("log_group.kms", FAIL, f"key {lg.kms_key} is {state}: CloudWatch Logs "
                           "cannot encrypt new events (delivery fails) or decrypt stored ones",
                           f"aws kms enable-key --key-id {lg.kms_key} (or cancel its deletion)")
    return CheckResult("log_group.kms", PASS, f"encrypted with {lg.kms_key} (key Enabled)")


@check
def role_trust(ctx: Context) -> CheckResult:
    role = ctx.state.role
    name = ctx.target.role_name_in_use
    if role is None:
        return CheckResult("role.trust", FAIL, f"role {name} does not exist",
                           "run `trailwatch apply`")
    findings = trust_findings(role.trust, ctx.target.accepted_services)
    if findings.denies:
        return CheckResult("role.trust", FAIL, f"role {name}'s trust policy explicitly denies "
                           "cloudtrail.amazonaws.com (an explicit Deny wins over any Allow)",
                           "remove this statement from the trust policy: "
                           + " ".join(json.dumps(st) for st in findings.denies))
    if findings.foreign:
        return CheckResult("role.trust", FAIL, f"role {name} (which can write the audit log "
                           f"group) also trusts {'; '.join(findings.foreign)}",
                           "trust only cloudtrail.amazonaws.com: remove the other principals, "
                           "or use a role of its own for CloudTrail")
    d = evaluate([role.trust], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    if d.allowed and findings.accepted:
        return CheckResult("role.trust", WARN, f"role {name} trusts cloudtrail.amazonaws.com and "
                           f"also {', '.join(findings.accepted)} (accepted with "
                           "--accept-trusted-service)", "give the other service a role of its own")
    if d.allowed:
        return CheckResult("role.trust", PASS, f"role {name} trusts cloudtrail.amazonaws.com")
    if d.conditional:
        return CheckResult("role.trust", WARN, f"role {name} trusts CloudTrail only under a "
                           "Condition; CloudTrail may not send those keys for this role",
                           "remove the Condition unless delivery is proven to work")
    return CheckResult("role.trust", FAIL, f"role {name} does not let cloudtrail.amazonaws.com "
                       "assume it", "run `trailwatch apply` (it adds the trust statement)")


def stream_arns_to_evaluate(target: Target, members: list[str]) -> list[str]:
    """The stream ARNs CloudTrail writes, plus the documented ``_<n>`` overflow form of each."""
    base = expected_stream_arns(target, members if target.trail.is_org else [])
    return base + [a + OVERFLOW_SUFFIX for a in base]


@check
def role_stream_policy(ctx: Context) -> CheckResult:
    role = ctx.state.role
    target = ctx.target
    if role is None:
        return CheckResult("role.stream_policy", FAIL, "no role", "run `trailwatch apply`")
    pols = ctx.role_policies
    assert pols is not None
    arns = stream_arns_to_evaluate(target, ctx.members if target.trail.is_org else [])
    refused = [(a, arn, d) for arn in arns for a in DELIVERY_ACTIONS
               for d in [evaluate_role(pols.identity, a, arn, pols.boundary)] if not d.allowed]
    sources = f"{len(pols.inline)} inline and {len(pols.managed)} managed polic" \
        f"{'y' if len(pols.managed) == 1 else 'ies'}" + \
        (f" within boundary {pols.boundary_arn}" if pols.boundary_arn else "")
    if not refused:
        kinds = "the account stream and member streams (o-id)" if target.trail.is_org \
            else "the account stream"
        return CheckResult("role.stream_policy", PASS, f"{sources} allow "
                           f"{', '.join(DELIVERY_ACTIONS)} on {kinds}: {len(arns)} stream ARN(s) "
                           "evaluated, overflow names included")
    action, arn, d = refused[0]
    why = {"explicit-deny": "an explicit Deny in the role's policies",
           "boundary-explicit-deny": f"an explicit Deny in the permissions boundary {pols.boundary_arn}",
           "boundary-implicit-deny": f"the permissions boundary {pols.boundary_arn} does not allow it",
           }.get(d.reason, "no policy allows it" + (" (an Allow with a Condition was not counted)"
                                                    if d.conditional else ""))
    stream = arn.split(":log-stream:")[1]
    hint = ("the policy lacks the organization's o-<orgid>_* resource: member-account events "
            "are not delivered" if target.trail.is_org and stream.startswith("o-") else
            "CloudTrail writes <name>_<n> streams when volume is high: the resource must end in *"
            if arn.endswith(OVERFLOW_SUFFIX) and d.reason == "implicit-deny" else "")
    if d.reason.startswith("boundary"):
        fix = f"allow {', '.join(DELIVERY_ACTIONS)} on the stream ARNs in the boundary " \
            f"{pols.boundary_arn} (or remove it from the role)"
    elif d.reason == "explicit-deny":
        fix = "remove the Deny statement for these actions/streams from the role's policies"
    else:
        fix = ("run `trailwatch apply` (it writes the documented policy: "
               f"{', '.join(r for r in stream_policy(target)['Statement'][0]['Resource'])})")
    return CheckResult("role.stream_policy", FAIL, f"{action} is not allowed on {arn}: {why}"
                       + (f"; {hint}" if hint else ""), fix)


@check
def delivery_error(ctx: Context) -> CheckResult:
    try:
        err = ctx.status.get("LatestCloudWatchLogsDeliveryError")
    except ClientError as e:
        return CheckResult("delivery.error", FAIL, f"GetTrailStatus failed: {error_code(e)}",
                           "allow cloudtrail:GetTrailStatus")
    if err:
        return CheckResult("delivery.error", FAIL, f"CloudTrail reports a CloudWatch Logs "
                           f"delivery error: {err}",
                           "check role.trust and role.stream_policy above; for organization "
                           "trails the policy needs the o-<orgid>_* stream resource")
    return CheckResult("delivery.error", PASS, "no CloudWatch Logs delivery error reported")


@check
def delivery_recent(ctx: Context) -> CheckResult:
    try:
        when = ctx.status.get("LatestCloudWatchLogsDeliveryTime")
    except ClientError as e:
        return CheckResult("delivery.recent", FAIL, f"GetTrailStatus failed: {error_code(e)}",
                           "allow cloudtrail:GetTrailStatus")
    if not when:
        return CheckResult("delivery.recent", WARN, "CloudTrail reports no CloudWatch Logs "
                           "delivery yet", "new wiring takes a few minutes (the first delivery "
                           "can take longer); re-run verify later")
    if isinstance(when, int | float):
        when = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    age = ctx.now() - when
    if age > ctx.max_delivery_age:
        return CheckResult("delivery.recent", FAIL, f"last delivery {when:%Y-%m-%d %H:%M} UTC, "
                           f"{_age(age)} ago: older than --max-delivery-age "
                           f"{_age(ctx.max_delivery_age)}, delivery has stopped",
                           "check trail.logging, delivery.error and role.stream_policy; "
                           "`trailwatch verify --canary` proves delivery end to end")
    if age > STALE_WARN:
        return CheckResult("delivery.recent", WARN, f"last delivery {when:%Y-%m-%d %H:%M} UTC, "
                           f"{_age(age)} ago (CloudTrail delivers in ~5 min on average)",
                           "is the trail logging and are events expected? check delivery.error, "
                           "or run `trailwatch verify --canary`")
    return CheckResult("delivery.recent", PASS, f"last delivery {when:%Y-%m-%d %H:%M:%S} UTC "
                       f"({age.total_seconds():.0f} s ago)")


def _age(delta: dt.timedelta) -> str:
    s = delta.total_seconds()
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def _filters(ctx: Context) -> dict[str, Any]:
    from setup.wiring.cis_alarms import read_filters
    return ctx.get("filters", lambda: read_filters(ctx.clients, ctx.target))


def _cis_metrics(ctx: Context) -> dict[str, tuple[str, str]]:
    """CIS rule id -> (namespace, metric) of the filter that carries its exact pattern."""
    from handlers.detection.cis import CIS_CONTROLS
    by_pattern = {f.get("filterPattern"): f for f in _filters(ctx).values()}
    out = {}
    for c in CIS_CONTROLS:
        f = by_pattern.get(c.pattern)
        if f and f.get("metricTransformations"):
            t = f["metricTransformations"][0]
            out[c.cis] = (t.get("metricNamespace"), t.get("metricName"))
    return out


def _cis_alarm_topics(ctx: Context) -> dict[str, list[str]]:
    from setup.wiring.cis_alarms import read_alarms

    def load() -> dict[str, list[str]]:
        alarms = read_alarms(ctx.clients, ctx.target)
        by_metric: dict[tuple[str, str], list[str]] = {}
        for a in alarms.values():
            by_metric.setdefault((a.get("Namespace"), a.get("MetricName")), []).extend(
                a.get("AlarmActions", []))
        return {cis: by_metric.get(metric, []) for cis, metric in _cis_metrics(ctx).items()}
    return ctx.get("cis_alarm_topics", load)


@check
def cis_metric_filters(ctx: Context) -> CheckResult:
    from handlers.detection.cis import CIS_CONTROLS
    found = _cis_metrics(ctx)
    if not found:
        return CheckResult("cis.metric_filters", WARN, "no CIS metric filters on the log group "
                           "(Security Hub CloudWatch.1-14 fail without them)",
                           "trailwatch apply --cis-alarms")
    missing = [c.cis for c in CIS_CONTROLS if c.cis not in found]
    try:
        kinds, _ = management_coverage(ctx.event_selectors)
    except ClientError:
        kinds = {"ReadOnly", "WriteOnly"}
    if kinds != {"ReadOnly", "WriteOnly"}:
        return CheckResult("cis.metric_filters", FAIL, f"{len(found)} CIS metric filters present, "
                           "but the trail does not record all management events (see "
                           "trail.management_events): they can never fire",
                           "record management events with ReadWriteType All")
    if missing:
        return CheckResult("cis.metric_filters", FAIL, f"{len(missing)} of {len(CIS_CONTROLS)} "
                           f"CIS filters missing or not the exact string: {', '.join(missing)}",
                           "trailwatch apply --cis-alarms (rewrites them with the exact strings)")
    return CheckResult("cis.metric_filters", PASS, f"all {len(CIS_CONTROLS)} CIS metric filters "
                       "present with the exact Security Hub / CIS strings")


@check
def cis_alarms(ctx: Context) -> CheckResult:
    topics = _cis_alarm_topics(ctx)
    if not topics:
        return CheckResult("cis.alarms", WARN, "no CIS metric filters, so no alarms to check",
                           "trailwatch apply --cis-alarms")
    silent = sorted(cis for cis, actions in topics.items() if not actions)
    if silent:
        return CheckResult("cis.alarms", FAIL, f"CIS {', '.join(silent)}: no alarm with an action "
                           "on the filter's metric", "trailwatch apply --cis-alarms")
    return CheckResult("cis.alarms", PASS, f"{len(topics)} CIS metrics each have an alarm with an "
                       "action")


def confirmed_subscriptions(sns: Any, topic_arn: str) -> list[dict[str, Any]]:
    """Subscriptions that deliver: SNS lists unconfirmed ones with SubscriptionArn
    "PendingConfirmation" (and "Deleted" while they go away)."""
    out = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        out += [s for s in page.get("Subscriptions", [])
                if str(s.get("SubscriptionArn", "")).startswith("arn:")]
    return out


@check
def cis_topic_subscribers(ctx: Context) -> CheckResult:
    arns = sorted({a for actions in _cis_alarm_topics(ctx).values() for a in actions
                   if ":sns:" in a})
    if not arns:
        return CheckResult("cis.topic_subscribers", WARN, "no SNS topic behind CIS alarms",
                           "trailwatch apply --cis-alarms")
    sns = ctx.clients.client("sns", ctx.target.region)
    empty = [a for a in arns if not confirmed_subscriptions(sns, a)]
    if empty:
        return CheckResult("cis.topic_subscribers", WARN, f"topic {empty[0]} has no confirmed "
                           "subscriber (pending confirmations notify nobody): the alarms notify "
                           "nobody (Security Hub reports WARNING)",
                           f"aws sns subscribe --topic-arn {empty[0]} --protocol email "
                           "--notification-endpoint you@example.com")
    return CheckResult("cis.topic_subscribers", PASS, f"{len(arns)} alarm topic(s) with subscribers")


@check
def subscription_filters(ctx: Context) -> CheckResult:
    """Each filter's destination checked for real (see setup/verify/destinations.py)."""
    from setup.verify.destinations import check_filter
    target = ctx.target
    logs = ctx.clients.client("logs", target.region)
    try:
        subs = logs.describe_subscription_filters(logGroupName=target.log_group).get(
            "subscriptionFilters", [])
    except ClientError as e:
        if error_code(e) == "ResourceNotFoundException":
            return CheckResult("subscription.filters", FAIL, "no log group", "trailwatch apply")
        raise
    if not subs:
        return CheckResult("subscription.filters", WARN, "no subscription filter: events reach "
                           "the log group but nothing processes them",
                           "deploy the SAM template (template.yaml) with TrailLogGroupName "
                           f"{target.log_group}, or `trailwatch subscribe --destination ARN` "
                           "to the audit account's destination")
    findings = [check_filter(ctx.clients, target, s, ctx.now()) for s in subs]
    bad = [f for f in findings if f.status == FAIL]
    if bad:
        return CheckResult("subscription.filters", FAIL, "; ".join(f.message for f in bad),
                           bad[0].remediation)
    message = "; ".join(f.message for f in findings)
    if len(subs) >= 2:
        return CheckResult("subscription.filters", WARN, f"{message}. {len(subs)} of 2 "
                           "subscription filters used: no room for another consumer",
                           "fan out through one Kinesis stream instead of more filters")
    status = WARN if any(f.status == WARN for f in findings) else PASS
    return CheckResult("subscription.filters", status, message)


# Checks that need only the trail (the watchdog runs these when the log group's account is out
# of reach).
TRAIL_LEVEL_CHECKS: tuple[Check, ...] = (trail_logging, trail_cwl_fields, trail_multi_region,
                                         trail_management_events, trail_global_events,
                                         delivery_error, delivery_recent)


def run_checks(ctx: Context, checks: list[Check] | None = None) -> list[CheckResult]:
    results = []
    for fn in checks or CHECKS:
        try:
            results.append(fn(ctx))
        except ClientError as e:
            results.append(CheckResult(fn.__name__, FAIL, f"{error_code(e)}: {error_message(e)}",
                                       "check the permissions of these credentials"))
    return results


def summary(results: list[CheckResult]) -> dict[str, int]:
    out = {PASS: 0, WARN: 0, FAIL: 0}
    for r in results:
        out[r.status] += 1
    return {"pass": out[PASS], "warn": out[WARN], "fail": out[FAIL]}
