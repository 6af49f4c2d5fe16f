"""``verify --canary`` / ``apply --canary`` / ``apply --wait`` against moto, with an injected clock
and sleep (every wait is instant and exact)."""

from __future__ import annotations

import datetime as dt
import io
import json
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from setup.verify import canary
from setup.aws import AwsClients
from handlers.canary import canary_filter
from setup.verify.canary import Canary, wait_for_delivery
from setup.cli import main
from setup.wiring.models import Target, Trail

ACCT = "123456789012"
REGION = "us-east-1"
GROUP = "CloudTrail/main"
STREAM = f"{ACCT}_CloudTrail_{REGION}"


class FakeTime:
    """A clock that only moves when the code under test sleeps; ``on_sleep`` plays AWS."""

    def __init__(self, start: float | None = None, on_sleep=None) -> None:
        # moto refuses log events more than 2 h ahead of / 14 days behind the real time
        self.t = float(int(time.time())) if start is None else start
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s
        if self.on_sleep:
            self.on_sleep(self)


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
        yield


def target() -> Target:
    trail = Trail("main", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main", REGION, ACCT,
                  False, True, f"arn:aws:logs:{REGION}:{ACCT}:log-group:{GROUP}:*",
                  f"arn:aws:iam::{ACCT}:role/r")
    return Target(trail=trail, account=ACCT, log_group=GROUP, role_name="r")


def canary_record(nonce: str, event_time: float, account: str = ACCT) -> dict:
    return {"eventVersion": "1.09", "eventSource": "logs.amazonaws.com",
            "eventName": "PutMetricFilter", "awsRegion": REGION, "eventID": f"ev-{nonce}",
            "eventTime": dt.datetime.fromtimestamp(event_time, dt.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "requestParameters": {"logGroupName": GROUP, **canary_filter(nonce)},
            "recipientAccountId": account, "eventType": "AwsApiCall"}


def put(group: str, stream: str, ts_ms: int, message: str) -> None:
    logs = boto3.client("logs", region_name=REGION)
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": ts_ms, "message": message}])


def test_canary_delivered_after_polls_reports_timings_and_cleans_up(aws):
    nonce = "tw-0123456789abcdef"
    called = {}

    def cloudtrail(ft: FakeTime) -> None:     # the record arrives after ~4 min of polling
        if ft.t - called["t"] >= 240 and "done" not in called:
            called["done"] = True
            put(GROUP, STREAM, int((called["t"] + 200) * 1000),
                json.dumps(canary_record(nonce, called["t"] + 1)))

    ft = FakeTime(on_sleep=cloudtrail)
    called["t"] = ft.t
    msgs: list[str] = []
    c = Canary(AwsClients(region=REGION), target(), timeout=900, clock=ft.clock, sleep=ft.sleep,
               progress=msgs.append, nonce=nonce)
    delivered, processed = c.run()
    assert delivered.status == "PASS", delivered.message
    probe = delivered.details["probes"][0]
    assert probe["stream"] == STREAM
    assert probe["delivery_lag_seconds"] == 199.0
    assert probe["found_after_seconds"] >= 240
    assert ft.sleeps[0] == canary.FIRST_INTERVAL and max(ft.sleeps) <= canary.MAX_INTERVAL
    assert any("waiting for the canary" in m for m in msgs)
    # the metric filter was deleted again; no subscription filter -> processor part not
    # checked, says why
    assert boto3.client("logs", region_name=REGION).describe_metric_filters(
        logGroupName=GROUP)["metricFilters"] == []
    assert processed.status == "WARN" and "no subscription filter" in processed.message


def test_canary_timeout_is_fail_with_delivery_error_and_bounded(aws):
    ft = FakeTime()
    c = Canary(AwsClients(region=REGION), target(), timeout=900, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None)
    delivered, processed = c.run()
    assert delivered.status == "FAIL"
    assert "within 900 s" in delivered.message
    assert sum(ft.sleeps) == pytest.approx(900)
    assert processed.status == "WARN" and "not checked" in processed.message


def test_cli_verify_canary_timeout_exits_1_with_json(aws, monkeypatch):
    ft = FakeTime()
    monkeypatch.setattr(canary, "_now", ft.clock)
    monkeypatch.setattr(canary, "_sleep", ft.sleep)
    out = io.StringIO()
    code = main(["verify", "--trail", "main", "--log-group", GROUP, "--canary",
                 "--canary-timeout", "60", "--output", "json"], out=out,
                clients=AwsClients(region=REGION))
    doc = json.loads(out.getvalue())
    checks = {c["id"]: c for c in doc["checks"]}
    assert code == 1
    assert checks["canary.delivered"]["status"] == "FAIL"
    assert checks["canary.delivered"]["details"]["timeout_seconds"] == 60
    assert sum(ft.sleeps) == pytest.approx(60)


def test_processor_observed_line_gives_processed_pass(aws):
    nonce = "tw-feedbeef"
    lam_arn = f"arn:aws:lambda:{REGION}:{ACCT}:function:proc"
    fn_group = "/aws/lambda/proc"
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=fn_group)
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    state = {"n": 0}

    def processor_logs(ft: FakeTime) -> None:
        state["n"] += 1
        if state["n"] == 2:
            put(fn_group, "2026/01/01/[$LATEST]abc", int((ft.t) * 1000), json.dumps(
                {"level": "INFO", "message": "canary_observed", "nonce": nonce,
                 "receipt_lag_seconds": 1.5, "delivery_lag_seconds": 30.0}))
    ft.on_sleep = processor_logs
    c = Canary(AwsClients(region=REGION), target(), clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce)
    c._processors = lambda: ([("trailwatch-processor", lam_arn)], [])   # moto needs docker
    delivered, processed = c.run()
    assert delivered.status == "PASS"
    assert processed.status == "PASS", processed.message
    assert processed.details["receipt_lag_seconds"] == 1.5
    assert processed.details["function_log_group"] == fn_group


