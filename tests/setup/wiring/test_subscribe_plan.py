"""setup.wiring.subscription's pure planner over arbitrary existing filters (hypothesis): it never touches
a filter it did not create, never plans a third filter, and applying its plan converges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from setup.wiring.models import Target, Trail
from setup.errors import SetupError
from setup.wiring.subscription import MAX_FILTERS, filter_name, plan_subscription

REGION, MGMT, AUDIT = "us-east-1", "123456789012", "999999999999"
TARGET = Target(trail=Trail("org-trail", f"arn:aws:cloudtrail:{REGION}:{MGMT}:trail/org-trail",
                            REGION, MGMT, True, True), account=MGMT,
                log_group="CloudTrail/org-trail", role_name="r")
DEST = f"arn:aws:logs:{REGION}:{AUDIT}:destination:tw-trail-events"
OURS = filter_name("org-trail")

destinations = st.sampled_from([DEST, f"arn:aws:logs:{REGION}:{AUDIT}:destination:other",
                                f"arn:aws:lambda:{REGION}:{MGMT}:function:siem",
                                f"arn:aws:kinesis:{REGION}:{MGMT}:stream/siem"])
filters = st.lists(st.fixed_dictionaries({
    "filterName": st.sampled_from([OURS, "siem", "datadog", "splunk"]),
    "destinationArn": destinations,
    "filterPattern": st.sampled_from(["", "{ $.eventName = \"x\" }"])}),
    max_size=MAX_FILTERS, unique_by=lambda f: f["filterName"])


def apply(current, steps):
    after = {f["filterName"]: dict(f) for f in current}
    for s in steps:
        p = s.params
        after[p["filterName"]] = {"filterName": p["filterName"],
                                  "destinationArn": p["destinationArn"],
                                  "filterPattern": p["filterPattern"]}
    return list(after.values())


@given(filters)
def test_planner_invariants(current):
    try:
        steps, notes = plan_subscription(TARGET, DEST, current)
    except SetupError as e:
        # refused only when two filters are taken and none is ours or already sends everything
        assert len(current) == MAX_FILTERS
        assert all(f["filterName"] != OURS for f in current)
        for f in current:
            assert f["filterName"] in e.message
        return
    assert len(steps) <= 1
    for s in steps:
        assert s.params["filterName"] == OURS     # only trailwatch's own filter is written
        assert s.params["filterPattern"] == "" and s.params["destinationArn"] == DEST
    after = apply(current, steps)
    assert len(after) <= MAX_FILTERS
    assert any(f["destinationArn"] == DEST and not f["filterPattern"] for f in after)
    assert plan_subscription(TARGET, DEST, after)[0] == []      # converged


def test_update_of_own_filter_is_marked_destructive():
    other = f"arn:aws:logs:{REGION}:{AUDIT}:destination:other"
    (step,), _ = plan_subscription(TARGET, DEST, [
        {"filterName": OURS, "destinationArn": other, "filterPattern": ""},
        {"filterName": "siem", "destinationArn": other, "filterPattern": ""}])
    assert step.message.startswith("REPLACE") and other in step.message


@pytest.mark.parametrize("dest", [f"arn:aws:kinesis:{REGION}:{MGMT}:stream/s",
                                  f"arn:aws:firehose:{REGION}:{MGMT}:deliverystream/f"])
def test_same_account_stream_targets_pass_the_role(dest):
    role = f"arn:aws:iam::{MGMT}:role/cwl-to-stream"
    (step,), _ = plan_subscription(TARGET, dest, [], role)
    assert step.params["roleArn"] == role and "iam:PassRole" in step.iam_actions


# ------------------------------------------------- issue 24 item 3: organization-wide destinations
ORG_ROLE = f"arn:aws:iam::{MGMT}:role/CWLtoSubscriptionFilterRole"


def test_an_organization_destination_gets_the_senders_role():
    """The CloudWatch Logs guide ("Step 2: (Only if using an organization) Create an IAM role"):
    when the destination's access policy grants an organization, the sender's subscription filter
    names a role in the sender account (trusted by logs.amazonaws.com) that CloudWatch Logs
    assumes to validate the sender. Observed on 5bb8a96: --subscription-role was dropped for a
    cross-account destination, so the template's SourceOrganizationId mode could not work."""
    (step,), _ = plan_subscription(TARGET, DEST, [], ORG_ROLE)
    assert step.params["roleArn"] == ORG_ROLE and "iam:PassRole" in step.iam_actions


def test_without_a_role_the_plan_says_when_one_is_needed():
    (step,), notes = plan_subscription(TARGET, DEST, [])
    assert "roleArn" not in step.params
    assert any("--subscription-role" in n and "organization" in n for n in notes)


def test_adding_the_role_to_an_existing_filter_updates_it():
    current = [{"filterName": OURS, "destinationArn": DEST, "filterPattern": ""}]
    assert plan_subscription(TARGET, DEST, current)[0] == []
    (step,), _ = plan_subscription(TARGET, DEST, current, ORG_ROLE)
    assert step.params["roleArn"] == ORG_ROLE
    current[0]["roleArn"] = ORG_ROLE
    assert plan_subscription(TARGET, DEST, current, ORG_ROLE)[0] == []
