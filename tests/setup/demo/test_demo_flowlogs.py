"""Issue 21: the demo's flow-logs section on the embedded AWS (a moto server in this process,
made strict by setup.demo.logdelivery), driven through the CLI's own entry function."""

from __future__ import annotations

import io

import pytest

from setup.cli import main
from setup.demo import flowlogs as demo_flowlogs
from setup.demo.world import embedded_aws

pytestmark = pytest.mark.slow


def test_demo_flow_logs_to_s3_and_a_log_group_and_readiness_before_and_after():
    with embedded_aws():
        r = demo_flowlogs.run(main)
    assert r["readiness_before"]["checks"]["vpc.flow_logs"]["status"] == "FAIL"
    assert r["readiness_after"]["checks"]["vpc.flow_logs"]["status"] == "PASS"
    assert r["apply_s3"]["exit_code"] == 0 and r["apply_log_group"]["exit_code"] == 0
    assert r["apply_s3"]["applied"][0] == "s3:PutBucketPolicy"
    assert r["rerun_write_calls"] == 0
    assert r["automatic_attachments"] == 0
    assert r["bucket_policy_sids"] == ["DataTeamRead", "AWSLogDeliveryWrite",
                                       "AWSLogDeliveryAclCheck"]
    assert set(r["delivery"].values()) == {"delivered"}
    assert r["files"]["count"] >= 1
    assert r["files"]["example"].startswith("flow-logs/AWSLogs/")
    for name in ("s3", "log_group"):
        assert r["verify"][name]["exit_code"] == 0, r["verify"][name]
        assert set(r["verify"][name]["checks"].values()) == {"PASS"}
    out = io.StringIO()
    demo_flowlogs.print_section(r, out)
    assert "re-run: 0 writes; AWS automatic policy attachments: 0" in out.getvalue()
