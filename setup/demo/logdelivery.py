"""What the local AWS (moto) needs to behave like AWS for vended-log delivery (VPC flow logs).

moto 5 creates flow logs but none of what decides whether they deliver. :func:`strict_log_delivery`
makes it do what the documents say AWS does, each with its source:

- CreateFlowLogs to ``arn:aws:s3:::bucket/prefix/`` works (moto looks the whole
  ``bucket/prefix/`` up as a bucket name and refuses it); ``AWSLogs`` as a subfolder is refused:
  "The bucket cannot use AWSLogs as a subfolder name, as this is a reserved term"
  (vpc-flow-logs-to-s3.md).
- AWS's automatic policy attachment: when the caller owns the bucket and the bucket "does not have
  a policy with sufficient log delivery permissions, we automatically attach the preceding policy
  to the bucket. This policy overwrites any existing policy attached to the bucket"
  (vpc-flow-logs-to-s3.md). The attached policy is the page's, with no confused-deputy condition.
- ``DestinationOptions`` (file format, hive-compatible prefixes, per-hour partitions) are kept and
  returned by DescribeFlowLogs (moto drops them).
- Delivery: :func:`deliver` writes one log file per S3 flow log under the documented key layout
  ("Flow log files") only when the bucket policy admits ``delivery.logs.amazonaws.com`` with the
  request context the service sends, and the bucket's SSE-KMS key is a customer managed key whose
  policy admits it ("using an AWS managed key is not supported",
  log-delivery-permissions-and-confused-deputy.md); to CloudWatch Logs only when the role trusts
  ``vpc-flow-logs.amazonaws.com`` in that context and may write the group. Otherwise the flow
  log's ``DeliverLogsStatus`` becomes FAILED with ``DeliverLogsErrorMessage`` "Access error".
- PutBucketPolicy over 20 KB is refused ("Bucket policies are limited to 20 KB in size", S3 User
  Guide; the error code MalformedPolicy is inferred); CloudWatch Logs PutResourcePolicy over 5120
  characters is refused (log-delivery-permissions-and-confused-deputy.md).

Used by the tests and the demo (moto runs in-process, so patching its backends also covers the
ThreadedMotoServer).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from setup.wiring import flowlogs as fw

BUCKET_POLICY_LIMIT = 20 * 1024
RESOURCE_POLICY_CHARS = 5120
ACCESS_ERROR = "Access error"


def _s3_backend(account: str, partition: str = "aws") -> Any:
    from moto.s3.models import s3_backends
    return s3_backends[account][partition]


def _split(destination: str) -> tuple[str, str]:
    """``arn:aws:s3:::bucket/prefix/`` -> (bucket, prefix without slashes)."""
    rest = destination.split(":::", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _target_for(fl: Any, account: str, region: str) -> fw.FlowTarget:
    partition = "aws"
    if fl.log_destination_type == "s3":
        bucket, prefix = _split(fl.log_destination)
        dest = fw.Destination("s3", bucket=bucket, prefix=prefix)
        opts = getattr(fl, "destination_options", None) or {}
        return fw.FlowTarget(account, region, partition, (), dest,
                             hive=bool(opts.get("HiveCompatiblePartitions")),
                             per_hour=bool(opts.get("PerHourPartition")),
                             file_format=opts.get("FileFormat", "plain-text"))
    name = fl.log_group_name or (fl.log_destination or "").split(":log-group:", 1)[-1]
    return fw.FlowTarget(account, region, partition, (),
                         fw.Destination("log-group", log_group=name.removesuffix(":*")))


def documented_default_policy(bucket: str, prefix: str, account: str) -> dict[str, Any]:
    """The policy AWS attaches by itself (vpc-flow-logs-to-s3.md): no confused-deputy keys."""
    folder = f"{prefix}/" if prefix else ""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AWSLogDeliveryWrite", "Effect": "Allow",
         "Principal": {"Service": fw.DELIVERY_SERVICE}, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/{folder}AWSLogs/{account}/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}},
        {"Sid": "AWSLogDeliveryAclCheck", "Effect": "Allow",
         "Principal": {"Service": fw.DELIVERY_SERVICE}, "Action": "s3:GetBucketAcl",
         "Resource": f"arn:aws:s3:::{bucket}"}]}


def _bucket_policy(bucket: Any) -> Any:
    return json.loads(bucket.policy.decode()) if bucket.policy else None


def _kms_problem(bucket: Any, target: fw.FlowTarget) -> str | None:
    enc = (bucket.encryption or {}).get("Rule", {})
    rules = enc if isinstance(enc, list) else [enc]
    default = (rules[0] if rules else {}).get("ApplyServerSideEncryptionByDefault", {})
    if not str(default.get("SSEAlgorithm", "")).startswith("aws:kms"):
        return None
    key_id = default.get("KMSMasterKeyID")
    if not key_id:
        return "the AWS managed key aws/s3"
    from moto.kms.models import kms_backends
    kms = kms_backends[target.account][target.region]
    try:
        key = kms.describe_key(key_id)
    except Exception:       # noqa: BLE001 - an unknown key cannot encrypt either
        return f"key {key_id} does not exist"
    if getattr(key, "key_manager", "CUSTOMER") == "AWS":
        return f"the AWS managed key {key_id}"
    policy = json.loads(key.policy) if key.policy else None
    ctx = fw.delivery_context(target, with_acl=False)
    if not all(fw.admits(policy, fw.DELIVERY_SERVICE, a, "*", ctx)
               for a in ("kms:GenerateDataKey", "kms:Encrypt")):
        return f"the key policy of {key_id} does not admit {fw.DELIVERY_SERVICE}"
    return None


def s3_delivery_problem(fl: Any, account: str, region: str) -> str | None:
    """Why the log delivery service could not write this flow log's files now (None: it can)."""
    target = _target_for(fl, account, region)
    try:
        bucket = _s3_backend(account).get_bucket(target.destination.bucket)
    except Exception:       # noqa: BLE001
        return "the bucket does not exist"
    missing = fw.bucket_admits_delivery(_bucket_policy(bucket), target)
    if missing:
        return "the bucket policy does not admit " + "; ".join(missing)
    return _kms_problem(bucket, target)


