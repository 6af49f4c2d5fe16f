"""The demo's topology (ii): the organization trail's log group in the management account, the
processor in an audit account, events crossing through a CloudWatch Logs destination and Kinesis.

On the local AWS (moto), run after the management account's ``apply`` and simulated delivery:

1. Create the audit account in the organization and act in it through STS (its own credentials).
2. Create there what ``template.yaml`` creates with ``SourceMode=destination``: the KMS key, the
   on-demand KMS-encrypted stream, the role CloudWatch Logs assumes (the same trust and policy
   documents, see :func:`destination_role_trust`), the destination and its access policy admitting
   the organization (``aws:PrincipalOrgID``), and the processor's alert topic and queues.
3. In the management account: ``trailwatch subscribe --trail org-trail --destination ARN --yes``.
4. **The hop moto cannot do**: moto stores the subscription filter but never forwards log events
   to a destination. The demo does that hop itself, as CloudWatch Logs would: it checks the
   destination role's trust for the log group's ARN, assumes the role, and puts one gzip'd
   subscription payload per log stream and batch into the stream with the role's credentials.
5. The processor reads the stream in the audit account (the event source mapping's Kinesis event)
   and publishes alerts to the audit account's topic; they are read back from its SQS inbox.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from setup.demo.cloudtrail import log_batches
from setup.demo.localaws import strict_destinations
from setup.demo.world import TRAIL, CountingMetrics, QuietLog, drain_queue, run_cli
from setup.policy_eval import as_list, evaluate, matches_any
from setup.wiring.subscription import filter_name

REGION = "us-east-1"
STACK = "trailwatch-audit"


# ----------------------------------------------------------------------------------- documents
# The same documents template.yaml builds for SourceMode=destination (tests/test_demo_topology.py
# resolves the template and compares).

def destination_name(stack: str = STACK) -> str:
    return f"{stack}-trail-events"


def destination_role_trust(audit: str, sources: list[str], region: str = REGION,
                           partition: str = "aws", org_id: str | None = None) -> dict[str, Any]:
    """The trust template.yaml gives the role CloudWatch Logs assumes to put into the stream.

    Accounts (AWS CloudWatch Logs User Guide, "Step 1: Create a destination"): logs.amazonaws.com
    with ``aws:SourceArn`` on the sending accounts' log groups and this (recipient) account's, which
    CloudWatch Logs uses for the test message it sends when the destination is created.

    Organization (``org_id``): the senders are every account of the organization, which no
    account list names. The guide documents ``aws:SourceArn`` for this role and no organization
    form of it; ``aws:SourceOrgID`` appears on its "Confused deputy prevention" page among the
    recommended keys, but no page shows CloudWatch Logs supplying it when it assumes a destination
    role. So: ``aws:SourceArn`` any account's log group in this partition and Region (the
    destination's access policy, ``aws:PrincipalOrgID``, decides who may subscribe), narrowed by
    ``aws:SourceOrgID`` only when the request carries it (``StringEqualsIfExists``), so delivery
    never depends on a key that is not confirmed."""
    if org_id:
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "ArnLike": {"aws:SourceArn": f"arn:{partition}:logs:{region}:*:*"},
                "StringEqualsIfExists": {"aws:SourceOrgID": org_id}}}]}
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "ArnLike": {"aws:SourceArn": f"arn:{partition}:logs:{region}:*"},
            "StringLike": {"aws:SourceArn": [f"arn:*:logs:*:{a}:*" for a in [audit, *sources]]}}}]}


def destination_role_policy(stream_arn: str, key_arn: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kinesis:PutRecord", "kinesis:PutRecords"],
         "Resource": stream_arn},
        {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": key_arn}]}


def destination_access_policy(destination_arn: str, org_id: str | None = None,
                              accounts: list[str] | None = None) -> dict[str, Any]:
    if org_id:
        return {"Version": "2012-10-17", "Statement": [{
            "Sid": "OrganizationSubscribes", "Effect": "Allow", "Principal": "*",
            "Action": "logs:PutSubscriptionFilter", "Resource": destination_arn,
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": org_id}}}]}
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "AccountsSubscribe", "Effect": "Allow", "Principal": {"AWS": list(accounts or [])},
        "Action": "logs:PutSubscriptionFilter", "Resource": destination_arn}]}


def trust_admits(trust: dict[str, Any], source_arn: str,
                 source_org: str | None = None) -> bool:
    """Would CloudWatch Logs, acting for ``source_arn`` (and, when it supplies one, an
    ``aws:SourceOrgID`` of ``source_org``), be let in by this trust policy? (Evaluates the
    ArnLike/StringLike aws:SourceArn and StringEquals[IfExists] aws:SourceOrgID conditions the
    template uses; any other condition refuses.)"""
    context = {"aws:sourcearn": source_arn, "aws:sourceorgid": source_org}
    for st in trust.get("Statement", []):
        if st.get("Effect") != "Allow" or "logs.amazonaws.com" not in as_list(
                (st.get("Principal") or {}).get("Service")):
            continue
        ok = True
        for op, block in (st.get("Condition") or {}).items():
            for key, values in block.items():
                actual = context.get(key.lower(), "")
                if key.lower() == "aws:sourcearn" and op in ("ArnLike", "StringLike"):
                    ok = ok and matches_any(as_list(values), source_arn)
                elif key.lower() == "aws:sourceorgid" and op in ("StringEquals",
                                                                 "StringEqualsIfExists"):
                    if actual is None:
                        ok = ok and op.endswith("IfExists")
                    else:
                        ok = ok and actual in as_list(values)
                else:
                    ok = False          # a condition this helper does not evaluate: refuse
        if ok:
            return True
    return False


# ----------------------------------------------------------------------------------- accounts

def _session(creds: dict[str, str]) -> Any:
    import boto3
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=REGION)


def assume(role_arn: str, session: Any = None) -> tuple[Any, dict[str, str]]:
    import boto3
    sts = (session or boto3).client("sts", region_name=REGION)
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="trailwatch-demo")["Credentials"]
    return _session(creds), creds


def create_audit_side(audit: Any, audit_account: str, management: str,
                      org_id: str) -> dict[str, Any]:
    """What `sam deploy` of template.yaml (SourceMode=destination) creates in the audit account."""
    kms, kinesis, iam, logs = (audit.client(s) for s in ("kms", "kinesis", "iam", "logs"))
    key = kms.create_key(Description="trailwatch trail-event stream encryption")["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    name = destination_name()
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=key["Arn"])
    stream = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    role_name = f"{STACK}-DestinationRole"
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(
        destination_role_trust(audit_account, [management], org_id=org_id)))["Role"]
    iam.put_role_policy(RoleName=role_name, PolicyName="put-trail-events",
                        PolicyDocument=json.dumps(destination_role_policy(stream["StreamARN"],
                                                                          key["Arn"])))
    dest = logs.put_destination(destinationName=name, targetArn=stream["StreamARN"],
                                roleArn=role["Arn"])["destination"]
    logs.put_destination_policy(destinationName=name, accessPolicy=json.dumps(
        destination_access_policy(dest["arn"], org_id=org_id)))
    sns, sqs = audit.client("sns"), audit.client("sqs")
    topic = sns.create_topic(Name=f"{STACK}-alerts")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"{STACK}-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn,
                  Attributes={"RawMessageDelivery": "true"})
    failures = sqs.create_queue(QueueName=f"{STACK}-unprocessable")["QueueUrl"]
    return {"key": key["Arn"], "stream": stream["StreamARN"], "role": role["Arn"],
            "destination": dest["arn"], "topic": topic, "inbox": inbox, "failures": failures,
            "stream_encryption": stream.get("EncryptionType"),
            "stream_mode": stream.get("StreamModeDetails", {}).get("StreamMode")}


# ----------------------------------------------------------------------------------- the hop

def forward_to_destination(log_group: str, management: str, filter_name: str,
                           side: dict[str, Any]) -> dict[str, Any]:
    """Play CloudWatch Logs: deliver the group's events through the destination to the stream."""
    import boto3

    logs = boto3.client("logs", region_name=REGION)
    source_arn = f"arn:aws:logs:{REGION}:{management}:log-group:{log_group}"
    audit_iam = side["session"].client("iam")
    role_name = side["role"].rsplit("/", 1)[1]
    trust = audit_iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    policy = audit_iam.get_role_policy(RoleName=role_name,
                                       PolicyName="put-trail-events")["PolicyDocument"]
    if not trust_admits(trust, source_arn):
        return {"records": 0, "log_events": 0, "error": "the destination role does not trust "
                f"CloudWatch Logs for {source_arn}"}
    for action, resource in (("kinesis:PutRecord", side["stream"]),
                             ("kms:GenerateDataKey", side["key"])):
        if not evaluate([policy], action, resource).allowed:
            return {"records": 0, "log_events": 0,
                    "error": f"AccessDenied: the destination role may not {action}"}
    role_session, _ = assume(side["role"], side["session"])
    kinesis = role_session.client("kinesis")
    records = events_sent = 0
    for name, start, chunk in log_batches(logs, log_group):
        payload = {"messageType": "DATA_MESSAGE", "owner": management,
                   "logGroup": log_group, "logStream": name,
                   "subscriptionFilters": [filter_name],
                   "logEvents": [{"id": f"{e['timestamp']:020d}{start + i:036d}",
                                  "timestamp": e["timestamp"], "message": e["message"]}
                                 for i, e in enumerate(chunk)]}
        kinesis.put_record(StreamARN=side["stream"], PartitionKey=name,
                           Data=gzip.compress(json.dumps(payload).encode()))
        records += 1
        events_sent += len(chunk)
    return {"records": records, "log_events": events_sent, "error": ""}


