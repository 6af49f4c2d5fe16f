"""The demo's world: an embedded moto server, an organization with two members, a CloudTrail
bucket and an organization trail; shared helpers (clients on the embedded server, running the CLI
through the function it hands in, draining an SQS queue).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

REGION = "us-east-1"
TRAIL = "org-trail"
BUCKET = "trailwatch-demo-cloudtrail"


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


def client(service: str) -> Any:
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
    org = client("organizations")
    o = org.create_organization(FeatureSet="ALL")["Organization"]
    members = []
    for name in ("workloads-prod", "workloads-dev"):
        status = org.create_account(Email=f"{name}@example.com", AccountName=name)
        members.append(status["CreateAccountStatus"]["AccountId"])
    account = client("sts").get_caller_identity()["Account"]
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(bucket_policy(account, o["Id"])))
    ct = client("cloudtrail")
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