def cwl_delivery_problem(fl: Any, account: str, region: str) -> str | None:
    from moto.iam.models import iam_backends
    from moto.logs.models import logs_backends
    target = _target_for(fl, account, region)
    if target.destination.log_group not in logs_backends[account][region].groups:
        return "the log group does not exist"
    role_name = (fl.deliver_logs_permission_arn or "").rsplit("/", 1)[-1]
    iam = iam_backends[account]["global"]
    role = next((r for r in iam.roles.values() if r.name == role_name), None)
    if role is None:
        return "the role does not exist"
    ctx = {"aws:SourceAccount": account,
           "aws:SourceArn": f"arn:aws:ec2:{region}:{account}:vpc-flow-log/{fl.id}"}
    if not fw.admits(json.loads(role.assume_role_policy_document), fw.FLOW_LOGS_SERVICE,
                     "sts:AssumeRole", "*", ctx):
        return f"role {role_name} does not trust {fw.FLOW_LOGS_SERVICE} in this context"
    docs = [json.loads(p) if isinstance(p, str) else p for p in role.policies.values()]
    stream = f"{target.log_group_arn}:log-stream:eni-00000000000000000-all"
    from setup.policy_eval import evaluate
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        if not evaluate(docs, action, stream).allowed:
            return f"role {role_name} may not {action} on {stream}"
    return None


def _set_status(fl: Any, problem: str | None) -> None:
    fl.deliver_logs_status = "FAILED" if problem else "SUCCESS"
    fl.deliver_logs_error_message = ACCESS_ERROR if problem else None
    fl.strict_problem = problem


