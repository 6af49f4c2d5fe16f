"""``trailwatch demo``: the whole path on an embedded local AWS (moto), no account needed.

1. Start moto's ThreadedMotoServer on 127.0.0.1 (free port) and point every client at it.
2. Create an organization with two member accounts, a CloudTrail bucket with its bucket policy and a
   multi-region organization trail.
3. Run ``plan``, ``apply`` and ``verify`` through the very code path of the CLI.
4. Play CloudTrail: before writing a stream, check that the role's trust policy lets
   cloudtrail.amazonaws.com assume it and that its policy allows CreateLogStream/PutLogEvents on
   that exact stream ARN (Deny wins, ``*``/``?`` wildcards). A denied stream is not written and its
   error is reported through GetTrailStatus, as CloudTrail does.
5. Read the log group back as a subscription delivers it (per stream, batched, gzip + base64),
   invoke the event processor, and read the alerts back from SNS through an SQS subscription.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import io
import json
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, TextIO

REGION = "us-east-1"
TRAIL = "org-trail"
BUCKET = "trailwatch-demo-cloudtrail"
SOURCES = Path(__file__).resolve().parent.parent / "events" / "sources"
BATCH = 25


class QuietLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def error(self, msg: str, extra: Any = None) -> None:
        self.records.append(("error", msg, extra or {}))

    warning = info = error


class CountingMetrics:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add_metric(self, name: str, unit: Any, value: float, resolution: int = 60) -> None:
        self.values.setdefault(name, []).append(value)


@contextlib.contextmanager
def embedded_aws():
    """A moto server on a free loopback port; every boto3 client in this process points at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no per-request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="demo",
                      AWS_SECRET_ACCESS_KEY="demo", AWS_SESSION_TOKEN="demo",
                      AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _client(service: str) -> Any:
    import boto3
    return boto3.client(service, region_name=REGION)


def bucket_policy(account: str, org_id: str) -> dict[str, Any]:
    trail_arn = f"arn:aws:cloudtrail:{REGION}:{account}:trail/{TRAIL}"
    cond = {"StringEquals": {"aws:SourceArn": trail_arn}}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AWSCloudTrailAclCheck", "Effect": "Allow",
         "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:GetBucketAcl",
         "Resource": f"arn:aws:s3:::{BUCKET}", "Condition": cond},
        {"Sid": "AWSCloudTrailWrite", "Effect": "Allow",
         "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:PutObject",
         "Resource": [f"arn:aws:s3:::{BUCKET}/AWSLogs/{account}/*",
                      f"arn:aws:s3:::{BUCKET}/AWSLogs/{org_id}/*"],
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                                        "aws:SourceArn": trail_arn}}}]}


def create_world() -> dict[str, Any]:
    org = _client("organizations")
    o = org.create_organization(FeatureSet="ALL")["Organization"]
    members = []
    for name in ("workloads-prod", "workloads-dev"):
        status = org.create_account(Email=f"{name}@example.com", AccountName=name)
        members.append(status["CreateAccountStatus"]["AccountId"])
    account = _client("sts").get_caller_identity()["Account"]
    s3 = _client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(bucket_policy(account, o["Id"])))
    ct = _client("cloudtrail")
    ct.create_trail(Name=TRAIL, S3BucketName=BUCKET, IsMultiRegionTrail=True,
                    IsOrganizationTrail=True, EnableLogFileValidation=True)
    ct.start_logging(Name=TRAIL)
    return {"account": account, "org_id": o["Id"], "members": members}


CliMain = Callable[..., int]