def test_processor_silent_is_fail(aws):
    nonce = "tw-silent"
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    c = Canary(AwsClients(region=REGION), target(), timeout=300, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce)
    c._processors = lambda: ([("f", f"arn:aws:lambda:{REGION}:{ACCT}:function:proc")], [])
    _, processed = c.run()
    assert processed.status == "FAIL" and "did not log canary_observed" in processed.message


def test_kinesis_destination_says_processor_not_checked(aws):
    nonce = "tw-kinesis"
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName="fanout", ShardCount=1)
    arn = kinesis.describe_stream(StreamName="fanout")["StreamDescription"]["StreamARN"]
    boto3.client("logs", region_name=REGION).put_subscription_filter(
        logGroupName=GROUP, filterName="to-kinesis", filterPattern="", destinationArn=arn,
        roleArn=f"arn:aws:iam::{ACCT}:role/cwl-to-kinesis")
    c = Canary(AwsClients(region=REGION), target(), clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce)
    delivered, processed = c.run()
    assert delivered.status == "PASS"
    assert processed.status == "WARN"
    assert "Kinesis" in processed.message and "not checked" in processed.message


def test_canary_shaped_record_for_another_nonce_is_not_accepted(aws):
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(
        {**canary_record("tw-other", ft.t), "eventName": "UntagResource",
         "requestParameters": {"note": "tw-mine"}}))
    c = Canary(AwsClients(region=REGION), target(), timeout=30, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce="tw-mine")
    assert c.run()[0].status == "FAIL"


# ----------------------------------------------------------------------------------- apply --wait

