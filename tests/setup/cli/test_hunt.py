"""``trailwatch hunt`` over a trail's log group history (moto): the rule's pattern is sent to
FilterLogEvents (moto returns every event whatever the pattern, so the processor's engine
deciding each match is what keeps the answer exact), JSON lines on stdout, summary on stderr."""

from __future__ import annotations

import io
import json
import time

import boto3
import pytest
from moto import mock_aws

from handlers.detection.builtin import builtin_rules
from handlers.detection.patterns import compile_pattern
from handlers.detection.rules import Rule
from setup.aws import AwsClients
from setup.cli import main
from setup.hunt import HuntStats, hunt, parse_time, server_pattern

REGION = "us-east-1"
NOW = 1_765_000_000.0


def record(name, source="cloudtrail.amazonaws.com", eid=None, **extra):
    return {"eventVersion": "1.08", "eventID": eid or name, "eventName": name,
            "eventSource": source, "eventTime": "2025-12-06T05:00:00Z", "awsRegion": REGION,
            "recipientAccountId": "123456789012",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/eve"},
            **extra}


@pytest.fixture
def trail(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName="CloudTrail/team-trail")
        logs.create_log_stream(logGroupName="CloudTrail/team-trail",
                               logStreamName="123456789012_CloudTrail_us-east-1")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ct-bucket")
        group_arn = logs.describe_log_groups()["logGroups"][0]["arn"]
        boto3.client("cloudtrail", region_name=REGION).create_trail(
            Name="team-trail", S3BucketName="ct-bucket", CloudWatchLogsLogGroupArn=group_arn,
            CloudWatchLogsRoleArn="arn:aws:iam::123456789012:role/trailwatch-cwl-team-trail-us-east-1")
        yield logs


def put(logs, records, at):
    logs.put_log_events(logGroupName="CloudTrail/team-trail",
                        logStreamName="123456789012_CloudTrail_us-east-1",
                        logEvents=[{"timestamp": int(at * 1000), "message": m
                                    if isinstance(m, str) else json.dumps(m)} for m in records])


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr
    with redirect_stderr(err):
        code = main(["hunt", *argv, "--region", REGION], out=out, clients=AwsClients(region=REGION))
    return code, [json.loads(ln) for ln in out.getvalue().splitlines()], err.getvalue()


def test_hunt_lists_exactly_the_matching_events_in_the_window(trail):
    now = time.time()
    put(trail, [record("StopLogging", eid="hit-1"), record("DescribeTrails"),
                "not json", record("ConsoleLogin", source="signin.amazonaws.com")], now - 3600)
    put(trail, [record("DeleteTrail", eid="hit-2")], now - 60)
    put(trail, [record("StopLogging", eid="too-old")], now - 10 * 86400)
    code, docs, err = run("--trail", "team-trail", "--rule", "tw-cloudtrail-stopped-or-deleted")
    assert code == 0, err
    assert [d["eventID"] for d in docs] == ["hit-1", "hit-2"]
    first = docs[0]
    assert first["rule"] == "tw-cloudtrail-stopped-or-deleted" and first["record"]["eventID"] == "hit-1"
    assert first["principal"] == "arn:aws:iam::123456789012:user/eve"
    assert first["log_stream"] == "123456789012_CloudTrail_us-east-1"
    assert "2 match(es) in 5 event(s) of CloudTrail/team-trail" in err and "1 event(s) were not JSON" in err


def test_the_rule_pattern_is_what_filter_log_events_gets(trail, monkeypatch):
    calls = []
    real = AwsClients.client

    def spy(self, service, region=None):
        c = real(self, service, region)
        if service == "logs":
            pages = c.get_paginator

            def get_paginator(op):
                p = pages(op)
                orig = p.paginate

                def paginate(**kw):
                    calls.append(kw)
                    return orig(**kw)
                p.paginate = paginate
                return p
            c.get_paginator = get_paginator
        return c
    monkeypatch.setattr(AwsClients, "client", spy)
    put(trail, [record("StopLogging")], time.time() - 60)
    code, docs, _ = run("--trail", "team-trail", "--rule", "cis-4.5", "--since", "1h")
    assert code == 0 and len(docs) == 1
    (kw,) = calls
    cis = next(r for r in builtin_rules(None) if r.id == "cis-4.5")
    assert kw["filterPattern"] == cis.pattern.text and kw["logGroupName"] == "CloudTrail/team-trail"
    assert kw["endTime"] - kw["startTime"] == pytest.approx(3600 * 1000, abs=2000)


def test_a_processor_only_rule_is_sent_as_its_eventname_superset():
    rule = Rule(id="x", title="x", severity="LOW", processor_only=True,
                pattern=compile_pattern('{ ($.eventName = "StopLogging" || $.eventName = '
                                        '"DeleteTrail") && $.requestParameters.name = %^ab% }'))
    pattern, exact = server_pattern(rule)
    assert not exact
    assert pattern == '{ ($.eventName = "DeleteTrail") || ($.eventName = "StopLogging") }'
    plain = Rule(id="y", title="y", severity="LOW", processor_only=True,
                 pattern=compile_pattern("{ $.errorCode = %Denied% }"))
    assert server_pattern(plain) == ("", False)


def test_hunt_applies_the_rule_to_whatever_the_service_returns():
    rule = next(r for r in builtin_rules(None) if r.id == "cis-4.5")

    class Logs:
        def get_paginator(self, op):
            assert op == "filter_log_events"
            return self

        def paginate(self, **kw):
            yield {"events": [{"message": json.dumps(record("StopLogging")), "timestamp": 1},
                              {"message": json.dumps(record("ListTrails")), "timestamp": 2},
                              {"message": "[1, 2]", "timestamp": 3}]}
    stats = HuntStats()
    found = list(hunt(Logs(), "g", rule, 0, 10, stats))
    assert [d["eventName"] for d in found] == ["StopLogging"]
    assert (stats.pages, stats.scanned, stats.matched, stats.unreadable) == (1, 3, 1, 1)


def test_times_and_usage_errors(trail):
    assert parse_time("7d", NOW) == NOW - 7 * 86400
    assert parse_time("30m", NOW) == NOW - 1800
    assert parse_time("2025-12-06T05:00:00Z", NOW) == 1764997200.0
    code, _, err = run("--trail", "team-trail", "--rule", "tw-cloudtrail-stopped-or-delete")
    assert code == 2 and "did you mean tw-cloudtrail-stopped-or-deleted" in err
    code, _, err = run("--trail", "team-trail", "--rule", "cis-4.5", "--since", "yesterday")
    assert code == 2 and "not a time" in err
    code, _, err = run("--trail", "team-trail", "--rule", "cis-4.5", "--since", "1h", "--until", "2h")
    assert code == 2 and "is not before" in err
    code, _, err = run("--rule", "cis-4.5")
    assert code == 2 and "--trail is required" in err
    assert "Traceback" not in err