def run_cli(cli: CliMain, argv: list[str]) -> tuple[int, str, str]:
    """Run a trailwatch command through the CLI's own entry function (handed in by the CLI, so
    the demo never imports it); returns (exit code, stdout, stderr)."""
    out = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli(argv, out=out, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------------- records

def demo_records(world: dict[str, Any], now: float) -> dict[str, list[tuple[dict, float]]]:
    """Records per account, each with the delay CloudTrail takes to deliver it."""
    acct, members = world["account"], world["members"]
    out: dict[str, list[tuple[dict, float]]] = {acct: [], members[0]: [], members[1]: []}
    sources = {p.stem: json.loads(p.read_text()) for p in SOURCES.glob("*.json")} \
        if SOURCES.is_dir() else {}
    picked: list[tuple[dict, float]] = []
    for name in ("single-trail-cis", "org-trail-member", "delayed-delivery", "insights-event"):
        for item in sources.get(name, {}).get("envelope", {}).get("logEvents", []):
            if "record" in item and "pad_to_bytes" not in item:
                picked.append((copy.deepcopy(item["record"]), float(item.get("delay_seconds", 300))))
    if not picked:   # installed without the repo's events/: use the rule cases shipped in handlers
        from handlers.rules import cis_rules
        for rule in cis_rules():
            for rec in rule.tests.get("match", [])[:1]:
                picked.append((copy.deepcopy(rec), 300.0))
    start = now - 7200
    for i, (rec, delay) in enumerate(picked):
        event_time = start + i * 60
        rec["eventTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event_time))
        owner = members[i % 2] if i % 3 == 2 else acct
        for sample in ("111122223333", "444455556666"):   # the sources' example accounts
            rec = json.loads(json.dumps(rec).replace(sample, owner))
        rec["recipientAccountId"] = owner
        out[owner].append((rec, min(delay, now - event_time - 1)))
    return out


def stream_name(world: dict[str, Any], account: str) -> str:
    if account == world["account"]:
        return f"{account}_CloudTrail_{REGION}"
    return f"{world['org_id']}_{account}_CloudTrail_{REGION}"


def may_deliver(role_name: str, stream_arn: str) -> tuple[bool, str]:
    """What CloudTrail would find out: can it assume the role and write this exact stream?"""
    from setup.policy_eval import evaluate
    from setup.state import _doc
    iam = _client("iam")
    role = iam.get_role(RoleName=role_name)["Role"]
    if not evaluate([_doc(role["AssumeRolePolicyDocument"])], "sts:AssumeRole", None,
                    "cloudtrail.amazonaws.com").allowed:
        return False, f"CloudTrail cannot assume role {role_name}"
    docs = [_doc(iam.get_role_policy(RoleName=role_name, PolicyName=p)["PolicyDocument"])
            for p in iam.list_role_policies(RoleName=role_name)["PolicyNames"]]
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        if not evaluate(docs, action, stream_arn).allowed:
            return False, f"AccessDenied: {action} on {stream_arn}"
    return True, ""


def record_trail_status(account: str, delivered_at: float | None, error: str) -> None:
    """Report delivery the way CloudTrail does, through GetTrailStatus of the embedded trail."""
    from moto.cloudtrail.models import cloudtrail_backends
    trail = cloudtrail_backends[account][REGION].trails[TRAIL]
    status = trail.status
    original = type(status).description

    def description(self: Any = status) -> dict[str, Any]:
        doc = original(self)
        if delivered_at:
            doc["LatestCloudWatchLogsDeliveryTime"] = int(delivered_at)
        doc["LatestCloudWatchLogsDeliveryError"] = error
        return doc

    status.description = description  # type: ignore[method-assign]


def deliver(world: dict[str, Any], log_group: str, role_name: str, now: float) -> dict[str, Any]:
    logs = _client("logs")
    written, denied = 0, []
    latest = None
    records = demo_records(world, now)
    records[world["account"]].append((trailwatch_update_record(world, now), 240.0))
    for account, items in records.items():
        name = stream_name(world, account)
        arn = (f"arn:aws:logs:{REGION}:{world['account']}:log-group:{log_group}:log-stream:{name}")
        ok, why = may_deliver(role_name, arn)
        if not ok:
            denied.append({"stream": name, "events": len(items), "error": why})
            continue
        logs.create_log_stream(logGroupName=log_group, logStreamName=name)
        events = sorted(({"timestamp": int(_event_epoch(r) * 1000 + d * 1000),
                          "message": json.dumps(r, separators=(",", ":"))} for r, d in items),
                        key=lambda e: e["timestamp"])
        logs.put_log_events(logGroupName=log_group, logStreamName=name, logEvents=events)
        written += len(events)
        latest = max(latest or 0, events[-1]["timestamp"] / 1000)
    # Something that is not CloudTrail also wrote to the group: an oversize line and plain text.
    noise = "manual-test"
    logs.create_log_stream(logGroupName=log_group, logStreamName=noise)
    big = json.dumps({"eventVersion": "1.08", "eventID": "too-big", "requestParameters":
                      {"blob": "x" * 270_000}})
    logs.put_log_events(logGroupName=log_group, logStreamName=noise, logEvents=[
        {"timestamp": int(now * 1000) - 2000, "message": big},
        {"timestamp": int(now * 1000) - 1000, "message": "hello from a test script"}])
    written += 2
    error = "; ".join(d["error"] for d in denied)
    record_trail_status(world["account"], latest, error)
    return {"written": written, "denied": denied}


def trailwatch_update_record(world: dict[str, Any], now: float) -> dict[str, Any]:
    from setup.aws import USER_AGENT
    acct = world["account"]
    return {"eventVersion": "1.09", "userIdentity": {
        "type": "IAMUser", "principalId": "AIDADEMO", "arn": f"arn:aws:iam::{acct}:user/secops",
        "accountId": acct, "userName": "secops"},
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600)),
        "eventSource": "cloudtrail.amazonaws.com", "eventName": "UpdateTrail",
        "awsRegion": REGION, "sourceIPAddress": "203.0.113.10",
        "userAgent": f"Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 {USER_AGENT}",
        "requestParameters": {"name": f"arn:aws:cloudtrail:{REGION}:{acct}:trail/{TRAIL}",
                              # a trail wired to trailwatch's delivery role: a managed resource
                              "cloudWatchLogsRoleArn":
                                  f"arn:aws:iam::{acct}:role/trailwatch-cwl-{TRAIL}"},
        "responseElements": None, "eventID": "demo-trailwatch-update", "eventType": "AwsApiCall",
        "recipientAccountId": acct, "managementEvent": True, "eventCategory": "Management"}


