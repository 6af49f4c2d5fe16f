"""End to end: the trailwatch CLI as a subprocess against a moto server, checked with the AWS CLI;
and ``trailwatch demo --output json`` (healthy and broken-policy scenarios)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

BIN = Path(sys.executable).parent
TRAILWATCH = [str(BIN / "trailwatch")] if (BIN / "trailwatch").exists() else \
    [sys.executable, "-m", "setup.cli"]
AWS = str(BIN / "aws") if (BIN / "aws").exists() else shutil.which("aws")
pytestmark = pytest.mark.slow


@pytest.fixture
def server(monkeypatch):
    from moto.server import ThreadedMotoServer
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.stop()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*TRAILWATCH, *args], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"trailwatch {' '.join(args)} -> {out.returncode}\n{out.stdout}\n"
                             f"{out.stderr}")
    return out


def aws(*args: str) -> dict:
    assert AWS, "the AWS CLI (awscli from PyPI) is part of the dev extras"
    out = subprocess.run([AWS, *args, "--region", "us-east-1", "--output", "json"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def seed_trail(org: bool) -> str:
    if org:
        boto3.client("organizations", region_name="us-east-1").create_organization(FeatureSet="ALL")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trailwatch-e2e-bucket")
    ct = boto3.client("cloudtrail", region_name="us-east-1")
    name = "org" if org else "single"
    ct.create_trail(Name=name, S3BucketName="trailwatch-e2e-bucket", IsMultiRegionTrail=True,
                    IsOrganizationTrail=org)
    ct.start_logging(Name=name)
    return name


@pytest.mark.parametrize("org", [False, True], ids=["single", "org"])
def test_cli_against_moto_server_checked_with_aws_cli(server, org):
    name = seed_trail(org)
    applied = cli("apply", "--trail", name, "--yes", "--region", "us-east-1", "--cis-alarms")
    # 5 wiring steps + the CIS topic + 15 metric filters + 15 alarms
    assert "Applied 36 change(s) with 36 write call(s)." in applied.stdout
    filters = aws("logs", "describe-metric-filters", "--log-group-name",
                  f"CloudTrail/{name}")["metricFilters"]
    from handlers.detection.cis import CIS_CONTROLS
    assert sorted(f["filterPattern"] for f in filters) == sorted(c.pattern for c in CIS_CONTROLS)
    alarms = aws("cloudwatch", "describe-alarms", "--alarm-name-prefix",
                 "trailwatch-cis-")["MetricAlarms"]
    assert len(alarms) == 15 and all(a["AlarmActions"] and a["Namespace"] == "CISBenchmark"
                                     for a in alarms)
    trail = aws("cloudtrail", "get-trail", "--name", name)["Trail"]
    account = trail["TrailARN"].split(":")[4]
    assert trail["CloudWatchLogsLogGroupArn"] == \
        f"arn:aws:logs:us-east-1:{account}:log-group:CloudTrail/{name}:*"
    assert trail["CloudWatchLogsRoleArn"] == f"arn:aws:iam::{account}:role/trailwatch-cwl-{name}-us-east-1"
    doc = aws("iam", "get-role-policy", "--role-name", f"trailwatch-cwl-{name}-us-east-1",
              "--policy-name", "trailwatch-cloudtrail-delivery")["PolicyDocument"]
    resources = doc["Statement"][0]["Resource"]
    assert resources[0].endswith(f":log-stream:{account}_CloudTrail_us-east-1*")
    assert (len(resources) == 2 and resources[1].split(":log-stream:")[1].startswith("o-")) \
        if org else len(resources) == 1
    again = cli("apply", "--trail", name, "--yes", "--region", "us-east-1", "--cis-alarms")
    assert "Nothing to do" in again.stdout and "with 0 write call(s)" in again.stdout
    verify = cli("verify", "--trail", name, "--region", "us-east-1", "--output", "json")
    assert json.loads(verify.stdout)["summary"]["fail"] == 0
    cli("remove", "--trail", name, "--yes", "--region", "us-east-1")
    trail = aws("cloudtrail", "get-trail", "--name", name)["Trail"]
    assert not trail.get("CloudWatchLogsLogGroupArn") and not trail.get("CloudWatchLogsRoleArn")


def test_cli_refuses_apply_without_tty(server):
    name = seed_trail(False)
    out = cli("apply", "--trail", name, "--region", "us-east-1", check=False)
    assert out.returncode == 2 and "--yes" in out.stderr


def run_demo(*extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    out = subprocess.run([*TRAILWATCH, "demo", "--output", "json", *extra], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_demo_healthy_scenario():
    report = run_demo()
    assert report["apply_exit_code"] == 0 and report["verify_exit_code"] == 0
    p = report["processing"]
    assert p["lost_events"] == 0
    assert p["log_events_processed"] == p["log_events_written"]
    assert (p["oversize"], p["malformed"], p["control_messages"]) == (1, 1, 1)
    assert p["failure_queue_messages"] == 1
    lag = p["delivery_lag_seconds"]
    assert 180 <= lag["p50"] <= 900 and lag["max"] == 5400   # within the simulated delays
    assert lag["p50"] <= lag["p95"] <= lag["max"]
    by_rule = report["alerts"]["by_rule"]
    for n in range(1, 16):
        assert by_rule.get(f"cis-4.{n}", 0) >= 1, f"cis-4.{n}"
    assert by_rule["trailwatch-oversize-event"] == 1
    assert report["alerts"]["expected_changes"] >= 1
    assert report["delivery"]["denied"] == []
    checks = {c["id"]: c["status"] for c in report["verify"]["checks"]}
    assert checks["delivery.error"] == "PASS" and checks["delivery.recent"] == "PASS"
    assert checks["cis.metric_filters"] == checks["cis.alarms"] == "PASS"
    assert checks["cis.topic_subscribers"] == "PASS"
    # Speed is measured by `make bench`, not by a timed test: only that the demo reports it.
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] > 0


def test_demo_broken_policy_reports_member_delivery_failure():
    report = run_demo("--broken-policy")
    checks = {c["id"]: c for c in report["verify"]["checks"]}
    assert checks["delivery.error"]["status"] == "FAIL"
    assert checks["role.stream_policy"]["status"] == "FAIL"
    denied = report["delivery"]["denied"]
    assert denied and all(d["stream"].startswith("o-") for d in denied)
    assert report["verify_exit_code"] == 1
