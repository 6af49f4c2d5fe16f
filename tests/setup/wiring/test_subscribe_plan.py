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
