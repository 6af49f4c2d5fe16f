"""`trailwatch demo` proves delivery with the canary through the simulated CloudTrail: both checks
PASS with timings; with --broken-policy canary.delivered FAILs for the member-account stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def demo(broken: bool) -> dict:
    """In a subprocess, as a user runs it (moto's state is per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    out = subprocess.run([sys.executable, "-m", "setup.cli", "demo", "--output", "json",
                          *(["--broken-policy"] if broken else [])], capture_output=True,
                         text=True, env=env, timeout=300, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["canary"]


def test_demo_canary_delivered_and_processed_with_timings():
    c = demo(False)
    delivered, processed = c["checks"]["canary.delivered"], c["checks"]["canary.processed"]
    assert delivered["status"] == "PASS" and processed["status"] == "PASS", c
    probes = delivered["details"]["probes"]
    assert [p["account"].split()[0] for p in probes] == ["account", "member"]
    assert probes[0]["stream"].endswith("_CloudTrail_us-east-1")
    assert probes[1]["stream"].startswith("o-")
    for p in probes:
        assert p["delivery_lag_seconds"] is not None and p["found_after_seconds"] >= 0
    assert processed["details"]["function_log_group"] == "/aws/lambda/trailwatch-processor"
    assert processed["details"]["receipt_lag_seconds"] is not None
    assert c["alerts_published"] == 0 and c["exit_code"] == 0


def test_demo_broken_policy_canary_fails_for_the_member_stream():
    c = demo(True)
    delivered = c["checks"]["canary.delivered"]
    assert delivered["status"] == "FAIL" and c["exit_code"] == 1
    assert "member account" in delivered["message"] and "o-" in delivered["message"]
    assert [d["delivered"] for d in c["cloudtrail"]
            if d["event"] == "PutMetricFilter"] == [True, False]