def _key(target: fw.FlowTarget, fl_id: str, when: dt.datetime) -> str:
    if target.hive:
        path = f"year={when:%Y}/month={when:%m}/day={when:%d}/"
        if target.per_hour:
            path += f"hour={when:%H}/"
    else:
        path = f"{when:%Y}/{when:%m}/{when:%d}/" + (f"{when:%H}/" if target.per_hour else "")
    digest = hashlib.sha256(f"{fl_id}{when.isoformat()}".encode()).hexdigest()[:8]
    ext = "log.parquet" if target.file_format == "parquet" else "log.gz"
    return (f"{target.key_prefix}{path}{target.account}_vpcflowlogs_{target.region}_{fl_id}_"
            f"{when:%Y%m%dT%H%MZ}_{digest}.{ext}")


def _all_flow_logs() -> Iterator[tuple[str, str, Any]]:
    from moto.ec2.models import ec2_backends
    for account, per_region in ec2_backends.items():
        for region, backend in per_region.items():
            for fl in list(backend.flow_logs.values()):
                yield account, region, fl


def deliver(now: dt.datetime | None = None) -> dict[str, str | None]:
    """One delivery round: every flow log writes a file (or a log event), or FAILs with the
    reason. Returns {flow log id: problem or None}."""
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, str | None] = {}
    for account, region, fl in _all_flow_logs():
        if fl.log_destination_type == "s3":
            problem = s3_delivery_problem(fl, account, region)
            if problem is None:
                target = _target_for(fl, account, region)
                line = (f"2 {account} eni-00000000000000000 10.0.0.1 10.0.0.2 443 49152 6 10 840 "
                        f"{int(now.timestamp()) - 60} {int(now.timestamp())} ACCEPT OK\n")
                body = gzip.compress(("version account-id interface-id srcaddr dstaddr srcport "
                                      "dstport protocol packets bytes start end action log-status"
                                      "\n" + line).encode())
                _s3_backend(account).put_object(target.destination.bucket,
                                                _key(target, fl.id, now), body)
        else:
            problem = cwl_delivery_problem(fl, account, region)
            if problem is None:
                from moto.logs.models import logs_backends
                logs = logs_backends[account][region]
                target = _target_for(fl, account, region)
                group = logs.groups[target.destination.log_group]
                stream = "eni-00000000000000000-all"
                if stream not in group.streams:
                    logs.create_log_stream(target.destination.log_group, stream)
                logs.put_log_events(target.destination.log_group, stream,
                                    [{"timestamp": int(now.timestamp() * 1000),
                                      "message": f"2 {account} eni-00000000000000000 ACCEPT OK"}])
        _set_status(fl, problem)
        out[fl.id] = problem
    return out


class Recorder:
    """What the strict layer saw: each automatic attachment, with the policy it replaced."""

    def __init__(self) -> None:
        self.attachments: list[dict[str, Any]] = []


