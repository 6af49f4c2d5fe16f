"""CIS monitoring controls as CloudWatch Logs metric filters and alarms.

The patterns come from :mod:`handlers.detection.cis`, the same catalog the event processor compiles: one
source of truth, so the alarm and the alert that carries the event context agree. Metric namespace
``CISBenchmark``, value 1, alarm ``Sum >= 1`` over 300 s and 1 period, action -> an SNS topic
(created and tagged when ``--alarm-topic`` is not given). Security Hub fails a control whose filter
differs from the prescribed string, so an existing filter with another pattern is rewritten.

Everything is per log group: filter, metric, alarm and topic names carry a short stable id of the
log group (``trailwatch-cis-<gid>-...``), so two trails' alarm sets are never shared and removing
one never touches the other's. Alarms and the topic are tagged with their owner trail(s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from handlers.detection.cis import CIS_CONTROLS, METRIC_NAMESPACE
from setup.aws import AwsClients
from setup.errors import SetupError, error_code
from setup.wiring.models import TAG_KEY, TAG_VALUE, Target, is_owned, trails_in_tags
from setup.wiring.planner import Step

PREFIX = "trailwatch-cis-"


def group_prefix(target: Target) -> str:
    """``trailwatch-cis-<gid>-``: every CIS resource of this log group starts with it."""
    return f"{PREFIX}{target.group_id}-"


def topic_name(target: Target) -> str:
    return f"{PREFIX}{target.group_id}"


def default_topic_arn(target: Target) -> str:
    return f"arn:{target.partition}:sns:{target.region}:{target.account}:{topic_name(target)}"


def names(control: Any, target: Target) -> tuple[str, str, str]:
    """(filter name, alarm name, metric name) of a control for this log group."""
    base = f"{group_prefix(target)}{control.cis}-{control.metric_name}"
    return base, base, f"{control.metric_name}-{target.group_id}"


def validate_alarm_topic(clients: AwsClients, target: Target, topic_arn: str) -> str:
    """--alarm-topic must be an SNS topic ARN in the trail's home region and this account, and
    exist (GetTopicAttributes)."""
    parts = topic_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sns" or not parts[5]:
        raise SetupError(f"--alarm-topic {topic_arn!r} is not an SNS topic ARN",
                         f"pass arn:{target.partition}:sns:{target.region}:{target.account}:NAME",
                         code="AlarmTopicInvalid")
    if parts[1] != target.partition or parts[3] != target.region or parts[4] != target.account:
        raise SetupError(f"--alarm-topic {topic_arn} is not in this account ({target.account}) and "
                         f"the trail's home region ({target.region}); CloudWatch alarms notify "
                         "topics in their own account and region",
                         f"create a topic in {target.account}/{target.region} (or omit "
                         "--alarm-topic to let trailwatch create one for this log group) and "
                         "subscribe the other account's endpoint to it",
                         code="AlarmTopicElsewhere")
    if not topic_exists(clients, target, topic_arn):
        raise SetupError(f"--alarm-topic {topic_arn} does not exist",
                         "create it first, or omit --alarm-topic", code="AlarmTopicNotFound")
    return topic_arn


def alarm_params(control: Any, topic_arn: str, target: Target) -> dict[str, Any]:
    _, alarm_name, metric_name = names(control, target)
    return {"AlarmName": alarm_name,
            "AlarmDescription": f"CIS {control.cis}"
                                + (f" / Security Hub {control.securityhub}" if control.securityhub
                                   else "") + f": {control.title} (trailwatch)",
            "MetricName": metric_name, "Namespace": METRIC_NAMESPACE, "Statistic": "Sum",
            "Period": 300, "EvaluationPeriods": 1, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [topic_arn]}


def filter_params(control: Any, target: Target) -> dict[str, Any]:
    filter_name, _, metric_name = names(control, target)
    return {"logGroupName": target.log_group, "filterName": filter_name,
            "filterPattern": control.pattern,
            "metricTransformations": [{"metricName": metric_name,
                                       "metricNamespace": METRIC_NAMESPACE, "metricValue": "1"}]}


@dataclass
class CisState:
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    topic_exists: bool = False


def read_filters(clients: AwsClients, target: Target) -> dict[str, dict[str, Any]]:
    logs = clients.client("logs", target.region)
    try:
        pages = logs.get_paginator("describe_metric_filters").paginate(
            logGroupName=target.log_group)
        return {f["filterName"]: f for page in pages for f in page.get("metricFilters", [])}
    except ClientError as e:
        if error_code(e) == "ResourceNotFoundException":
            return {}
        raise


def read_alarms(clients: AwsClients, target: Target, prefix: str = "") -> dict[str, dict[str, Any]]:
    cw = clients.client("cloudwatch", target.region)
    kw = {"AlarmNamePrefix": prefix} if prefix else {}
    pages = cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"], **kw)
    return {a["AlarmName"]: a for page in pages for a in page.get("MetricAlarms", [])}


def topic_exists(clients: AwsClients, target: Target, topic_arn: str) -> bool:
    try:
        clients.client("sns", target.region).get_topic_attributes(TopicArn=topic_arn)
        return True
    except ClientError as e:
        if error_code(e) in ("NotFound", "NotFoundException", "InvalidParameter"):
            return False
        raise


def legacy_alarms(clients: AwsClients, target: Target) -> list[str]:
    """Alarms of an earlier trailwatch with region-wide names (``trailwatch-cis-<control>-...``,
    no log group id): reported, never adopted or deleted (they may serve another trail)."""
    return sorted(n for n in read_alarms(clients, target, PREFIX) if n[len(PREFIX):][:1].isdigit())


def read_cis_state(clients: AwsClients, target: Target, topic_arn: str) -> CisState:
    return CisState(filters=read_filters(clients, target),
                    alarms=read_alarms(clients, target, group_prefix(target)),
                    topic_exists=topic_exists(clients, target, topic_arn))


def _same_alarm(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return all(current.get(k) == v for k, v in desired.items()
               if k not in ("AlarmDescription", "Tags"))


def plan_cis(target: Target, state: CisState, topic_arn: str, create_topic: bool) -> list[Step]:
    region = target.region
    steps: list[Step] = []
    tags = [{"Key": k, "Value": v} for k, v in target.tags.items()]
    if create_topic and not state.topic_exists:
        steps.append(Step("sns", "CreateTopic", {"Name": topic_name(target), "Tags": tags},
                          f"create SNS topic {topic_name(target)} for the CIS alarms of "
                          f"{target.log_group} (subscribe to it!)",
                          ("sns:CreateTopic", "sns:TagResource"), region, resource=topic_arn))
    for c in CIS_CONTROLS:
        want = filter_params(c, target)
        filter_name, alarm_name, metric_name = names(c, target)
        have = state.filters.get(filter_name)
        if have is None or have.get("filterPattern") != c.pattern or \
                have.get("metricTransformations", [{}])[0].get("metricName") != metric_name:
            steps.append(Step("logs", "PutMetricFilter", want,
                              f"{'add' if have is None else 'rewrite'} metric filter CIS {c.cis} "
                              f"({c.title}) -> {METRIC_NAMESPACE}/{metric_name}",
                              ("logs:PutMetricFilter",), region,
                              resource=target.log_group_arn_bare))
        alarm = alarm_params(c, topic_arn, target)
        if alarm_name not in state.alarms or not _same_alarm(state.alarms[alarm_name], alarm):
            if alarm_name not in state.alarms:
                alarm["Tags"] = tags
            steps.append(Step("cloudwatch", "PutMetricAlarm", alarm,
                              f"alarm {alarm_name}: Sum >= 1 in 300 s -> {topic_arn}",
                              ("cloudwatch:PutMetricAlarm", "cloudwatch:TagResource"), region,
                              resource=f"arn:{target.partition}:cloudwatch:{region}:"
                                       f"{target.account}:alarm:{alarm_name}"))
    return steps


def _tags(client: Any, arn: str, arn_param: str) -> dict[str, str]:
    try:
        resp = client.list_tags_for_resource(**{arn_param: arn})
    except ClientError:
        return {}
    return {t["Key"]: t["Value"] for t in resp.get("Tags", [])}


def removal_steps(clients: AwsClients, target: Target, group_in_use_by: list[str]
                  ) -> tuple[list[Step], list[str]]:
    """Delete this log group's CIS filters, alarms and topic, only when provably unused:
    the log group serves no other trail (``group_in_use_by``), alarms and the topic are tagged
    managed-by=trailwatch, and no alarm outside this set notifies the topic."""
    region = target.region
    steps: list[Step] = []
    notes: list[str] = []
    prefix = group_prefix(target)
    filters = sorted(n for n in read_filters(clients, target) if n.startswith(prefix))
    alarms = read_alarms(clients, target, prefix)
    topic = default_topic_arn(target)
    has_topic = topic_exists(clients, target, topic)
    if not (filters or alarms or has_topic):
        return steps, notes
    if group_in_use_by:
        notes.append(f"CIS filters, alarms and topic of {target.log_group} kept: the log group "
                     f"still serves {', '.join(group_in_use_by)}")
        return steps, notes
    for name in filters:
        steps.append(Step("logs", "DeleteMetricFilter", {"logGroupName": target.log_group,
                                                         "filterName": name},
                          f"delete metric filter {name}", ("logs:DeleteMetricFilter",), region,
                          resource=target.log_group_arn_bare, destructive=True))
    cw = clients.client("cloudwatch", region)
    owned, foreign = [], []
    for name, alarm in sorted(alarms.items()):
        (owned if is_owned(_tags(cw, alarm["AlarmArn"], "ResourceARN")) else foreign).append(name)
    if foreign:
        notes.append(f"alarm(s) {', '.join(foreign)} not tagged {TAG_KEY}={TAG_VALUE}: left in place")
    if owned:
        steps.append(Step("cloudwatch", "DeleteAlarms", {"AlarmNames": owned},
                          f"delete {len(owned)} CIS alarm(s) of {target.log_group}",
                          ("cloudwatch:DeleteAlarms",), region, destructive=True))
    if has_topic:
        tags = _tags(clients.client("sns", region), topic, "ResourceArn")
        users = sorted(n for n, a in read_alarms(clients, target).items()
                       if topic in a.get("AlarmActions", []) + a.get("OKActions", []) +
                       a.get("InsufficientDataActions", []) and n not in owned)
        other_trails = trails_in_tags(tags) - {target.trail.arn}
        if not is_owned(tags):
            notes.append(f"topic {topic} was not created by trailwatch: left in place")
        elif users:
            notes.append(f"topic {topic} kept: alarm(s) {', '.join(users)} still notify it")
        elif other_trails:
            notes.append(f"topic {topic} kept: tagged as serving {', '.join(sorted(other_trails))}")
        else:
            steps.append(Step("sns", "DeleteTopic", {"TopicArn": topic},
                              f"delete topic {topic} (and its subscriptions)",
                              ("sns:DeleteTopic",), region, resource=topic, destructive=True))
    return steps, notes
