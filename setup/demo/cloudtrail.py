"""Simulated CloudTrail: demo records, delivery into the log group (checked against the role's
trust and stream policy, as CloudTrail does), and the subscription payloads CloudWatch Logs
would send to the processor.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from setup.aws import USER_AGENT
from setup.demo.world import REGION, TRAIL, client
from setup.policy_eval import evaluate
from setup.wiring.state import _doc

# The demo's CloudTrail records ship with the package (an installed demo is the whole demo);
# they are the plain records of four scenarios in the repository's events/sources, and a test
# keeps the two equal (write_records() regenerates the file).
RECORDS = Path(__file__).resolve().parent / "data" / "records.json"
SCENARIOS = ("single-trail-cis", "org-trail-member", "delayed-delivery", "insights-event")
BATCH = 25


# ----------------------------------------------------------------------------------- records

def demo_records(world: dict[str, Any], now: float) -> dict[str, list[tuple[dict, float]]]:
    """Records per account, each with the delay CloudTrail takes to deliver it."""
    acct, members = world["account"], world["members"]
    out: dict[str, list[tuple[dict, float]]] = {acct: [], members[0]: [], members[1]: []}
    picked = [(item["record"], float(item["delay_seconds"]))
              for item in json.loads(RECORDS.read_text(encoding="utf-8"))]
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


def records_from_sources(sources: Path) -> list[dict[str, Any]]:
    """The plain records (no padding) of the demo's scenarios in ``sources`` (events/sources),
    each with the delay CloudTrail takes to deliver it."""
    picked = []
    for name in SCENARIOS:
        doc = json.loads((sources / f"{name}.json").read_text(encoding="utf-8"))
        for item in doc.get("envelope", {}).get("logEvents", []):
            if "record" in item and "pad_to_bytes" not in item:
                picked.append({"record": item["record"],
                               "delay_seconds": float(item.get("delay_seconds", 300))})
    return picked


def write_records(sources: Path) -> None:
    """Regenerate the shipped records from the repository's events/sources."""
    RECORDS.write_text(json.dumps(records_from_sources(sources), indent=1) + "\n",
                       encoding="utf-8")


def stream_name(world: dict[str, Any], account: str) -> str:
    if account == world["account"]:
        return f"{account}_CloudTrail_{REGION}"
    return f"{world['org_id']}_{account}_CloudTrail_{REGION}"


def may_deliver(role_name: str, stream_arn: str) -> tuple[bool, str]:
    """What CloudTrail would find out: can it assume the role and write this exact stream?"""
    iam = client("iam")
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
    logs = client("logs")
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
    logs = client("logs")
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