class StatusSeq:
    """GetTrailStatus answers in sequence (the last one repeats)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def get_trail_status(self, Name):
        self.calls += 1
        return self.answers[min(self.calls - 1, len(self.answers) - 1)]


class Clients:
    def __init__(self, ct):
        self.ct = ct

    def client(self, service, region=None):
        assert service == "cloudtrail" and region == REGION
        return self.ct


def test_wait_passes_when_delivery_time_advances():
    ft = FakeTime()
    since = ft.t
    before = dt.datetime.fromtimestamp(since - 3600, dt.timezone.utc)
    after = dt.datetime.fromtimestamp(since + 20, dt.timezone.utc)
    ct = StatusSeq([{"LatestCloudWatchLogsDeliveryTime": before}] * 3 +
                   [{"LatestCloudWatchLogsDeliveryTime": after}])
    r = wait_for_delivery(Clients(ct), target(), since, 900, ft.clock, ft.sleep, lambda m: None)
    assert r.status == "PASS" and ct.calls == 4


def test_wait_fails_on_new_delivery_error():
    ft = FakeTime()
    ct = StatusSeq([{}, {"LatestCloudWatchLogsDeliveryError": "AccessDenied for o-x stream"}])
    r = wait_for_delivery(Clients(ct), target(), ft.t, 900, ft.clock, ft.sleep, lambda m: None)
    assert r.status == "FAIL" and "AccessDenied for o-x stream" in r.message and ct.calls == 2


def test_wait_stale_error_gets_grace_then_clears():
    ft = FakeTime()
    since = ft.t
    later = dt.datetime.fromtimestamp(since + 60, dt.timezone.utc)
    ct = StatusSeq([{"LatestCloudWatchLogsDeliveryError": "old"}] * 3 +
                   [{"LatestCloudWatchLogsDeliveryError": "", "LatestCloudWatchLogsDeliveryTime":
                     later}])
    r = wait_for_delivery(Clients(ct), target(), since, 900, ft.clock, ft.sleep, lambda m: None)
    assert r.status == "PASS"


def test_wait_times_out_fail():
    ft = FakeTime()
    ct = StatusSeq([{}])
    r = wait_for_delivery(Clients(ct), target(), ft.t, 100, ft.clock, ft.sleep, lambda m: None)
    assert r.status == "FAIL" and "did not advance" in r.message
    assert sum(ft.sleeps) == pytest.approx(100)


def test_duration_flag_values():
    assert canary.duration("2h") == 7200 and canary.duration("90m") == 5400
    assert canary.duration("7200") == 7200 and canary.duration("1d") == 86400
    with pytest.raises(Exception):
        canary.duration("soon")


def test_cli_apply_wait_times_out_fail_exit_1(aws, monkeypatch):
    """moto never reports a CloudWatch Logs delivery: --wait must not pass on silence."""
    ft = FakeTime()
    monkeypatch.setattr(canary, "_now", ft.clock)
    monkeypatch.setattr(canary, "_sleep", ft.sleep)
    out = io.StringIO()
    code = main(["apply", "--trail", "main", "--log-group", GROUP, "--yes", "--wait",
                 "--wait-timeout", "120", "--output", "json"], out=out,
                clients=AwsClients(region=REGION))
    checks = {c["id"]: c for c in json.loads(out.getvalue())["verify"]["checks"]}
    assert checks["delivery.after_apply"]["status"] == "FAIL"
    assert code == 1
    assert sum(ft.sleeps) == pytest.approx(120)


def test_cli_apply_without_wait_keeps_exit_0(aws):
    out = io.StringIO()
    code = main(["apply", "--trail", "main", "--log-group", GROUP, "--yes", "--output", "json"],
                out=out, clients=AwsClients(region=REGION))
    assert code == 0
    assert "delivery.after_apply" not in out.getvalue()


# ----------------------------------------------------------------------------------- processor wait

def _processor_line_after(nonce: str, fn_group: str, seconds: float, ft: FakeTime, found: dict):
    """The processor logs canary_observed ``seconds`` after the canary found the record."""
    def on_sleep(ft: FakeTime) -> None:
        if "at" in found and ft.t - found["at"] >= seconds and "logged" not in found:
            found["logged"] = True
            put(fn_group, "2026/01/01/[$LATEST]abc", int(ft.t * 1000), json.dumps(
                {"level": "INFO", "message": "canary_observed", "nonce": nonce,
                 "receipt_lag_seconds": 2.0, "delivery_lag_seconds": 30.0}))
    return on_sleep


def test_the_processor_gets_the_documented_subscription_delivery_time(aws):
    """Issue 24 item 7. Observed on d534756: after the record arrived the canary gave the
    processor 120 s, while "Log events are sent to the receiving resource soon after being
    ingested, usually less than three minutes" (CloudWatch Logs User Guide, "Real-time
    processing of log data with subscriptions"): a processor line 170 s later was a FAIL."""
    nonce = "tw-slow-subscription"
    fn_group = "/aws/lambda/proc"
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=fn_group)
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    found: dict = {}
    ft.on_sleep = _processor_line_after(nonce, fn_group, 170, ft, found)
    c = Canary(AwsClients(region=REGION), target(), timeout=60, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce)
    c._processors = lambda: ([("f", f"arn:aws:lambda:{REGION}:{ACCT}:function:proc")], [])
    original = c.wait_delivered

    def wait_delivered(probes, deadline):
        original(probes, deadline)
        found["at"] = probes[0].found.found
    c.wait_delivered = wait_delivered
    delivered, processed = c.run()
    assert delivered.status == "PASS"
    assert processed.status == "PASS", processed.message
    assert canary.SUBSCRIPTION_DELIVERY_SECONDS == 180
    assert canary.DEFAULT_PROCESSOR_WAIT >= canary.SUBSCRIPTION_DELIVERY_SECONDS


