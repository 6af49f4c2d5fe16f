"""Setup's safety rules through the CLI against moto (the fast unit versions are in
test_setup_rules.py): a new ``--alarm-topic`` reaches existing alarms; ``remove`` deletes only what
trailwatch created: an adopted untagged log group (and its events), an untagged pre-existing
topic, and the user's own metric filters and alarms stay.
"""

from __future__ import annotations

import boto3

from setup.aws import AwsClients
from tests.setup.wiring.test_setup_integration import aws, make_trail, run  # noqa: F401 (fixture)


def test_new_alarm_topic_is_applied_to_existing_alarms(aws):
    make_trail()
    clients = AwsClients(region="us-east-1")
    assert run(["apply", "--trail", "main", "--yes", "--cis-alarms"], clients)[0] == 0
    new = boto3.client("sns", region_name="us-east-1").create_topic(Name="secops")["TopicArn"]
    code, out = run(["apply", "--trail", "main", "--yes", "--cis-alarms", "--alarm-topic", new],
                    AwsClients(region="us-east-1"))
    assert code == 0, out
    alarms = boto3.client("cloudwatch", region_name="us-east-1").describe_alarms(
        AlarmNamePrefix="trailwatch-cis-")["MetricAlarms"]
    assert len(alarms) == 15 and all(a["AlarmActions"] == [new] for a in alarms)


def _logs():
    return boto3.client("logs", region_name="us-east-1")


def test_remove_keeps_an_adopted_untagged_log_group_and_its_events(aws):
    make_trail()
    _logs().create_log_group(logGroupName="CloudTrail/main")
    _logs().create_log_stream(logGroupName="CloudTrail/main", logStreamName="s")
    assert run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))[0] == 0
    code, out = run(["remove", "--trail", "main", "--yes", "--delete-log-group"],
                    AwsClients(region="us-east-1"))
    assert code == 0, out
    groups = _logs().describe_log_groups(logGroupNamePrefix="CloudTrail/main")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["CloudTrail/main"]


def test_remove_deletes_a_log_group_trailwatch_created(aws):
    make_trail()
    run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    code, _ = run(["remove", "--trail", "main", "--yes", "--delete-log-group"],
                  AwsClients(region="us-east-1"))
    assert code == 0
    assert _logs().describe_log_groups(logGroupNamePrefix="CloudTrail/main")["logGroups"] == []


def test_remove_keeps_untagged_topic_and_the_users_own_filters_and_alarms(aws):
    make_trail()
    sns = boto3.client("sns", region_name="us-east-1")
    topic = sns.create_topic(Name="trailwatch-cis-alarms")["TopicArn"]    # the user's, untagged
    assert run(["apply", "--trail", "main", "--yes", "--cis-alarms"],
               AwsClients(region="us-east-1"))[0] == 0
    _logs().put_metric_filter(logGroupName="CloudTrail/main", filterName="my-root-filter",
                              filterPattern='{ $.userIdentity.type = "Root" }',
                              metricTransformations=[{"metricName": "Mine",
                                                      "metricNamespace": "Team",
                                                      "metricValue": "1"}])
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    cw.put_metric_alarm(AlarmName="my-root-alarm", MetricName="Mine", Namespace="Team",
                        Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanOrEqualToThreshold")
    code, out = run(["remove", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    assert code == 0, out
    names = [f["filterName"] for f in _logs().describe_metric_filters(
        logGroupName="CloudTrail/main")["metricFilters"]]
    assert names == ["my-root-filter"]
    assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["my-root-alarm"]
    assert [t["TopicArn"] for t in sns.list_topics()["Topics"]] == [topic]