def read_stream_as_lambda_events(side: dict[str, Any]) -> list[dict[str, Any]]:
    """The event source mapping's view: batches of Kinesis records (base64 data)."""
    kinesis = side["session"].client("kinesis")
    out = []
    for shard in kinesis.list_shards(StreamARN=side["stream"])["Shards"]:
        it = kinesis.get_shard_iterator(StreamARN=side["stream"], ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=100, StreamARN=side["stream"])
            if not page["Records"]:
                break
            out.append({"Records": [{
                "eventSource": "aws:kinesis", "eventSourceARN": side["stream"],
                "awsRegion": REGION, "eventName": "aws:kinesis:record",
                "kinesis": {"partitionKey": r["PartitionKey"],
                            "sequenceNumber": r["SequenceNumber"],
                            "data": base64.b64encode(r["Data"]).decode()}}
                for r in page["Records"]]})
            it = page.get("NextShardIterator")
    return out


def process_in_audit(side: dict[str, Any]) -> dict[str, Any]:
    from handlers.processor import App
    events = read_stream_as_lambda_events(side)
    metrics = CountingMetrics()
    failed = 0
    # The processor's clients act in the audit account (as the Lambda's role would).
    app = App.from_env({"ALERT_TOPIC_ARN": side["topic"], "FAILURE_QUEUE_URL": side["failures"]},
                       client_factory=side["session"].client, metrics_sink=metrics,
                       log=QuietLog(), emit=lambda line: None)
    for event in events:
        failed += len(app.handle(event).get("batchItemFailures", []))
    alerts = drain_queue(side["session"].client("sqs"), side["inbox"])
    routed = drain_queue(side["session"].client("sqs"), side["failures"])

    def total(name: str) -> int:
        return int(sum(metrics.values.get(name, [])))

    return {"lambda_invocations": len(events),
            "kinesis_records": sum(len(e["Records"]) for e in events),
            "log_events": total("LogEvents"), "records": total("CloudTrailRecords"),
            "batch_item_failures": failed, "failure_queue_messages": len(routed),
            "alerts": len(alerts), "alert_rules": sorted({a["rule"]["id"] for a in alerts})}