@contextlib.contextmanager
def strict_log_delivery() -> Iterator[Recorder]:
    from moto.ec2.models.flow_logs import FlowLogsBackend
    from moto.ec2.responses.flow_logs import FlowLogs as FlowLogsResponse
    from moto.logs.exceptions import InvalidParameterException
    from moto.logs.models import LogsBackend
    from moto.s3.exceptions import S3ClientError
    from moto.s3.models import S3Backend

    recorder = Recorder()
    orig_create = FlowLogsBackend.create_flow_logs
    orig_response = FlowLogsResponse.create_flow_logs
    orig_put_policy = S3Backend.put_bucket_policy
    orig_resource_policy = LogsBackend.put_resource_policy
    from moto.kms.models import KmsBackend
    orig_default_keys = KmsBackend._generate_default_keys

    def generate_default_keys(self: Any, alias_name: str) -> str | None:
        # AWS managed keys (alias/aws/*) have KeyManager AWS; moto says CUSTOMER.
        key_id = orig_default_keys(self, alias_name)
        if key_id:
            self.keys[key_id].key_manager = "AWS"
        return key_id

    def create_flow_logs(self: Any, resource_type: str, resource_ids: list[str],
                         traffic_type: str, deliver_logs_permission_arn: str,
                         log_destination_type: str, log_destination: str, log_group_name: str,
                         log_format: str, max_aggregation_interval: int) -> Any:
        if log_destination_type != "s3" or not log_destination:
            flows, errors = orig_create(self, resource_type, resource_ids, traffic_type,
                                        deliver_logs_permission_arn, log_destination_type,
                                        log_destination, log_group_name, log_format,
                                        max_aggregation_interval)
            for fl in flows:
                _set_status(fl, cwl_delivery_problem(fl, self.account_id, self.region_name))
            return flows, errors
        bucket, prefix = _split(log_destination)
        if "AWSLogs" in prefix.split("/"):
            from moto.ec2.exceptions import InvalidParameterValueError
            raise InvalidParameterValueError(
                f"LogDestination: {log_destination}: AWSLogs is a reserved term")
        normal = log_destination.rstrip("/")
        for fl in self.flow_logs.values():
            if fl.resource_id in resource_ids and (fl.log_destination or "").rstrip("/") == normal:
                from moto.ec2.exceptions import FlowLogAlreadyExists
                raise FlowLogAlreadyExists()
        flows, errors = orig_create(self, resource_type, resource_ids, traffic_type,
                                    deliver_logs_permission_arn, log_destination_type,
                                    f"arn:aws:s3:::{bucket}", log_group_name, log_format,
                                    max_aggregation_interval)
        s3 = _s3_backend(self.account_id)
        for fl in flows:
            fl.log_destination = log_destination
            target = _target_for(fl, self.account_id, self.region_name)
            b = s3.get_bucket(bucket)
            if fw.bucket_admits_delivery(_bucket_policy(b), target):
                # AWS's automatic attachment: the page's policy REPLACES whatever was there.
                recorder.attachments.append({"bucket": bucket, "flow_log": fl.id,
                                             "replaced": _bucket_policy(b)})
                orig_put_policy(s3, bucket, json.dumps(
                    documented_default_policy(bucket, prefix, self.account_id)).encode())
            _set_status(fl, s3_delivery_problem(fl, self.account_id, self.region_name))
        return flows, errors

    def create_response(self: Any) -> Any:
        before = set(self.ec2_backend.flow_logs)
        result = orig_response(self)
        options = self._get_param("DestinationOptions") or None
        for fid in set(self.ec2_backend.flow_logs) - before:
            fl = self.ec2_backend.flow_logs[fid]
            if fl.log_destination_type == "s3":
                opts = {"FileFormat": "plain-text", "HiveCompatiblePartitions": False,
                        "PerHourPartition": False}
                for k, v in (options or {}).items():
                    opts[k] = (str(v).lower() == "true") if k != "FileFormat" else v
                fl.destination_options = opts
        return result

    def put_bucket_policy(self: Any, bucket_name: str, policy: bytes) -> None:
        if len(policy) > BUCKET_POLICY_LIMIT:
            raise S3ClientError("MalformedPolicy", "Policy exceeds the maximum allowed document "
                                                   "size.")
        return orig_put_policy(self, bucket_name, policy)

    def put_resource_policy(self: Any, policy_name: str, policy_doc: str) -> Any:
        if len(policy_doc) > RESOURCE_POLICY_CHARS:
            raise InvalidParameterException(
                constraint=f"Member must have length less than or equal to "
                           f"{RESOURCE_POLICY_CHARS}", parameter="policyDocument",
                value="...")
        return orig_resource_policy(self, policy_name, policy_doc)

    FlowLogsBackend.create_flow_logs = create_flow_logs  # type: ignore[method-assign]
    FlowLogsResponse.create_flow_logs = create_response  # type: ignore[method-assign]
    S3Backend.put_bucket_policy = put_bucket_policy  # type: ignore[method-assign]
    LogsBackend.put_resource_policy = put_resource_policy  # type: ignore[method-assign]
    KmsBackend._generate_default_keys = generate_default_keys  # type: ignore[method-assign]
    try:
        yield recorder
    finally:
        FlowLogsBackend.create_flow_logs = orig_create  # type: ignore[method-assign]
        FlowLogsResponse.create_flow_logs = orig_response  # type: ignore[method-assign]
        S3Backend.put_bucket_policy = orig_put_policy  # type: ignore[method-assign]
        LogsBackend.put_resource_policy = orig_resource_policy  # type: ignore[method-assign]
        KmsBackend._generate_default_keys = orig_default_keys  # type: ignore[method-assign]