@pytest.mark.parametrize("wait", [None, 240.0])
def test_a_silent_processor_is_waited_for_exactly_the_processor_wait(aws, wait):
    nonce = "tw-silent-bounded"
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    kw = {} if wait is None else {"processor_wait": wait}
    c = Canary(AwsClients(region=REGION), target(), timeout=30, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce, **kw)
    c._processors = lambda: ([("f", f"arn:aws:lambda:{REGION}:{ACCT}:function:proc")], [])
    _, processed = c.run()
    assert processed.status == "FAIL"
    expected = canary.DEFAULT_PROCESSOR_WAIT if wait is None else wait
    assert sum(ft.sleeps) == pytest.approx(expected)          # found at once, then the wait
    assert f"{expected:.0f} s" in processed.message


def test_cli_canary_processor_wait_flag(aws, monkeypatch):
    seen = {}
    original = canary.Canary.__init__

    def init(self, *a, **kw):
        seen.update(kw)
        original(self, *a, **kw)
    monkeypatch.setattr(canary.Canary, "__init__", init)
    monkeypatch.setattr(canary.Canary, "run", lambda self: [])
    for argv, value in ((["--canary"], canary.DEFAULT_PROCESSOR_WAIT),
                        (["--canary", "--canary-processor-wait", "10m"], 600.0)):
        main(["verify", "--trail", "main", "--log-group", GROUP, *argv, "--output", "json"],
             out=io.StringIO(), clients=AwsClients(region=REGION))
        assert seen["processor_wait"] == value


# ----------------------------------------------------------------------------------- the call

# "CloudWatch Logs supports logging the following actions as events in CloudTrail log files"
# (CloudWatch Logs User Guide, "Logging Amazon CloudWatch Logs API calls in AWS CloudTrail";
# awsdocs/amazon-cloudwatch-logs-user-guide doc_source/logging_cw_api_calls_cwl.md, last version).
LOGGED_BY_CLOUDTRAIL = {
    "CancelExportTask", "CreateExportTask", "CreateLogGroup", "CreateLogStream",
    "DeleteDestination", "DeleteLogGroup", "DeleteLogStream", "DeleteMetricFilter",
    "DeleteRetentionPolicy", "DeleteSubscriptionFilter", "PutDestination",
    "PutDestinationPolicy", "PutMetricFilter", "PutRetentionPolicy", "PutSubscriptionFilter",
    "StartQuery", "StopQuery", "TestMetricFilter"}


