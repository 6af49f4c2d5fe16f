"""Finding a trail as AWS allows it (issue 24 item 2): DescribeTrails matches a *name* only in the
caller's own account and Region, so an organization trail seen from a member account (the README's
audit-account topologies) and a multi-Region trail seen from another Region are found by listing
the trails the caller can see (shadow trails included) and matching the name.
The lookup rules live in tests/strict_fakes.py (StrictCloudTrail, with the documentation)."""

from __future__ import annotations

import pytest

from setup.errors import SetupError
from setup.wiring.state import find_trail
from tests.strict_fakes import CloudTrailWorld, FakeAwsClients

MGMT, AUDIT, OTHER = "111111111111", "222222222222", "333333333333"
HOME = "us-east-1"
ORG_TRAIL_LOG_GROUP = f"arn:aws:logs:{HOME}:{MGMT}:log-group:CloudTrail/org-trail:*"


def world() -> CloudTrailWorld:
    w = CloudTrailWorld(org_members=(MGMT, AUDIT))
    w.add(MGMT, HOME, "org-trail", org=True, CloudWatchLogsLogGroupArn=ORG_TRAIL_LOG_GROUP,
          CloudWatchLogsRoleArn=f"arn:aws:iam::{MGMT}:role/trailwatch-cwl-org-trail-{HOME}")
    w.add(AUDIT, "eu-west-1", "audit-local", multi_region=True)
    return w


def clients(w: CloudTrailWorld, account: str, region: str) -> FakeAwsClients:
    return FakeAwsClients(region, cloudtrail=lambda r: w.client(account, r))


def test_the_strict_fake_matches_names_only_in_the_callers_account_and_region():
    w = world()
    member = w.client(AUDIT, HOME)
    assert member.describe_trails(trailNameList=["org-trail"])["trailList"] == []
    arn = f"arn:aws:cloudtrail:{HOME}:{MGMT}:trail/org-trail"
    assert [t["Name"] for t in member.describe_trails(trailNameList=[arn])["trailList"]] == \
        ["org-trail"]
    assert {t["Name"] for t in member.describe_trails()["trailList"]} == \
        {"org-trail", "audit-local"}
    assert member.describe_trails(includeShadowTrails=False)["trailList"] == []
    with pytest.raises(Exception, match="TrailNotFound"):
        member.get_trail_status(Name="org-trail")
    assert member.get_trail_status(Name=arn)["IsLogging"]
    # an account outside the organization sees nothing of it
    assert w.client(OTHER, HOME).describe_trails()["trailList"] == []


def test_org_trail_found_by_name_from_a_member_account():
    """Observed on 5bb8a96: TrailNotFoundException (DescribeTrails by name from the audit
    account), so the watchdog's watchdog.trail FAILed forever with TrailName=org-trail."""
    trail = find_trail(clients(world(), AUDIT, HOME), "org-trail")
    assert trail.arn == f"arn:aws:cloudtrail:{HOME}:{MGMT}:trail/org-trail"
    assert trail.is_org and trail.owner_account == MGMT and trail.home_region == HOME
    assert trail.log_group_arn == ORG_TRAIL_LOG_GROUP


def test_multi_region_trail_found_by_name_from_another_region():
    trail = find_trail(clients(world(), AUDIT, HOME), "audit-local")
    assert trail.home_region == "eu-west-1"


def test_by_arn_and_by_name_in_the_home_region_still_use_one_call():
    w = world()
    c = clients(w, MGMT, HOME)
    ct = w.client(MGMT, HOME)
    c.fakes["cloudtrail"] = lambda r: ct
    assert find_trail(c, "org-trail").owner_account == MGMT
    assert len(ct.calls) == 1


def test_the_same_name_in_two_accounts_asks_for_the_arn():
    w = world()
    w.add(AUDIT, HOME, "org-trail", multi_region=False)
    # the caller's own trail of that name is what DescribeTrails returns by name
    assert find_trail(clients(w, AUDIT, HOME), "org-trail").owner_account == AUDIT
    w2 = world()
    w2.add(AUDIT, "eu-west-1", "org-trail", multi_region=True)
    with pytest.raises(SetupError) as e:
        find_trail(clients(w2, AUDIT, HOME), "org-trail")
    assert "arn:aws:cloudtrail:us-east-1:111111111111:trail/org-trail" in e.value.message
    assert "arn:aws:cloudtrail:eu-west-1:222222222222:trail/org-trail" in e.value.message
    assert "ARN" in e.value.remediation


def test_a_name_nobody_has_is_still_not_found():
    with pytest.raises(SetupError, match="TrailNotFoundException"):
        find_trail(clients(world(), AUDIT, HOME), "nope")
