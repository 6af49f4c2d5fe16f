"""``trailwatch flow-logs verify``: is each flow log there, delivering, and admitted by its
destination? Read-only; each check is PASS / WARN / FAIL with a command that fixes it.

- ``flowlogs.exists``: a flow log to the destination for every resource asked.
- ``flowlogs.status``: DescribeFlowLogs ``FlowLogStatus`` ACTIVE and ``DeliverLogsStatus`` not
  FAILED, with ``DeliverLogsErrorMessage`` ("Access error", "Rate limited", ...).
- ``destination.policy``: S3: the bucket policy lets ``delivery.logs.amazonaws.com`` write
  ``AWSLogs/<account>/*`` under the prefix and read the bucket ACL in the request context the
  service sends, and every such grant carries ``aws:SourceAccount`` and ``aws:SourceArn``
  (confused deputy). CloudWatch Logs: the role trusts ``vpc-flow-logs.amazonaws.com`` in that
  context and may write the group.
- ``destination.kms`` (S3): no SSE-KMS, or a customer managed key whose policy admits delivery.
- ``delivery.recent``: files under the documented key layout (S3), or a log stream with recent
  events (CloudWatch Logs). Flow logs publish every 5 minutes (vpc-flow-logs-to-s3.md).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from setup.errors import SetupError, error_code
from setup.policy_eval import evaluate_role
from setup.verify.checks import FAIL, PASS, WARN, CheckResult, read_role_policies
from setup.wiring import flowlogs as fw
from setup.wiring import flowlogs_aws as fa

MAX_DELIVERY_AGE = dt.timedelta(minutes=30)
FIRST_DELIVERY = dt.timedelta(minutes=15)   # 5-minute files, up to 10-minute aggregation


def apply_command(target: fw.FlowTarget, resources: list[tuple[str, str]] | None = None) -> str:
    flag = {"VPC": "--vpc", "Subnet": "--subnet", "NetworkInterface": "--eni"}
    res = " ".join(f"{flag[k]} {i}" for k, i in (resources or list(target.resources)))
    return f"trailwatch flow-logs apply --region {target.region} {res} --to {target.destination.spec}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(t: Any) -> dt.datetime | None:
    if t is None:
        return None
    if isinstance(t, int | float):
        return dt.datetime.fromtimestamp(t / 1000, dt.UTC)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def run_flowlog_checks(clients: Any, target: fw.FlowTarget, *,
                       now: Callable[[], dt.datetime] = _now,
                       max_age: dt.timedelta = MAX_DELIVERY_AGE) -> list[CheckResult]:
    out: list[CheckResult] = []
    try:
        state = fa.read_state(clients, target)
    except SetupError as e:
        return [CheckResult("destination.readable", FAIL, e.message, e.remediation)]
    found = {fl["ResourceId"]: fl for fl in fw.flow_logs_for(state, target)}
    missing = [(k, i) for k, i in target.resources if i not in found]
    if missing:
        out.append(CheckResult("flowlogs.exists", FAIL,
                               f"no flow log to {target.destination.spec} for "
                               f"{', '.join(i for _, i in missing)}",
                               apply_command(target, missing)))
    else:
        out.append(CheckResult("flowlogs.exists", PASS,
                               f"{len(found)} flow log(s) to {target.destination.spec}",
                               details={"flow_logs": sorted(fl["FlowLogId"]
                                                            for fl in found.values())}))
    mine = [found[i] for _, i in target.resources if i in found]
    out.append(_status(mine, target))
    if target.destination.kind == "s3":
        out.append(_bucket_policy(state, target))
        out.append(_kms(state, target))
    else:
        # verify checks what is: the role the flow logs were created with
        used = {(fl.get("DeliverLogsPermissionArn") or "").rsplit("/", 1)[-1] for fl in mine}
        used.discard("")
        if len(used) == 1 and target.role not in used:
            target = replace(target, role_name=used.pop())
            state.role = fa.read_role(clients, target.role, target.region)
        out.append(_role(clients, state, target))
    out.append(_recent(clients, state, target, mine, now(), max_age))
    return out


def _status(mine: list[dict[str, Any]], target: fw.FlowTarget) -> CheckResult:
    if not mine:
        return CheckResult("flowlogs.status", WARN, "no flow log to check",
                           apply_command(target))
    bad, slow = [], []
    for fl in mine:
        err = fl.get("DeliverLogsErrorMessage")
        if fl.get("FlowLogStatus", "ACTIVE") != "ACTIVE" or fl.get("DeliverLogsStatus") == "FAILED":
            (slow if err == "Rate limited" else bad).append(
                f"{fl['FlowLogId']} ({fl['ResourceId']}): {fl.get('DeliverLogsStatus')}"
                + (f", {err}" if err else ""))
    versions = sorted({fw.record_version(fl.get("LogFormat")) for fl in mine})
    if bad:
        return CheckResult("flowlogs.status", FAIL, "delivery failing: " + "; ".join(bad),
                           "an Access error is the destination's policy or key: run "
                           f"`{apply_command(target)}` (it merges the statements; with SSE-KMS "
                           "add --kms-key-policy apply), then verify again")
    if slow:
        return CheckResult("flowlogs.status", WARN, "delivery rate limited: " + "; ".join(slow),
                           "too many flow log records for the destination; narrow the flow log "
                           "(--subnet/--eni) or raise the destination's limits")
    return CheckResult("flowlogs.status", PASS,
                       f"ACTIVE, delivery SUCCESS, record version {'/'.join(map(str, versions))}",
                       details={"record_versions": versions})


def _bucket_policy(state: fw.FlowState, target: fw.FlowTarget) -> CheckResult:
    missing = fw.bucket_admits_delivery(state.bucket_policy, target)
    if missing:
        doc = json.dumps(fw.s3_delivery_statements(target), indent=2)
        return CheckResult("destination.policy", FAIL,
                           f"the policy of bucket {target.destination.bucket} does not let "
                           f"{fw.DELIVERY_SERVICE} {'; '.join(missing)} (with aws:SourceAccount "
                           f"{target.account} and aws:SourceArn {target.source_arn})",
                           f"`{apply_command(target)}` merges these statements:\n{doc}")
    loose = fw.unconditioned_grants(state.bucket_policy)
    if loose:
        return CheckResult("destination.policy", WARN,
                           f"bucket {target.destination.bucket} admits delivery, but statement(s) "
                           f"{', '.join(loose)} grant {fw.DELIVERY_SERVICE} without "
                           "aws:SourceAccount/aws:SourceArn (confused deputy)",
                           "add both conditions to those statements (trailwatch's own "
                           "statements carry them; it never edits others')")
    return CheckResult("destination.policy", PASS,
                       f"bucket {target.destination.bucket} admits {fw.DELIVERY_SERVICE} for "
                       f"{target.object_arn}, with aws:SourceAccount and aws:SourceArn")


def _kms(state: fw.FlowState, target: fw.FlowTarget) -> CheckResult:
    if not (state.sse or "").startswith("aws:kms"):
        return CheckResult("destination.kms", PASS,
                           f"bucket encryption {state.sse or 'none'}: no key policy involved")
    if state.kms_manager == "AWS":
        return CheckResult("destination.kms", FAIL,
                           f"bucket {target.destination.bucket} uses the AWS managed key "
                           f"{state.kms_key}: log delivery cannot use it (an AWS managed key is "
                           "not supported for log delivery)",
                           "set the bucket's default encryption to a customer managed key or "
                           "SSE-S3")
    ctx = fw.delivery_context(target, with_acl=False)
    if state.kms_policy is not None and all(
            fw.admits(state.kms_policy, fw.DELIVERY_SERVICE, a, "*", ctx)
            for a in ("kms:GenerateDataKey", "kms:Decrypt")):
        return CheckResult("destination.kms", PASS,
                           f"the key policy of {state.kms_key} admits {fw.DELIVERY_SERVICE}")
    stmt = json.dumps(fw.kms_key_statement(target), indent=2)
    return CheckResult("destination.kms", FAIL,
                       f"the key policy of {state.kms_key} does not let {fw.DELIVERY_SERVICE} "
                       "use the key", f"`{apply_command(target)} --kms-key-policy apply`, or add "
                       f"to the KEY policy:\n{stmt}")


def _role(clients: Any, state: fw.FlowState, target: fw.FlowTarget) -> CheckResult:
    role = state.role
    if role is None:
        return CheckResult("destination.policy", FAIL, f"role {target.role} does not exist",
                           apply_command(target))
    ctx = {"aws:SourceAccount": target.account,
           "aws:SourceArn": f"arn:{target.partition}:ec2:{target.region}:{target.account}:"
                            "vpc-flow-log/fl-0"}
    if not fw.admits(role.trust, fw.FLOW_LOGS_SERVICE, "sts:AssumeRole", "*", ctx):
        return CheckResult("destination.policy", FAIL,
                           f"role {role.name} does not let {fw.FLOW_LOGS_SERVICE} assume it",
                           apply_command(target))
    stream = f"{target.log_group_arn}:log-stream:eni-0-all"
    # what IAM evaluates: inline and attached managed policies, and the permissions boundary
    pols = read_role_policies(clients, role, target.region)
    denied = [a for a in ("logs:CreateLogStream", "logs:PutLogEvents")
              if not evaluate_role(pols.identity, a, stream, pols.boundary).allowed]
    if denied:
        return CheckResult("destination.policy", FAIL,
                           f"role {role.name} may not {', '.join(denied)} on "
                           f"{target.destination.log_group}", apply_command(target))
    return CheckResult("destination.policy", PASS,
                       f"role {role.name} trusts {fw.FLOW_LOGS_SERVICE} (with aws:SourceAccount/"
                       f"aws:SourceArn) and may write {target.destination.log_group}")


def _recent(clients: Any, state: fw.FlowState, target: fw.FlowTarget,
            mine: list[dict[str, Any]], now: dt.datetime, max_age: dt.timedelta) -> CheckResult:
    if not mine:
        return CheckResult("delivery.recent", WARN, "no flow log to check",
                           apply_command(target))
    try:
        latest, where = (_latest_object(clients, state, target, now)
                         if target.destination.kind == "s3" else _latest_event(clients, target))
    except ClientError as e:
        return CheckResult("delivery.recent", WARN,
                           f"could not look for delivered logs ({error_code(e)})",
                           "allow s3:ListBucket / logs:DescribeLogStreams")
    created = min((_aware(fl.get("CreationTime")) or now) for fl in mine)
    if latest is not None and now - latest <= max_age:
        age = int((now - latest).total_seconds() // 60)
        return CheckResult("delivery.recent", PASS, f"last delivery {age} min ago ({where})",
                           details={"latest": latest.isoformat()})
    if latest is None and now - created < FIRST_DELIVERY:
        return CheckResult("delivery.recent", WARN,
                           f"nothing delivered yet under {where}; the flow log is "
                           f"{int((now - created).total_seconds() // 60)} min old and files are "
                           "published every 5 minutes",
                           "run `trailwatch flow-logs verify` again in a few minutes")
    seen = f"last delivery {latest.isoformat()}" if latest else "nothing delivered"
    return CheckResult("delivery.recent", FAIL,
                       f"{seen} under {where} (older than {int(max_age.total_seconds() // 60)} "
                       "min)", "see flowlogs.status and destination.policy above; a VPC without "
                       "traffic delivers nothing either")


def _latest_object(clients: Any, state: fw.FlowState, target: fw.FlowTarget,
                   now: dt.datetime) -> tuple[dt.datetime | None, str]:
    s3 = clients.client("s3", state.bucket_region or target.region)
    latest = None
    for day in (now, now - dt.timedelta(days=1)):
        path = (f"year={day:%Y}/month={day:%m}/day={day:%d}/" if target.hive
                else f"{day:%Y}/{day:%m}/{day:%d}/")
        prefix = target.key_prefix + path
        for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=target.destination.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                t = _aware(obj["LastModified"])
                if latest is None or t > latest:
                    latest = t
        if latest is not None:
            break
    return latest, f"s3://{target.destination.bucket}/{target.key_prefix}"


def _latest_event(clients: Any, target: fw.FlowTarget) -> tuple[dt.datetime | None, str]:
    logs = clients.client("logs", target.region)
    streams = logs.describe_log_streams(logGroupName=target.destination.log_group,
                                        orderBy="LastEventTime", descending=True,
                                        limit=5).get("logStreams", [])
    times = [_aware(s.get("lastIngestionTime") or s.get("lastEventTimestamp"))
             for s in streams]
    times = [t for t in times if t is not None]
    return (max(times) if times else None), f"log group {target.destination.log_group}"
