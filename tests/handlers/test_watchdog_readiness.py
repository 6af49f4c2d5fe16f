"""Issue 21: the watchdog can run `trailwatch readiness` on its schedule (READINESS_REGIONS):
each finding is a check named per Region, so a source switched off in one Region alerts once, and
its recovery is announced, with the watchdog's own state, metrics and alerts."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from handlers.watchdog import (
    MemoryState,
    Watchdog,
    from_env,
    run_readiness_checks,
    run_verify,
    verify_and_readiness,
)
from setup.aws import AwsClients

REGION = "us-east-1"


@pytest.fixture
def aws():
    with mock_aws():
        yield


def test_findings_are_named_per_region(aws):
    env = {"AWS_REGION": REGION, "READINESS_REGIONS": f"{REGION},eu-west-1"}
    ids = {r.id: r.status for r in run_readiness_checks(env, AwsClients(region=REGION))}
    assert ids[f"readiness.vpc.flow_logs.{REGION}"] == "FAIL"       # moto's default VPCs
    assert ids["readiness.vpc.flow_logs.eu-west-1"] == "FAIL"
    assert ids["readiness.cloudtrail.multi_region"] == "FAIL"        # account-wide: no Region


def test_a_region_switched_on_recovers_once(aws):
    env = {"AWS_REGION": REGION, "READINESS_REGIONS": REGION}
    published: list[dict] = []
    state = MemoryState()
    clients = AwsClients(region=REGION)

    def checks(e):
        return "readiness", run_readiness_checks(e, clients)
    dog = Watchdog(env, state, published.append, lambda line: None, verify=checks)
    dog.run({"time": "t1"})
    failed = {a["event"]["check"]["id"] for a in published if a["kind"] == "verify_check_failed"}
    assert f"readiness.vpc.flow_logs.{REGION}" in failed
    published.clear()
    dog.run({"time": "t2"})
    assert published == []                                   # an unchanged FAIL alerts once
    s3, ec2 = boto3.client("s3", region_name=REGION), boto3.client("ec2", region_name=REGION)
    s3.create_bucket(Bucket="flow-logs-bucket")
    for v in ec2.describe_vpcs()["Vpcs"]:
        ec2.create_flow_logs(ResourceType="VPC", ResourceIds=[v["VpcId"]], TrafficType="ALL",
                             LogDestinationType="s3", LogDestination="arn:aws:s3:::flow-logs-bucket")
    dog.run({"time": "t3"})
    recovered = [a["event"]["check"]["id"] for a in published
                 if a["kind"] == "verify_check_recovered"]
    assert recovered == [f"readiness.vpc.flow_logs.{REGION}"]


def test_readiness_is_off_unless_asked():
    assert from_env({}).verify is run_verify
    assert from_env({"READINESS_REGIONS": "all"}).verify is verify_and_readiness


def test_an_unexpected_readiness_error_is_a_warn_and_the_run_completes(aws, monkeypatch):
    """Review F6: any exception out of readiness failed the whole watchdog run."""
    import setup.verify.readiness as R

    def boom(*a, **kw):
        raise RuntimeError("unexpected")
    monkeypatch.setattr(R, "run_readiness", boom)
    (r,) = run_readiness_checks({"AWS_REGION": REGION, "READINESS_REGIONS": REGION},
                                AwsClients(region=REGION))
    assert r.id == "readiness.run" and r.status == "WARN" and "RuntimeError" in r.message
    dog = Watchdog({"AWS_REGION": REGION}, MemoryState(), [].append, lambda line: None,
                   verify=lambda e: ("trail", run_readiness_checks(e, AwsClients(region=REGION))))
    assert dog.run({"time": "t1"})["checks"] == {"readiness.run": "WARN"}