def test_every_write_the_canary_makes_is_one_cloudtrail_documents_as_logged(aws):
    """Issue 24 item 7. Observed on d534756: the canary tagged the log group (TagResource /
    UntagResource), which that list does not name: a canary that may never be recorded. It now
    puts and deletes a metric filter that matches nothing, and the processor recognises that."""
    ft = FakeTime()
    clients = AwsClients(region=REGION)
    c = Canary(clients, target(), timeout=10, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce="tw-documented",
               member_role_arn=f"arn:aws:iam::{ACCT}:role/OrganizationAccountAccessRole")
    c.run()
    writes = {op for svc, op, _ in clients.calls if svc == "logs"
              and not op.startswith(("Describe", "Filter", "Get", "List"))}
    assert writes == {"PutMetricFilter", "DeleteMetricFilter"}
    assert writes <= LOGGED_BY_CLOUDTRAIL
    assert set(canary.CANARY_EVENTS) <= LOGGED_BY_CLOUDTRAIL


def test_the_canary_filter_can_never_match_a_cloudtrail_record():
    """Its pattern asks for a top-level field no CloudTrail record has, so the filter never
    publishes, even if its own PutMetricFilter record arrives while it still exists."""
    from handlers.detection.patterns import compile_pattern
    spec = canary_filter("tw-x")
    pattern = compile_pattern(spec["filterPattern"])
    record = canary_record("tw-x", time.time())
    assert pattern.match({"trailwatchCanary": "tw-x"}) is True     # the pattern works ...
    assert pattern.match(record) is False                          # ... and its record misses it
    assert spec["metricTransformations"] == [{"metricName": "TrailwatchCanary",
                                              "metricNamespace": "Trailwatch/Canary",
                                              "metricValue": "1"}]


def test_the_main_probe_does_not_take_the_member_probes_record(aws):
    """The member nonce extends the main one; the main probe accepts only its own filter name."""
    from setup.verify.canary import is_canary_record
    assert is_canary_record(canary_record("tw-1", time.time()), "tw-1")
    assert not is_canary_record(canary_record("tw-1-member", time.time()), "tw-1")


# ----------------------------------------------------------------------------------- leftovers

def _other_filter(name: str, pattern: str = '{ $.eventName = "ConsoleLogin" }', **metric) -> dict:
    return {"logGroupName": GROUP, "filterName": name, "filterPattern": pattern,
            "metricTransformations": [{"metricName": "Other", "metricNamespace": "Team",
                                       "metricValue": "1", **metric}]}


def _filters(group: str = GROUP) -> dict[str, dict]:
    logs = boto3.client("logs", region_name=REGION)
    out, kwargs = {}, {"logGroupName": group}
    while True:
        page = logs.describe_metric_filters(**kwargs)
        out.update({f["filterName"]: f for f in page["metricFilters"]})
        if not page.get("nextToken"):
            return out
        kwargs["nextToken"] = page["nextToken"]


def _canary(ft: FakeTime, nonce: str, fail=None, after=None, **kw) -> Canary:
    from tests.strict_fakes import StrictMetricFilterLogs
    c = Canary(AwsClients(region=REGION), target(), clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce, **kw)
    c.logs = StrictMetricFilterLogs(c.logs, fail=fail, after=after)
    return c


def _refuse(op_name: str, exc):
    return lambda op, request: exc if op == op_name else None