def _event_epoch(rec: dict[str, Any]) -> float:
    from handlers.pipeline import parse_event_time
    return parse_event_time(rec["eventTime"]) or time.time()


# ----------------------------------------------------------------------------------- subscription

def subscription_invocations(log_group: str, owner: str) -> list[dict[str, Any]]:
    """Read the group back as CloudWatch Logs would deliver it to a subscribed Lambda."""
    logs = _client("logs")
    invocations = [_wrap({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs",
                          "logGroup": "", "logStream": "", "subscriptionFilters": [],
                          "logEvents": [{"id": "", "timestamp": int(time.time() * 1000),
                                         "message": "CWL CONTROL MESSAGE: Checking health of "
                                                    "destination Lambda function."}]})]
    for name, start, chunk in log_batches(logs, log_group):
        invocations.append(_wrap({
            "messageType": "DATA_MESSAGE", "owner": owner, "logGroup": log_group,
            "logStream": name, "subscriptionFilters": ["trailwatch-processor"],
            "logEvents": [{"id": f"{e['timestamp']:020d}{abs(hash((name, start + i))):036d}"[:56],
                           "timestamp": e["timestamp"], "message": e["message"]}
                          for i, e in enumerate(chunk)]}))
    return invocations


def log_batches(logs: Any, log_group: str) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    """The group's events stream by stream in subscription-sized batches: (stream, start, events)."""
    for stream in logs.describe_log_streams(logGroupName=log_group)["logStreams"]:
        name = stream["logStreamName"]
        events = logs.get_log_events(logGroupName=log_group, logStreamName=name,
                                     startFromHead=True)["events"]
        for start in range(0, len(events), BATCH):
            yield name, start, events[start:start + BATCH]


def _wrap(envelope: dict[str, Any]) -> dict[str, Any]:
    raw = gzip.compress(json.dumps(envelope).encode())
    return {"awslogs": {"data": base64.b64encode(raw).decode()}}


def alert_channel(cis_topic_name: str) -> tuple[str, str, str]:
    """The processor's alert topic with an SQS inbox, the failure queue, and an on-call queue
    subscribed to the CIS alarm topic that `apply --cis-alarms` created."""
    sns, sqs = _client("sns"), _client("sqs")
    topic = sns.create_topic(Name="trailwatch-alerts")["TopicArn"]
    read_q = sqs.create_queue(QueueName="trailwatch-demo-inbox")["QueueUrl"]
    fail_q = sqs.create_queue(QueueName="trailwatch-failures")["QueueUrl"]
    oncall = sqs.create_queue(QueueName="trailwatch-demo-oncall")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=read_q, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    cis_topic = sns.create_topic(Name=cis_topic_name)["TopicArn"]   # exists: returns its ARN
    oncall_arn = sqs.get_queue_attributes(QueueUrl=oncall, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=cis_topic, Protocol="sqs", Endpoint=oncall_arn["Attributes"]["QueueArn"])
    return topic, read_q, fail_q