# ----------------------------------------------------------------------------------- entry

def run_topology(world: dict[str, Any], log_group: str, cli: Any) -> dict[str, Any]:
    """Topology (ii) end to end; returns a report section (see print_topology)."""
    import boto3

    management = world["account"]
    org = boto3.client("organizations", region_name=REGION)
    audit_account = org.create_account(Email="audit@example.com", AccountName="audit")[
        "CreateAccountStatus"]["AccountId"]
    session, _ = assume(f"arn:aws:iam::{audit_account}:role/OrganizationAccountAccessRole")
    side = create_audit_side(session, audit_account, management, world["org_id"])
    side["session"] = session
    with strict_destinations():
        code, out, err = run_cli(cli, ["subscribe", "--trail", TRAIL, "--destination",
                                  side["destination"], "--yes"])
        verify = json.loads(run_cli(cli, ["verify", "--trail", TRAIL, "--output", "json"])[1])
    check = next(c for c in verify["checks"] if c["id"] == "subscription.filters")
    filters = boto3.client("logs", region_name=REGION).describe_subscription_filters(
        logGroupName=log_group)["subscriptionFilters"]
    hop = forward_to_destination(log_group, management, filter_name(TRAIL), side)
    processed = process_in_audit(side)
    return {"management": management, "audit": audit_account,
            "destination": side["destination"], "stream": side["stream"],
            "stream_mode": side["stream_mode"], "stream_encryption": side["stream_encryption"],
            "subscribe_exit_code": code, "subscribe_output": out + err,
            "filters": [{"name": f["filterName"], "destination": f["destinationArn"]}
                        for f in filters],
            "verify_subscription": check,
            "forwarded": hop, "processor": processed,
            "note": "moto keeps the subscription filter but does not forward log events to a "
                    "destination: the demo did that hop itself, with the destination role's "
                    "credentials, after checking its trust and policy as CloudWatch Logs would"}


def print_topology(t: dict[str, Any], out: Any) -> None:
    print(f"management {t['management']} (org trail's log group)  ->  audit {t['audit']} "
          "(processor)", file=out)
    print(f"destination {t['destination']}", file=out)
    print(f"  stream {t['stream']} ({t['stream_mode']}, {t['stream_encryption']})", file=out)
    print(f"trailwatch subscribe --trail org-trail --destination ... --yes: exit "
          f"{t['subscribe_exit_code']}", file=out)
    for f in t["filters"]:
        print(f"  filter {f['name']} -> {f['destination']}", file=out)
    v = t["verify_subscription"]
    print(f"trailwatch verify: {v['status']}  {v['id']}  {v['message']}", file=out)
    hop = t["forwarded"]
    if hop["error"]:
        print(f"NOT FORWARDED: {hop['error']}", file=out)
    print(f"forwarded {hop['log_events']} log events in {hop['records']} Kinesis records "
          f"({t['note']})", file=out)
    p = t["processor"]
    print(f"audit processor: {p['lambda_invocations']} invocation(s), {p['kinesis_records']} "
          f"records, {p['log_events']} log events, {p['records']} CloudTrail records, "
          f"{p['alerts']} alerts in the audit account, {p['batch_item_failures']} batch item "
          f"failures, {p['failure_queue_messages']} to the failure queue", file=out)
