"""The watchdog's readiness report in the template: ReadinessRegions reaches the watchdog as
READINESS_REGIONS, and with it set, the watchdog's role allows every call the report makes (the
calls are recorded from the real code on moto and each action is evaluated against the rendered
policies). Empty (the default): no variable value, no extra permission."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from setup.aws import AwsClients
from setup.policy_eval import evaluate
from setup.verify.readiness import resolve_regions, run_readiness
from tests.template.test_template_modes import REGION
from tests.template.test_template_seams import Rendered, cfn  # noqa: F401  (module-scoped)

# The S3 API's ListBuckets is authorised as s3:ListAllMyBuckets; every other call read here is
# authorised under its own name.
IAM_ACTION = {"s3:ListBuckets": "s3:ListAllMyBuckets"}
READINESS_SIDS = {"ReadinessListings", "ReadinessBucketLogging", "ReadinessWafLogging"}


def _watchdog(cfn, regions: str) -> tuple[dict[str, str], list[dict]]:
    e = Rendered(cfn, {"ReadinessRegions": regions})
    env = e.function_env("WatchdogFunction")
    role = e.value(cfn["Resources"]["WatchdogFunctionRole"]["Properties"])
    return env, [p["PolicyDocument"] for p in role["Policies"]]


def test_readiness_is_off_by_default(cfn):
    env, docs = _watchdog(cfn, "")
    assert env["READINESS_REGIONS"] == ""
    sids = {s.get("Sid") for d in docs for s in d["Statement"]}
    assert not READINESS_SIDS & sids


@pytest.mark.parametrize("value", ["us-east-1", "us-east-1,eu-west-1", "all"])
def test_the_parameter_accepts_what_the_watchdog_reads(cfn, value):
    import re
    assert re.fullmatch(cfn["Parameters"]["ReadinessRegions"]["AllowedPattern"], value)
    env, _ = _watchdog(cfn, value)
    assert env["READINESS_REGIONS"] == value


def test_the_watchdog_role_allows_every_call_readiness_makes(cfn):
    env, docs = _watchdog(cfn, REGION)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="logs-bucket")
        s3.create_bucket(Bucket="team-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="logs-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        ec2 = boto3.client("ec2", region_name=REGION)
        ec2.create_vpc(CidrBlock="10.9.0.0/16")
        clients = AwsClients(region=REGION)
        results = run_readiness(clients, resolve_regions(clients, env["READINESS_REGIONS"]))
    assert results
    actions = {f"{svc}:{op}" for svc, op, _ in clients.calls}
    actions = {IAM_ACTION.get(a, a) for a in actions}
    for needed in ("cloudtrail:DescribeTrails", "config:DescribeConfigurationRecorders",
                   "s3:ListAllMyBuckets", "s3:GetBucketLogging", "ec2:DescribeVpcs",
                   "ec2:DescribeFlowLogs", "wafv2:ListWebACLs"):
        assert needed in actions, needed          # the recording reaches every source
    denied = sorted(a for a in actions if not evaluate(docs, a).allowed)
    assert denied == []
