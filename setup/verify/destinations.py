"""Where each subscription filter of the trail's log group sends its events, checked for real.

Used by ``verify``'s ``subscription.filters`` check. Per filter, by destination:

- **same-account Lambda**: the function's resource policy lets ``logs.<region>.amazonaws.com``
  invoke it for this log group;
- **same-account Kinesis or Firehose** (and a CloudWatch Logs destination in this account): the
  role CloudWatch Logs assumes trusts the logs service and its policies (inline and attached,
  evaluated locally with :mod:`setup.policy_eval`) allow ``PutRecord`` on that exact stream, and
  ``kms:GenerateDataKey`` on its key when the stream is KMS-encrypted;
- **another account's destination**: the filter exists and CloudWatch Logs reports no
  ``DeliveryErrors`` for it over the last 24 hours; the destination's access policy, role, stream
  and consumer live in the other account and cannot be checked from here (the result says so).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from setup.errors import error_code
from setup.policy_eval import as_list, evaluate, matches_any
from setup.wiring.models import Target

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
PUT_ACTIONS = {"kinesis": ("kinesis:PutRecord",),
               "firehose": ("firehose:PutRecord", "firehose:PutRecordBatch")}
DELIVERY_WINDOW = dt.timedelta(hours=24)


@dataclass
class Finding:
    status: str
    message: str
    remediation: str = ""


def _doc(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(unquote(value))
    return value


def lambda_allows_logs(policy: dict[str, Any], target: Target) -> bool:
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


def role_documents(clients: Any, role_arn: str, region: str) -> tuple[dict | None, list[Any]]:
    """(trust policy, identity policies: inline + attached managed default versions)."""
    iam = clients.client("iam", region)
    name = role_arn.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as e:
        if error_code(e) == "NoSuchEntity":
            return None, []
        raise
    docs = [_doc(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
            for p in iam.list_role_policies(RoleName=name)["PolicyNames"]]
    for att in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        pol = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]
        docs.append(_doc(iam.get_policy_version(
            PolicyArn=att["PolicyArn"], VersionId=pol["DefaultVersionId"])[
            "PolicyVersion"]["Document"]))
    return _doc(role["AssumeRolePolicyDocument"]), docs


def _stream_key(clients: Any, arn: str, region: str) -> str | None:
    """The KMS key of a KMS-encrypted Kinesis stream (None when not encrypted/unknown)."""
    try:
        s = clients.client("kinesis", region).describe_stream_summary(StreamARN=arn)[
            "StreamDescriptionSummary"]
    except ClientError:
        return None
    return s.get("KeyId") if s.get("EncryptionType") == "KMS" else None


def check_role_can_put(clients: Any, target: Target, role_arn: str | None,
                       dest_arn: str) -> Finding:
    """Same-account Kinesis/Firehose: may CloudWatch Logs, through ``role_arn``, put records?"""
    service = dest_arn.split(":")[2]
    if not role_arn:
        return Finding(FAIL, f"{dest_arn}: no role for CloudWatch Logs to assume",
                       "re-create the filter with --role-arn (a role logs can assume)")
    trust, docs = role_documents(clients, role_arn, target.region)
    if trust is None:
        return Finding(FAIL, f"role {role_arn} does not exist", "create the role or fix the filter")
    svc = f"logs.{target.region}.amazonaws.com"
    t = evaluate([trust], "sts:AssumeRole", None, svc)
    t_global = evaluate([trust], "sts:AssumeRole", None, "logs.amazonaws.com")
    if not (t.allowed or t.conditional or t_global.allowed or t_global.conditional):
        return Finding(FAIL, f"role {role_arn} does not trust CloudWatch Logs",
                       "trust logs.amazonaws.com with an aws:SourceArn condition on this "
                       "account's log groups")
    missing = [a for a in PUT_ACTIONS[service] if not evaluate(docs, a, dest_arn).allowed]
    if missing:
        return Finding(FAIL, f"role {role_arn} may not {', '.join(missing)} on {dest_arn}",
                       f"allow {', '.join(PUT_ACTIONS[service])} on {dest_arn} in its policy")
    key = _stream_key(clients, dest_arn, target.region) if service == "kinesis" else None
    if key and key.startswith("arn:") and \
            not evaluate(docs, "kms:GenerateDataKey", key).allowed:
        return Finding(FAIL, f"{dest_arn} is encrypted with {key} and role {role_arn} may not "
                       "kms:GenerateDataKey on it", f"allow kms:GenerateDataKey on {key}")
    note = " (trust has conditions, not evaluated)" if not (t.allowed or t_global.allowed) else ""
    return Finding(PASS, f"role {role_arn.rsplit('/', 1)[-1]} can {PUT_ACTIONS[service][0]} on "
                   f"{dest_arn}{note}")


def delivery_errors(clients: Any, target: Target, filter_name: str,
                    now: dt.datetime) -> float:
    """Sum of AWS/Logs DeliveryErrors for this filter over the last 24 h (0 without data)."""
    cw = clients.client("cloudwatch", target.region)
    dims = [{"Name": "LogGroupName", "Value": target.log_group},
            {"Name": "FilterName", "Value": filter_name}]
    total = 0.0
    for metric in cw.list_metrics(Namespace="AWS/Logs", MetricName="DeliveryErrors",
                                  Dimensions=dims).get("Metrics", []):
        points = cw.get_metric_statistics(
            Namespace="AWS/Logs", MetricName="DeliveryErrors", Dimensions=metric["Dimensions"],
            StartTime=now - DELIVERY_WINDOW, EndTime=now, Period=3600,
            Statistics=["Sum"]).get("Datapoints", [])
        total += sum(p.get("Sum", 0) for p in points)
    return total


def check_filter(clients: Any, target: Target, f: dict[str, Any], now: dt.datetime) -> Finding:
    dest = f.get("destinationArn", "")
    name = f.get("filterName", "")
    parts = dest.split(":")
    service = parts[2] if len(parts) > 5 else ""
    account = parts[4] if len(parts) > 5 else ""
    same = account == target.account
    if service == "lambda":
        if not same:
            return Finding(FAIL, f"{name} -> {dest}: Lambda is not a cross-account target",
                           "use a CloudWatch Logs destination (template SourceMode=destination)")
        lam = clients.client("lambda", target.region)
        try:
            policy = json.loads(lam.get_policy(FunctionName=dest)["Policy"])
        except ClientError as e:
            return Finding(FAIL, f"{name} -> {dest}: {error_code(e)}",
                           "check that the function exists and has a resource policy")
        if not lambda_allows_logs(policy, target):
            return Finding(FAIL, f"{name} -> {dest}: the function's resource policy does not "
                           f"allow logs.{target.region}.amazonaws.com for this log group",
                           "aws lambda add-permission --principal "
                           f"logs.{target.region}.amazonaws.com --source-arn "
                           f"{target.log_group_arn}")
        return Finding(PASS, f"{name} -> Lambda {dest.split(':')[6]} (may invoke)")
    if service in PUT_ACTIONS:
        if not same:
            return Finding(FAIL, f"{name} -> {dest}: {service} in another account is not a "
                           "subscription target", "put a CloudWatch Logs destination in front "
                           "of it")
        r = check_role_can_put(clients, target, f.get("roleArn"), dest)
        return Finding(r.status, f"{name} -> {r.message}", r.remediation)
    if service == "logs" and ":destination:" in dest:
        if same:
            logs = clients.client("logs", target.region)
            dname = dest.split(":destination:", 1)[1]
            found = [d for d in logs.describe_destinations(DestinationNamePrefix=dname).get(
                "destinations", []) if d.get("destinationName") == dname]
            if not found:
                return Finding(FAIL, f"{name} -> {dest}: the destination does not exist",
                               "re-deploy the stack that owns it, or subscribe to an existing one")
            d = found[0]
            r = check_role_can_put(clients, target, d.get("roleArn"), d.get("targetArn", ""))
            return Finding(r.status, f"{name} -> destination {dname}: {r.message}",
                           r.remediation)
        errors = delivery_errors(clients, target, name, now)
        if errors:
            return Finding(FAIL, f"{name} -> {dest}: {errors:.0f} delivery error(s) in the last "
                           "24 h (CloudWatch Logs metric DeliveryErrors)",
                           f"in account {account}: check the destination's access policy admits "
                           f"{target.account} (or its organization), its role's trust and "
                           "kinesis:PutRecord/kms permissions, and that the stream exists")
        return Finding(PASS, f"{name} -> destination in account {account}: filter in place, no "
                       "delivery errors in 24 h; its access policy, role, stream and processor "
                       f"are in {account} and cannot be checked from here (run verify there; "
                       "watch the stack's IteratorAge and heartbeat alarms)")
    return Finding(WARN, f"{name} -> {dest}: unrecognised destination", "")
