"""CIS monitoring controls as CloudWatch Logs metric filters and alarms.

The patterns come from :mod:`handlers.cis`, the same catalog the event processor compiles: one
source of truth, so the alarm and the alert that carries the event context agree. Metric namespace
``CISBenchmark``, value 1, alarm ``Sum >= 1`` over 300 s and 1 period, action -> an SNS topic
(created and tagged when ``--alarm-topic`` is not given). Security Hub fails a control whose filter
differs from the prescribed string, so an existing filter with another pattern is rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from handlers.cis import CIS_CONTROLS, METRIC_NAMESPACE
from setup.aws import AwsClients
from setup.models import TAG_KEY, TAG_VALUE, Target
from setup.planner import Step
from setup.state import error_code

DEFAULT_TOPIC = "trailwatch-cis-alarms"
PREFIX = "trailwatch-cis-"


def default_topic_arn(target: Target) -> str:
    return f"arn:{target.partition}:sns:{target.region}:{target.account}:{DEFAULT_TOPIC}"


def alarm_params(control: Any, topic_arn: str) -> dict[str, Any]:
    return {"AlarmName": control.alarm_name,
            "AlarmDescription": f"CIS {control.cis}"
                                + (f" / Security Hub {control.securityhub}" if control.securityhub
                                   else "") + f": {control.title} (trailwatch)",
            "MetricName": control.metric_name, "Namespace": METRIC_NAMESPACE, "Statistic": "Sum",
            "Period": 300, "EvaluationPeriods": 1, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [topic_arn]}


def filter_params(control: Any, log_group: str) -> dict[str, Any]:
    return {"logGroupName": log_group, "filterName": control.filter_name,
            "filterPattern": control.pattern,
            "metricTransformations": [{"metricName": control.metric_name,
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
        if error_code(e) in ("NotFound", "NotFoundException"):
            return False
        raise


def read_cis_state(clients: AwsClients, target: Target, topic_arn: str) -> CisState:
    return CisState(filters=read_filters(clients, target),
                    alarms=read_alarms(clients, target, PREFIX),
                    topic_exists=topic_exists(clients, target, topic_arn))


def _same_alarm(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return all(current.get(k) == v for k, v in desired.items() if k != "AlarmDescription")


def plan_cis(target: Target, state: CisState, topic_arn: str, create_topic: bool) -> list[Step]:
    region = target.region
    steps: list[Step] = []
    if create_topic and not state.topic_exists:
        steps.append(Step("sns", "CreateTopic", {"Name": DEFAULT_TOPIC,
                                                 "Tags": [{"Key": TAG_KEY, "Value": TAG_VALUE}]},
                          f"create SNS topic {DEFAULT_TOPIC} for the CIS alarms (subscribe to it!)",
                          ("sns:CreateTopic", "sns:TagResource"), region))
    for c in CIS_CONTROLS:
        want = filter_params(c, target.log_group)
        have = state.filters.get(c.filter_name)
        if have is None or have.get("filterPattern") != c.pattern or \
                have.get("metricTransformations", [{}])[0].get("metricName") != c.metric_name:
            steps.append(Step("logs", "PutMetricFilter", want,
                              f"{'add' if have is None else 'rewrite'} metric filter CIS {c.cis} "
                              f"({c.title}) -> {METRIC_NAMESPACE}/{c.metric_name}",
                              ("logs:PutMetricFilter",), region))
        alarm = alarm_params(c, topic_arn)
        if c.alarm_name not in state.alarms or not _same_alarm(state.alarms[c.alarm_name], alarm):
            steps.append(Step("cloudwatch", "PutMetricAlarm", alarm,
                              f"alarm {c.alarm_name}: Sum >= 1 in 300 s -> {topic_arn}",
                              ("cloudwatch:PutMetricAlarm",), region))
    return steps


def removal_steps(clients: AwsClients, target: Target) -> tuple[list[Step], list[str]]:
    region = target.region
    steps: list[Step] = []
    notes: list[str] = []
    filters = [n for n in read_filters(clients, target) if n.startswith(PREFIX)]
    for name in sorted(filters):
        steps.append(Step("logs", "DeleteMetricFilter", {"logGroupName": target.log_group,
                                                         "filterName": name},
                          f"delete metric filter {name}", ("logs:DeleteMetricFilter",), region))
    alarms = sorted(read_alarms(clients, target, PREFIX))
    if alarms:
        steps.append(Step("cloudwatch", "DeleteAlarms", {"AlarmNames": alarms},
                          f"delete {len(alarms)} CIS alarm(s)", ("cloudwatch:DeleteAlarms",), region))
    topic = default_topic_arn(target)
    if topic_exists(clients, target, topic):
        tags = clients.client("sns", region).list_tags_for_resource(ResourceArn=topic).get("Tags", [])
        if {"Key": TAG_KEY, "Value": TAG_VALUE} in tags:
            steps.append(Step("sns", "DeleteTopic", {"TopicArn": topic},
                              f"delete topic {DEFAULT_TOPIC}", ("sns:DeleteTopic",), region))
        else:
            notes.append(f"topic {DEFAULT_TOPIC} was not created by trailwatch: left in place")
    return steps, notes