def drain_queue(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete everything in an SQS queue; return the JSON bodies."""
    out: list[dict[str, Any]] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        out += [json.loads(m["Body"]) for m in msgs]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])


def process(invocations: list[dict[str, Any]], topic: str, fail_q: str) -> dict[str, Any]:
    from handlers.processor import App
    metrics = CountingMetrics()
    lags: list[float] = []
    acct = topic.split(":")[4]
    # the demo's operator (user secops) is the principal that runs trailwatch (issue 11)
    app = App.from_env({"ALERT_TOPIC_ARN": topic, "FAILURE_QUEUE_URL": fail_q,
                        "EXPECTED_CHANGE_PRINCIPALS": f"arn:aws:iam::{acct}:user/secops"},
                       metrics_sink=metrics, log=QuietLog(),
                       emit=lambda line: lags.extend(json.loads(line).get("DeliveryLag", [])))
    totals: dict[str, int] = {}
    for event in invocations:
        result = app.handle(event)
        for k, v in result.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return {"totals": totals, "lags": lags}


def lag_summary(lags: list[float]) -> dict[str, float] | None:
    """Nearest-rank p50/p95 and max of the DeliveryLag samples the handler wrote as EMF
    (what CloudWatch computes from them)."""
    if not lags:
        return None
    s = sorted(lags)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))], 3)

    return {"p50": pct(0.50), "p95": pct(0.95), "max": round(s[-1], 3), "count": len(s)}


# ----------------------------------------------------------------------------------- main

def run_demo(output: str = "text", broken_policy: bool = False, out: TextIO = sys.stdout,
             cli: CliMain | None = None) -> int:
    """``cli(argv, out=, stdin=) -> exit code`` runs a trailwatch command; the CLI passes its own
    ``main`` (the same command functions a user runs)."""
    if cli is None:
        raise TypeError("run_demo needs the CLI entry function (cli=setup.cli.main)")
    started = time.monotonic()
    report: dict[str, Any] = {"scenario": "broken-policy" if broken_policy else "healthy"}
    with embedded_aws() as endpoint:
        report["endpoint"] = endpoint
        world = create_world()
        report["organization"] = {"id": world["org_id"], "management": world["account"],
                                  "members": world["members"]}
        args = ["--trail", TRAIL]
        report["plan"] = run_cli(cli, ["plan", *args, "--cis-alarms"])
        report["apply"] = run_cli(cli, ["apply", *args, "--cis-alarms", "--yes"])
        if report["apply"][0] != 0:
            print(report["apply"][1] + report["apply"][2], file=sys.stderr)
            return 1
        plan = json.loads(run_cli(cli, ["plan", *args, "--cis-alarms", "--output", "json"])[1])
        log_group, role = plan["log_group"]["name"], plan["role"]["name"]
        if broken_policy:
            break_policy(world, log_group, role, plan["role"]["policy_name"])
        topic, read_q, fail_q = alert_channel(plan["cis"]["topic_name"])
        now = time.time()
        delivery = deliver(world, log_group, role, now)
        code, verify_json, _ = run_cli(cli, ["verify", *args, "--output", "json"])
        report["verify"] = json.loads(verify_json)
        report["verify_text"] = run_cli(cli, ["verify", *args])[1]
        report["delivery"] = delivery
        invocations = subscription_invocations(log_group, world["account"])
        processed = process(invocations, topic, fail_q)
        alerts = drain_queue(_client("sqs"), read_q)
        failures = drain_queue(_client("sqs"), fail_q)
        from setup import demo_canary      # issue 10: verify --canary end to end
        report["canary"] = demo_canary.run(world, log_group, role, topic, read_q, fail_q, TRAIL, cli)
        from setup.demo_topology import run_topology   # topology (ii), issue 14
        report["topology"] = run_topology(world, log_group, cli)
    from setup import routing_demo   # issue 12: where each alert went
    report["routing"] = routing_demo.run_isolated(invocations)
    totals = processed["totals"]
    lags = processed["lags"]
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a["rule"]["id"]] = by_rule.get(a["rule"]["id"], 0) + 1
    accounted = totals.get("records", 0) + totals.get("oversize", 0) + totals.get("malformed", 0)
    report["processing"] = {
        "invocations": len(invocations),
        "log_events_written": delivery["written"],
        "log_events_processed": totals.get("log_events", 0),
        "records": totals.get("records", 0),
        "oversize": totals.get("oversize", 0),
        "malformed": totals.get("malformed", 0),
        "control_messages": totals.get("control_messages", 0),
        "failure_queue_messages": len(failures),
        "lost_events": delivery["written"] - accounted,
        "delivery_lag_seconds": lag_summary(lags) or {"p50": None, "p95": None, "max": None,
                                                      "count": 0},
    }
    report["alerts"] = {"count": len(alerts), "by_rule": dict(sorted(by_rule.items())),
                        "expected_changes": sum(1 for a in alerts if a.get("expected_change")),
                        "example": next((a for a in alerts if a["kind"] == "rule_match"
                                         and not a["expected_change"]), None)}
    report["verify_exit_code"] = code
    report["seconds"] = round(time.monotonic() - started, 1)
    if output == "json":
        doc = {k: v for k, v in report.items() if k not in ("plan", "apply", "verify_text")}
        doc["plan_exit_code"], doc["apply_exit_code"] = report["plan"][0], report["apply"][0]
        print(json.dumps(doc, indent=2), file=out)
    else:
        print_report(report, out)
    return 0


def break_policy(world: dict[str, Any], log_group: str, role: str, policy_name: str) -> None:
    """Scenario: the role keeps a single-account policy although the trail is an org trail."""
    from setup.models import Target, Trail, stream_policy
    t = Trail(TRAIL, f"arn:aws:cloudtrail:{REGION}:{world['account']}:trail/{TRAIL}", REGION,
              world["account"], False, True)
    single = Target(trail=t, account=world["account"], log_group=log_group, role_name=role)
    _client("iam").put_role_policy(RoleName=role, PolicyName=policy_name,
                                   PolicyDocument=json.dumps(stream_policy(single)))


def print_report(r: dict[str, Any], out: TextIO) -> None:
    def section(title: str) -> None:
        print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), file=out)

    org = r["organization"]
    print(f"trailwatch demo ({r['scenario']}) on an embedded AWS at {r['endpoint']}", file=out)
    print(f"organization {org['id']}: management {org['management']}, members "
          f"{', '.join(org['members'])}", file=out)
    section("trailwatch plan --trail org-trail --cis-alarms")
    print(r["plan"][1].rstrip(), file=out)
    section("trailwatch apply --trail org-trail --cis-alarms --yes")
    print(r["apply"][2].rstrip(), file=out)   # progress, one line per step
    print(r["apply"][1].rstrip().split("\n\nApplied", 1)[-1].join(["Applied", ""]), file=out)
    section("CloudTrail delivery (simulated)")
    d = r["delivery"]
    print(f"log events written: {d['written']}", file=out)
    for denied in d["denied"]:
        print(f"NOT DELIVERED: {denied['events']} event(s) for {denied['stream']}: "
              f"{denied['error']}", file=out)
    section("trailwatch verify --trail org-trail (after delivery)")
    print(r["verify_text"].rstrip().split("\n\n", 1)[-1], file=out)
    section("event processor")
    p = r["processing"]
    lag = p["delivery_lag_seconds"]
    print(f"invocations {p['invocations']}  log events {p['log_events_processed']}/"
          f"{p['log_events_written']}  CloudTrail records {p['records']}", file=out)
    print(f"oversize {p['oversize']}  malformed {p['malformed']}  control messages "
          f"{p['control_messages']}  -> failure queue {p['failure_queue_messages']}  "
          f"lost {p['lost_events']}", file=out)
    print(f"delivery lag p50 {lag['p50']} s  p95 {lag['p95']} s  max {lag['max']} s "
          f"({lag['count']} records)", file=out)
    section("alerts read back from SNS -> SQS")
    a = r["alerts"]
    print(f"{a['count']} alert(s), {a['expected_changes']} marked expected_change "
          "(trailwatch's own UpdateTrail)", file=out)
    for rule, n in a["by_rule"].items():
        print(f"  {rule:<30} {n}", file=out)
    if a["example"]:
        print("\none alert in full:", file=out)
        print(json.dumps(a["example"], indent=2), file=out)
    if r.get("canary"):
        from setup import demo_canary
        demo_canary.print_section(r["canary"], out)
    if "topology" in r:   # issue 14
        from setup.demo_topology import print_topology
        section("topology (ii): management log group -> destination -> audit processor")
        print_topology(r["topology"], out)
    from setup import routing_demo   # issue 12
    routing_demo.print_section(r.get("routing"), out)
    print(f"\ndone in {r['seconds']} s", file=out)