def test_a_log_group_at_the_metric_filter_quota_is_not_blamed_on_permissions(aws):
    """Review B. Observed on 635e2be: 100 filters of other teams on the group -> PutMetricFilter
    LimitExceededException -> FAIL "allow logs:PutMetricFilter and logs:DeleteMetricFilter"."""
    logs = boto3.client("logs", region_name=REGION)
    for i in range(100):
        logs.put_metric_filter(**_other_filter(f"team-{i:03d}"))
    ft = FakeTime()
    c = _canary(ft, "tw-" + "a" * 32, timeout=60)
    delivered, _ = c.run()
    assert delivered.status == "FAIL"
    assert f"log group {GROUP} already has the maximum number of metric filters" in \
        delivered.message and "LimitExceededException" in delivered.message
    assert f"aws logs describe-metric-filters --log-group-name {GROUP} --region {REGION}" in \
        delivered.remediation
    assert "without --canary" in delivered.remediation
    assert f"{GROUP} is at the CloudWatch Logs quota of 100 metric filters per log group" in \
        delivered.remediation
    assert "allow logs:PutMetricFilter" not in delivered.remediation
    assert sorted(_filters()) == [f"team-{i:03d}" for i in range(100)]     # nothing deleted
    assert sum(ft.sleeps) == 0                                             # no pointless wait


def test_a_refused_delete_is_reported_in_the_result_and_warns(aws):
    """Review B. Observed on 635e2be: DeleteMetricFilter refused -> the filter stays and the only
    report is a progress line (nothing with --no-progress or off a terminal); PASS."""
    nonce = "tw-" + "b" * 32
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                         "DeleteMetricFilter")
    c = _canary(ft, nonce, fail=_refuse("DeleteMetricFilter", denied))
    delivered, _ = c.run()
    name = f"trailwatch-canary-{nonce}"
    assert name in _filters()                                   # really left behind
    assert delivered.status == "WARN", delivered.message
    [left] = delivered.details["left_behind"]
    assert left["filter_name"] == name and left["log_group"] == GROUP
    assert left["delete_command"] == (f"aws logs delete-metric-filter --log-group-name {GROUP} "
                                      f"--filter-name {name} --region {REGION}")
    assert "AccessDeniedException" in left["error"]
    assert left["delete_command"] in delivered.remediation and name in delivered.message


def test_a_failed_delivery_with_a_filter_left_behind_stays_fail_and_names_it(aws):
    nonce = "tw-" + "d" * 32
    ft = FakeTime()
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                         "DeleteMetricFilter")
    c = _canary(ft, nonce, fail=_refuse("DeleteMetricFilter", denied), timeout=30)
    delivered, _ = c.run()
    assert delivered.status == "FAIL" and "within 30 s" in delivered.message
    assert delivered.details["left_behind"][0]["filter_name"] == f"trailwatch-canary-{nonce}"
    assert "aws logs delete-metric-filter" in delivered.remediation


def test_a_non_client_error_after_the_put_still_deletes_the_filter(aws):
    """Review B. The put took effect but its response was lost (a read timeout, not a
    ClientError): on 635e2be the error escaped run() and the filter stayed."""
    from botocore.exceptions import ReadTimeoutError
    ft = FakeTime()
    lost = ReadTimeoutError(endpoint_url=f"https://logs.{REGION}.amazonaws.com")
    c = _canary(ft, "tw-" + "c" * 32, after=_refuse("PutMetricFilter", lost), timeout=30)
    delivered, _ = c.run()
    assert _filters() == {}
    assert delivered.status == "FAIL" and "ReadTimeoutError" in delivered.message
    assert "left_behind" not in delivered.details


def test_a_connection_error_on_the_delete_is_retried_then_reported_not_raised(aws):
    """Review B: EndpointConnectionError on DeleteMetricFilter escaped run() on 635e2be."""
    from botocore.exceptions import EndpointConnectionError
    nonce = "tw-" + "e" * 32
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    down = EndpointConnectionError(endpoint_url=f"https://logs.{REGION}.amazonaws.com")
    once = {"n": 0}

    def first_delete_fails(op, request):
        if op == "DeleteMetricFilter":
            once["n"] += 1
            return down if once["n"] == 1 else None
        return None
    delivered, _ = _canary(ft, nonce, fail=first_delete_fails).run()
    assert _filters() == {} and delivered.status == "PASS", delivered.message

    nonce2 = "tw-" + "f" * 32
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce2, ft.t)))
    delivered, _ = _canary(ft, nonce2, fail=_refuse("DeleteMetricFilter", down)).run()
    assert list(_filters()) == [f"trailwatch-canary-{nonce2}"]
    assert delivered.status == "WARN"
    assert "EndpointConnectionError" in delivered.details["left_behind"][0]["error"]


