"""The demo's topology (ii) (issue 14): two accounts on the local AWS, the audit side built from
the same documents as template.yaml's destination mode, `trailwatch subscribe` in the management
account, and events crossing through the destination's stream to the audit processor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from setup.demo import topology as topo
from tests.conftest import ROOT
from tests.template.test_template_modes import ACCOUNT, REGION, STACK, Env, translate

MGMT, ORG = "123456789012", "o-a1b2c3d4e5"


@pytest.fixture(scope="module")
def resolved():
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    e = Env(translate(), {"SourceMode": "destination", "SourceAccountIds": MGMT,
                          "SourceOrganizationId": ORG})
    return {k: e.value(v["Properties"]) for k, v in e.resources().items()}


def test_demo_builds_the_templates_documents(resolved):
    role = resolved["DestinationRole"]
    assert role["AssumeRolePolicyDocument"] == topo.destination_role_trust(ACCOUNT, [MGMT],
                                                                           org_id=ORG)
    policy = role["Policies"][0]["PolicyDocument"]
    assert policy == topo.destination_role_policy("<TrailStream.Arn>", "<TrailStreamKey.Arn>")
    dest_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:destination:{topo.destination_name(STACK)}"
    assert json.loads(resolved["TrailDestination"]["DestinationPolicy"]) == \
        topo.destination_access_policy(dest_arn, org_id=ORG)
    assert resolved["TrailDestination"]["DestinationName"] == topo.destination_name(STACK)


def test_trust_admits_only_the_listed_accounts_in_the_region():
    trust = topo.destination_role_trust(ACCOUNT, [MGMT])
    assert topo.trust_admits(trust, f"arn:aws:logs:{REGION}:{MGMT}:log-group:CloudTrail/org")
    assert topo.trust_admits(trust, f"arn:aws:logs:{REGION}:{ACCOUNT}:*")   # creation test message
    assert not topo.trust_admits(trust, f"arn:aws:logs:{REGION}:444455556666:log-group:x")
    assert not topo.trust_admits(trust, f"arn:aws:logs:eu-west-1:{MGMT}:log-group:x")


def test_organization_trust_admits_every_member_in_the_region():
    """Issue 24 item 3: with an organization the senders are its accounts, listed nowhere."""
    trust = topo.destination_role_trust(ACCOUNT, [MGMT], org_id=ORG)
    member = f"arn:aws:logs:{REGION}:444455556666:log-group:CloudTrail/org"
    assert topo.trust_admits(trust, member)                  # aws:SourceOrgID not supplied
    assert topo.trust_admits(trust, member, source_org=ORG)
    assert not topo.trust_admits(trust, member, source_org="o-zzzzzzzzzz")
    assert not topo.trust_admits(trust, f"arn:aws:logs:eu-west-1:{MGMT}:log-group:x")


@pytest.mark.slow
def test_demo_events_cross_from_management_to_audit_processor():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "setup.cli", "demo", "--output", "json"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    t = report["topology"]
    assert t["audit"] != t["management"] == report["organization"]["management"]
    assert t["subscribe_exit_code"] == 0, t["subscribe_output"]
    # The demo's same-account processor (deployed by the canary step before this one) holds the
    # group's other subscription filter: the destination's is the second of the two allowed.
    assert {"name": "trailwatch-subscribe-org-trail",
            "destination": t["destination"]} in t["filters"] and len(t["filters"]) == 2
    assert t["destination"].split(":")[4] == t["audit"]
    assert (t["stream_mode"], t["stream_encryption"]) == ("ON_DEMAND", "KMS")
    v = t["verify_subscription"]
    # WARN only because both filters are now used (no room for a third consumer)
    assert v["status"] == "WARN" and "cannot be checked from here" in v["message"], v
    assert "no room for another consumer" in v["message"], v
    hop, p = t["forwarded"], t["processor"]
    assert hop["error"] == ""
    # every log event the trail wrote in the management account reached the audit processor
    # ... plus the canary's records, which the canary step wrote to the same group before
    canary = sum(1 for c in report["canary"]["cloudtrail"] if c["delivered"])
    assert canary >= 1
    assert hop["log_events"] == report["delivery"]["written"] + canary == p["log_events"]
    assert p["kinesis_records"] == hop["records"] and p["batch_item_failures"] == 0
    assert p["records"] == report["processing"]["records"] + canary
    # the same detections as the direct path (counts differ only by the one delivery_delayed
    # alert per invocation: the batches differ)
    assert p["alerts"] > 0 and set(p["alert_rules"]) == set(report["alerts"]["by_rule"])
    assert {f"cis-4.{n}" for n in range(1, 16)} <= set(p["alert_rules"])
    assert "does not forward" in t["note"]
