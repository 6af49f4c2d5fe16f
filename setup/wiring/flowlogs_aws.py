"""The AWS side of ``trailwatch flow-logs``: read what exists, and run a plan's steps.

:func:`read_state` is the only reader (DescribeFlowLogs, the bucket's Region, policy, tags,
encryption and key policy; the log group and the role); :class:`FlowExecutor` is the trail
wiring's executor with one addition for CreateFlowLogs.
"""

from __future__ import annotations

import json
from typing import Any

from setup.errors import SetupError
from setup.wiring.executor import Executor
from setup.wiring.flowlogs_model import (
    FlowState,
    FlowTarget,
    s3_delivery_statements,
)
from setup.wiring.planner import Step
from setup.wiring.state import read_role


def _code(e: Exception) -> str:
    from botocore.exceptions import ClientError
    return e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else ""


def _doc(value: Any) -> Any:
    from urllib.parse import unquote
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return json.loads(unquote(value))
    return value


def read_flow_logs(clients: Any, region: str) -> list[dict[str, Any]]:
    ec2 = clients.client("ec2", region)
    out: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_flow_logs").paginate():
        out += page.get("FlowLogs", [])
    return out


def all_vpcs(clients: Any, region: str) -> list[str]:
    ec2 = clients.client("ec2", region)
    return [v["VpcId"] for page in ec2.get_paginator("describe_vpcs").paginate()
            for v in page.get("Vpcs", [])]


def read_bucket(clients: Any, target: FlowTarget, state: FlowState) -> None:
    from botocore.exceptions import ClientError
    bucket = target.destination.bucket
    s3 = clients.client("s3", target.region)
    try:
        loc = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except ClientError as e:
        if _code(e) in ("NoSuchBucket", "404"):
            raise SetupError(f"bucket {bucket} does not exist: flow logs publish to an existing "
                             "bucket (vpc-flow-logs-to-s3.md)",
                             f"create it first (aws s3api create-bucket --bucket {bucket}), then "
                             "re-run", code="NoSuchBucket") from None
        if _code(e) in ("AccessDenied", "AllAccessDisabled"):
            raise _not_bucket_owner(target) from None
        raise
    state.bucket_region = "eu-west-1" if loc == "EU" else loc
    s3 = clients.client("s3", state.bucket_region)
    try:
        state.bucket_policy = _doc(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as e:
        if _code(e) == "NoSuchBucketPolicy":
            state.bucket_policy = None
        elif _code(e) in ("AccessDenied", "AccessDeniedException"):
            raise _not_bucket_owner(target) from None
        else:
            raise
    try:
        state.bucket_tags = {t["Key"]: t["Value"] for t in
                             s3.get_bucket_tagging(Bucket=bucket).get("TagSet", [])}
    except ClientError as e:
        if _code(e) not in ("NoSuchTagSet", "NoSuchTagSetError", "AccessDenied"):
            raise
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"]
        default = (rules[0] if rules else {}).get("ApplyServerSideEncryptionByDefault", {})
        state.sse = default.get("SSEAlgorithm")
        key = default.get("KMSMasterKeyID")
    except ClientError as e:
        if _code(e) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        key = None
    if state.sse and state.sse.startswith("aws:kms"):
        kms = clients.client("kms", state.bucket_region)
        meta = kms.describe_key(KeyId=key or "alias/aws/s3")["KeyMetadata"]
        state.kms_key, state.kms_manager = meta["Arn"], meta.get("KeyManager")
        if state.kms_manager != "AWS":
            try:
                state.kms_policy = _doc(kms.get_key_policy(KeyId=meta["Arn"],
                                                           PolicyName="default")["Policy"])
            except ClientError as e:
                if _code(e) not in ("AccessDeniedException",):
                    raise


def _not_bucket_owner(target: FlowTarget) -> SetupError:
    doc = json.dumps({"Version": "2012-10-17", "Statement": s3_delivery_statements(target)},
                     indent=2)
    return SetupError(
        f"cannot read the policy of bucket {target.destination.bucket} (not the bucket owner, or "
        "no s3:GetBucketPolicy): flow log creation would fail (vpc-flow-logs-to-s3.md)",
        "ask the bucket owner to merge these statements into its bucket policy, then re-run:\n"
        + doc, code="BucketNotOwned")


def read_log_group(clients: Any, target: FlowTarget, state: FlowState) -> None:
    logs = clients.client("logs", target.region)
    name = target.destination.log_group
    for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name):
        for g in page.get("logGroups", []):
            if g["logGroupName"] == name:
                tags = logs.list_tags_for_resource(resourceArn=target.log_group_arn).get(
                    "tags", {})
                state.log_group = {"name": name, "retention": g.get("retentionInDays"),
                                   "kms": g.get("kmsKeyId"), "tags": tags,
                                   "class": g.get("logGroupClass", "STANDARD")}
                return


def read_state(clients: Any, target: FlowTarget, removing: bool = False) -> FlowState:
    """Everything the plan needs. ``removing``: a bucket that is gone does not stop the removal
    of the flow logs that pointed at it."""
    state = FlowState(flow_logs=read_flow_logs(clients, target.region))
    if target.destination.kind == "s3":
        try:
            read_bucket(clients, target, state)
        except SetupError as e:
            if not (removing and e.code == "NoSuchBucket"):
                raise
            state.bucket_missing = True
    else:
        read_log_group(clients, target, state)
        state.role = read_role(clients, target.role, target.region)
        if target.log_group_kms_key:
            kms = clients.client("kms", target.region)
            state.log_group_kms_policy = _doc(kms.get_key_policy(
                KeyId=target.log_group_kms_key, PolicyName="default")["Policy"])
    return state


class FlowExecutor(Executor):
    """The trail wiring's executor, plus: CreateFlowLogs reports failures per resource in
    ``Unsuccessful`` (HTTP 200), which is a failed step here."""

    def _call(self, step: Step) -> Any:
        resp = super()._call(step)
        bad = (resp or {}).get("Unsuccessful") if step.operation == "CreateFlowLogs" else None
        if bad:
            from botocore.exceptions import ClientError
            err = bad[0].get("Error", {})
            raise ClientError({"Error": {"Code": str(err.get("Code") or "Unsuccessful"),
                                         "Message": f"{bad[0].get('ResourceId')}: "
                                                    f"{err.get('Message', '')}"}},
                              "CreateFlowLogs")
        return resp


def read_resource_policies(clients: Any, region: str) -> dict[str, Any]:
    """The Region's CloudWatch Logs resource policies, by name (paginated)."""
    logs = clients.client("logs", region)
    out: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    while True:
        page = logs.describe_resource_policies(**kw)
        for p in page.get("resourcePolicies", []):
            out[p["policyName"]] = _doc(p.get("policyDocument") or "{}")
        if not page.get("nextToken"):
            return out
        kw["nextToken"] = page["nextToken"]
