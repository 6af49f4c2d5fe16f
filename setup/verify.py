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
from setup.models import (DELIVERY_ACTIONS, Target, expected_stream_arns, stream_policy,
                          trust_findings)
from setup.policy_eval import evaluate
from setup.state import (CurrentState, error_code, error_message, member_accounts,
                         read_log_group, read_role)

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
RECENT = dt.timedelta(hours=24)


@dataclass
class CheckResult:
    id: str
    status: str
    message: str
    remediation: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status, "message": self.message,
                "remediation": self.remediation}


@dataclass
class Context:
    clients: AwsClients
    target: Target
    now: Callable[[], dt.datetime] = field(
        default=lambda: dt.datetime.now(dt.timezone.utc))
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
    def members(self) -> list[str]:
        return self.get("members", lambda: [
            a for a in member_accounts(self.clients, self.target.region)
            if a != self.target.account])


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
    return CheckResult("log_group.kms", PASS, f"encrypted with {lg.kms_key}")


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


@check
def role_stream_policy(ctx: Context) -> CheckResult:
    role = ctx.state.role
    target = ctx.target
    if role is None:
        return CheckResult("role.stream_policy", FAIL, "no role", "run `trailwatch apply`")
    arns = expected_stream_arns(target, ctx.members if target.trail.is_org else [])
    docs = list(role.inline.values())
    missing = [(a, arn) for arn in arns for a in DELIVERY_ACTIONS
               if not evaluate(docs, a, arn).allowed]
    if not missing:
        kinds = "the account stream and member streams (o-id)" if target.trail.is_org \
            else "the account stream"
        return CheckResult("role.stream_policy", PASS, f"inline policy allows {', '.join(DELIVERY_ACTIONS)} "
                           f"on {kinds}: {len(arns)} stream ARN(s) evaluated")
    action, arn = missing[0]
    extra = " (role also has managed policies, not evaluated)" if role.attached else ""
    hint = ("the policy lacks the organization's o-<orgid>_* resource: member-account events "
            "are not delivered" if target.trail.is_org and "_CloudTrail_" in arn and
            arn.split(":log-stream:")[1].startswith("o-") else "")
    return CheckResult("role.stream_policy", FAIL,
                       f"{action} is not allowed on {arn}{extra}"
                       + (f"; {hint}" if hint else ""),
                       "run `trailwatch apply` (it writes the documented policy: "
                       f"{', '.join(r for r in stream_policy(target)['Statement'][0]['Resource'])})")


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
    if age > RECENT:
        return CheckResult("delivery.recent", WARN, f"last delivery {when:%Y-%m-%d %H:%M} UTC, "
                           f"{age.total_seconds() / 3600:.0f} h ago",
                           "is the trail logging and are events expected? check delivery.error")
    return CheckResult("delivery.recent", PASS, f"last delivery {when:%Y-%m-%d %H:%M:%S} UTC "
                       f"({age.total_seconds():.0f} s ago)")


def _filters(ctx: Context) -> dict[str, Any]:
    from setup.cis_alarms import read_filters
    return ctx.get("filters", lambda: read_filters(ctx.clients, ctx.target))


def _cis_metrics(ctx: Context) -> dict[str, tuple[str, str]]:
    """CIS rule id -> (namespace, metric) of the filter that carries its exact pattern."""
    from handlers.cis import CIS_CONTROLS
    by_pattern = {f.get("filterPattern"): f for f in _filters(ctx).values()}
    out = {}
    for c in CIS_CONTROLS:
        f = by_pattern.get(c.pattern)
        if f and f.get("metricTransformations"):
            t = f["metricTransformations"][0]
            out[c.cis] = (t.get("metricNamespace"), t.get("metricName"))
    return out


def _cis_alarm_topics(ctx: Context) -> dict[str, list[str]]:
    from setup.cis_alarms import read_alarms

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
    from handlers.cis import CIS_CONTROLS
    found = _cis_metrics(ctx)
    if not found:
        return CheckResult("cis.metric_filters", WARN, "no CIS metric filters on the log group "
                           "(Security Hub CloudWatch.1-14 fail without them)",
                           "trailwatch apply --cis-alarms")
    missing = [c.cis for c in CIS_CONTROLS if c.cis not in found]
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


@check
def cis_topic_subscribers(ctx: Context) -> CheckResult:
    arns = sorted({a for actions in _cis_alarm_topics(ctx).values() for a in actions
                   if ":sns:" in a})
    if not arns:
        return CheckResult("cis.topic_subscribers", WARN, "no SNS topic behind CIS alarms",
                           "trailwatch apply --cis-alarms")
    sns = ctx.clients.client("sns", ctx.target.region)
    empty = [a for a in arns if not sns.list_subscriptions_by_topic(TopicArn=a).get(
        "Subscriptions")]
    if empty:
        return CheckResult("cis.topic_subscribers", WARN, f"topic {empty[0]} has no subscriber: "
                           "the alarms notify nobody (Security Hub reports WARNING)",
                           f"aws sns subscribe --topic-arn {empty[0]} --protocol email "
                           "--notification-endpoint you@example.com")
    return CheckResult("cis.topic_subscribers", PASS, f"{len(arns)} alarm topic(s) with subscribers")


def _lambda_allows_logs(policy: dict[str, Any], target: Target) -> bool:
    from setup.policy_eval import as_list, matches_any
    services = {f"logs.{target.region}.amazonaws.com", "logs.amazonaws.com"}
    for st in policy.get("Statement", []):
        principal = st.get("Principal")
        svc = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if st.get("Effect") != "Allow" or not services & set(svc):
            continue
        cond = st.get("Condition") or {}
        arns = [v for block in cond.values() for k, v in (block or {}).items()
                if k.lower() == "aws:sourcearn"]
        if not arns or matches_any(arns, target.log_group_arn) or \
                matches_any(arns, target.log_group_arn_bare):
            return True
    return False


@check
def subscription_filters(ctx: Context) -> CheckResult:
    import json as _json
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
                           f"{target.log_group}")
    problems = []
    lam = ctx.clients.client("lambda", target.region)
    for s in subs:
        dest = s.get("destinationArn", "")
        if ":lambda:" not in dest:
            continue
        try:
            policy = _json.loads(lam.get_policy(FunctionName=dest)["Policy"])
        except ClientError as e:
            problems.append(f"{s['filterName']} -> {dest}: {error_code(e)}")
            continue
        if not _lambda_allows_logs(policy, target):
            problems.append(f"{s['filterName']} -> {dest}: the function's resource policy does not "
                            f"allow logs.{target.region}.amazonaws.com for this log group")
    if problems:
        return CheckResult("subscription.filters", FAIL, "; ".join(problems),
                           "add the permission: aws lambda add-permission --principal "
                           f"logs.{target.region}.amazonaws.com --source-arn {target.log_group_arn}")
    if len(subs) >= 2:
        return CheckResult("subscription.filters", WARN, f"{len(subs)} of 2 subscription filters "
                           "used: no room for another consumer",
                           "fan out through one Kinesis stream instead of more filters")
    return CheckResult("subscription.filters", PASS, f"{len(subs)} subscription filter(s), "
                       "destinations reachable")


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