def test_earlier_leftovers_of_exactly_the_canary_shape_are_removed_and_nothing_else(aws):
    logs = boto3.client("logs", region_name=REGION)
    old, old_member = "tw-" + "1" * 32, "tw-" + "2" * 32 + "-member"
    for n in (old, old_member):
        logs.put_metric_filter(logGroupName=GROUP, **canary_filter(n))
    keep = {
        # canary name, another team's pattern
        "trailwatch-canary-tw-" + "3" * 32: _other_filter("x"),
        # canary-like name that new_nonce() never makes (not 32 hex)
        "trailwatch-canary-tw-deadbeef": {**canary_filter("tw-deadbeef")},
        "trailwatch-canary-tw-" + "4" * 32 + "-extra": canary_filter("tw-" + "4" * 32 + "-extra"),
        # the canary's pattern but a metric with dimensions / a default value
        "trailwatch-canary-tw-" + "5" * 32: {**canary_filter("tw-" + "5" * 32),
                                            "metricTransformations": [
                                                {"metricName": "TrailwatchCanary",
                                                 "metricNamespace": "Trailwatch/Canary",
                                                 "metricValue": "1", "defaultValue": 0.0}]},
        "trailwatch-canary-tw-" + "6" * 32: {**canary_filter("tw-" + "6" * 32),
                                            "metricTransformations": [
                                                {"metricName": "Other",
                                                 "metricNamespace": "Trailwatch/Canary",
                                                 "metricValue": "1"}]},
        # the pattern of another nonce than the name's
        "trailwatch-canary-tw-" + "7" * 32: {**canary_filter("tw-" + "8" * 32)},
        "team-filter": _other_filter("team-filter"),
    }
    for name, spec in keep.items():
        logs.put_metric_filter(**{**spec, "logGroupName": GROUP, "filterName": name})
    nonce = "tw-" + "9" * 32
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    c = _canary(ft, nonce)
    delivered, _ = c.run()
    assert delivered.status == "PASS", delivered.message
    assert sorted(_filters()) == sorted(keep)
    assert sorted(delivered.details["removed_earlier_filters"]) == sorted(
        f"trailwatch-canary-{n}" for n in (old, old_member))
    assert c.logs.ops.index("DescribeMetricFilters") < c.logs.ops.index("PutMetricFilter")


def test_the_member_probe_deletes_its_filter_if_the_group_exists_after_all(aws):
    """The member probe puts on a log group that should not exist; if it does, the filter made
    there is deleted again like the main probe's (635e2be left it)."""
    nonce = "tw-" + "0" * 32
    member_group = f"trailwatch-canary-{nonce}-member"
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=member_group)
    ft = FakeTime()
    c = Canary(AwsClients(region=REGION), target(), timeout=10, clock=ft.clock, sleep=ft.sleep,
               progress=lambda m: None, nonce=nonce,
               member_role_arn=f"arn:aws:iam::{ACCT}:role/OrganizationAccountAccessRole")
    c.run()
    assert _filters(member_group) == {}


def test_a_refused_listing_of_earlier_filters_is_reported_and_the_canary_still_runs(aws):
    nonce = "tw-" + "ab" * 16
    ft = FakeTime()
    put(GROUP, STREAM, int((ft.t + 30) * 1000), json.dumps(canary_record(nonce, ft.t)))
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                         "DescribeMetricFilters")
    delivered, _ = _canary(ft, nonce, fail=_refuse("DescribeMetricFilters", denied)).run()
    assert delivered.status == "PASS" and _filters() == {}
    assert delivered.details["earlier_filters_not_checked"].startswith("AccessDeniedException")
