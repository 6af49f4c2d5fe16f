"""`verify` checks as fast unit tests over in-memory clients (no moto, no clock).

Expectations come from aws-facts.md: the trail's group ARN must end in ``:*`` (trap 1) and name a
group in the caller's account and the trail's home region (traps 3, 7); the trust must hold
without a Condition (trap 6); the group must be STANDARD (trap 15); a third consumer has no room
at two subscription filters (trap 14); GetTrailStatus goes to the home region with the trail ARN,
a non-empty LatestCloudWatchLogsDeliveryError fails, and (issue 10) a delivery older than
--max-delivery-age (default 2 h) fails and one older than 20 minutes warns (trap 19).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from setup.wiring.models import Target, Trail, stream_policy, trust_policy
from setup.verify import Context, run_checks
from tests.fakes import FakeClients, client_error

ACCT = "111111111111"
OTHER = "222222222222"
HOME = "eu-west-1"
CALLER_REGION = "us-east-1"
NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)
TRAIL_ARN = f"arn:aws:cloudtrail:{HOME}:{ACCT}:trail/main"
GROUP_BARE = f"arn:aws:logs:{HOME}:{ACCT}:log-group:CloudTrail/main"
ROLE_ARN = f"arn:aws:iam::{ACCT}:role/trailwatch-cwl-main"


def make_target(group_arn=GROUP_BARE + ":*", org=False, role_arn=ROLE_ARN):
    trail = Trail("main", TRAIL_ARN, HOME, ACCT, org, True, group_arn, role_arn)
    return Target(trail=trail, account=ACCT, log_group="CloudTrail/main",
                  role_name="trailwatch-cwl-main", org_id="o-abcdefghij" if org else None)


def world(target, *, trust=None, policy=None, group_class="STANDARD", subs=1,
          status=None, members=(OTHER,)):
    status = {"IsLogging": True, "LatestCloudWatchLogsDeliveryTime": NOW - dt.timedelta(minutes=3),
              "LatestCloudWatchLogsDeliveryError": ""} if status is None else status
    groups = [{"logGroupName": target.log_group, "arn": target.log_group_arn,
               "logGroupClass": group_class, "retentionInDays": 365}]
    return {
        ("cloudtrail", "get_trail_status"): status,
        ("logs", "describe_log_groups"): {"logGroups": groups},
        ("logs", "list_tags_for_resource"): {"tags": {"managed-by": "trailwatch"}},
        # The audit account's destinations (issue 14: a same-account destination must exist and
        # its role be able to put; a cross-account one is judged by its DeliveryErrors metric,
        # of which this world has none).
        ("logs", "describe_subscription_filters"): {"subscriptionFilters": [
            {"filterName": f"f{i}", "destinationArn":
             f"arn:aws:logs:{HOME}:{OTHER}:destination:d{i}"} for i in range(subs)]},
        ("iam", "get_role"): {"Role": {"Arn": ROLE_ARN, "Tags": [],
                                       "AssumeRolePolicyDocument": json.dumps(
                                           trust if trust is not None else trust_policy())}},
        ("iam", "list_role_policies"): {"PolicyNames": ["p"]},
        ("iam", "get_role_policy"): {"PolicyDocument": policy if policy is not None
                                     else stream_policy(target)},
        ("iam", "list_attached_role_policies"): {"AttachedPolicies": []},
        ("organizations", "list_accounts"): {"Accounts": [{"Id": a} for a in (ACCT, *members)]},
    }


def checks(target, **kw):
    clients = FakeClients(CALLER_REGION, world(target, **kw))
    results = run_checks(Context(clients=clients, target=target, now=lambda: NOW))
    return clients, {r.id: r.status for r in results}


def test_everything_right_passes_the_checks_this_module_covers():
    _, st = checks(make_target())
    for cid in ("trail.logging", "trail.log_group_arn", "log_group.exists", "role.trust",
                "role.stream_policy", "delivery.error", "delivery.recent", "subscription.filters"):
        assert st[cid] == "PASS", cid


# ----------------------------------------------------------------------- trap 1, 3, 7

def test_group_arn_without_wildcard_fails():
    _, st = checks(make_target(group_arn=GROUP_BARE))
    assert st["trail.log_group_arn"] == "FAIL"


@pytest.mark.parametrize("arn", [
    f"arn:aws:logs:{HOME}:{OTHER}:log-group:CloudTrail/main:*",            # log-archive account
    f"arn:aws:logs:{CALLER_REGION}:{ACCT}:log-group:CloudTrail/main:*",    # not the home region
])
def test_group_in_another_account_or_region_fails(arn):
    _, st = checks(make_target(group_arn=arn))
    assert st["trail.log_group_arn"] == "FAIL"


def test_missing_group_arn_fails():
    _, st = checks(make_target(group_arn=None, role_arn=None))
    assert st["trail.log_group_arn"] == "FAIL" and st["trail.cloudwatch_logs"] == "FAIL"


# ----------------------------------------------------------------------- trap 6

def test_conditional_trust_is_not_a_pass():
    trust = trust_policy()
    trust["Statement"][0]["Condition"] = {"StringEquals": {"aws:SourceAccount": ACCT}}
    _, st = checks(make_target(), trust=trust)
    assert st["role.trust"] in ("WARN", "FAIL")


def test_trust_for_another_service_fails():
    trust = trust_policy()
    trust["Statement"][0]["Principal"] = {"Service": "lambda.amazonaws.com"}
    _, st = checks(make_target(), trust=trust)
    assert st["role.trust"] == "FAIL"


def test_denied_trust_fails():
    trust = trust_policy()
    trust["Statement"].append({"Effect": "Deny", "Action": "sts:AssumeRole",
                               "Principal": {"Service": "cloudtrail.amazonaws.com"}})
    _, st = checks(make_target(), trust=trust)
    assert st["role.trust"] == "FAIL"


# ----------------------------------------------------------------------- trap 4

def test_org_trail_with_single_account_policy_fails():
    org = make_target(org=True)
    single = stream_policy(make_target())
    _, st = checks(org, policy=single)
    assert st["role.stream_policy"] == "FAIL"
    _, st = checks(org)
    assert st["role.stream_policy"] == "PASS"


def test_policy_scoped_to_an_event_region_fails():
    """Trap 5: <acct>_CloudTrail_<other region>* does not cover the home-region stream."""
    pol = json.loads(json.dumps(stream_policy(make_target())).replace(
        f"{ACCT}_CloudTrail_{HOME}*", f"{ACCT}_CloudTrail_{CALLER_REGION}*"))
    _, st = checks(make_target(), policy=pol)
    assert st["role.stream_policy"] == "FAIL"


# ----------------------------------------------------------------------- traps 14, 15

@pytest.mark.parametrize("cls", ["INFREQUENT_ACCESS", "DELIVERY"])
def test_non_standard_group_fails(cls):
    _, st = checks(make_target(), group_class=cls)
    assert st["log_group.exists"] == "FAIL"


@pytest.mark.parametrize("subs,ok", [(1, True), (2, False)])
def test_two_subscription_filters_are_not_a_pass(subs, ok):
    _, st = checks(make_target(), subs=subs)
    assert (st["subscription.filters"] == "PASS") is ok


# ----------------------------------------------------------------------- trap 19

def test_trail_status_is_read_in_the_home_region_by_arn():
    clients, _ = checks(make_target())
    calls = clients.calls_to("cloudtrail", "get_trail_status")
    assert calls and all(region == HOME and kw["Name"] == TRAIL_ARN for region, kw in calls)


@pytest.mark.parametrize("error,expected", [("", "PASS"), (None, "PASS"),
                                            ("AccessDenied", "FAIL"), ("x", "FAIL")])
def test_delivery_error_is_free_text_and_any_value_fails(error, expected):
    status = {"IsLogging": True, "LatestCloudWatchLogsDeliveryTime": NOW}
    if error is not None:
        status["LatestCloudWatchLogsDeliveryError"] = error
    _, st = checks(make_target(), status=status)
    assert st["delivery.error"] == expected


@pytest.mark.parametrize("age,expected", [
    (dt.timedelta(minutes=5), "PASS"),
    (dt.timedelta(minutes=19), "PASS"),
    (dt.timedelta(minutes=21), "WARN"),           # issue 10: WARN past 20 minutes
    (dt.timedelta(hours=1, minutes=59), "WARN"),
    (dt.timedelta(hours=2, minutes=1), "FAIL"),   # issue 10: FAIL past --max-delivery-age (2 h)
    (dt.timedelta(hours=23), "FAIL"),
    (dt.timedelta(days=3), "FAIL"),
])
def test_stale_delivery_is_not_a_pass(age, expected):
    status = {"IsLogging": True, "LatestCloudWatchLogsDeliveryTime": NOW - age,
              "LatestCloudWatchLogsDeliveryError": ""}
    _, st = checks(make_target(), status=status)
    assert st["delivery.recent"] == expected


def test_no_delivery_yet_is_not_a_pass():
    _, st = checks(make_target(), status={"IsLogging": True})
    assert st["delivery.recent"] != "PASS"


def test_not_logging_fails():
    _, st = checks(make_target(), status={"IsLogging": False,
                                          "LatestCloudWatchLogsDeliveryTime": NOW})
    assert st["trail.logging"] == "FAIL"


def test_trail_status_error_fails_every_status_check():
    target = make_target()
    clients = FakeClients(CALLER_REGION, world(target))
    clients.responses[("cloudtrail", "get_trail_status")] = client_error(
        "AccessDeniedException", "not allowed", "GetTrailStatus")
    results = {r.id: r.status for r in run_checks(Context(clients=clients, target=target,
                                                          now=lambda: NOW))}
    assert results["trail.logging"] == results["delivery.error"] == \
        results["delivery.recent"] == "FAIL"


# ----------------------------------------------------------------------- CIS filters (trap 18)

from pathlib import Path  # noqa: E402

PUBLISHED = json.loads((Path(__file__).resolve().parents[2] / "data" / "cis_patterns.json").read_text())[
    "controls"]
TOPIC = f"arn:aws:sns:{HOME}:{ACCT}:cis"


def cis_world(target, patterns=None, actions=(TOPIC,), subscribers=1):
    patterns = dict(patterns if patterns is not None else
                    {c: d["pattern"] for c, d in PUBLISHED.items()})
    filters = [{"filterName": f"user-named-{c}", "filterPattern": p,
                "metricTransformations": [{"metricName": f"M{c}", "metricNamespace": "CIS",
                                           "metricValue": "1"}]} for c, p in patterns.items()]
    alarms = [{"AlarmName": f"a{c}", "Namespace": "CIS", "MetricName": f"M{c}",
               "AlarmActions": list(actions)} for c in patterns]
    w = world(target)
    w[("logs", "describe_metric_filters")] = {"metricFilters": filters}
    w[("cloudwatch", "describe_alarms")] = {"MetricAlarms": alarms}
    w[("sns", "list_subscriptions_by_topic")] = {"Subscriptions": [
        {"SubscriptionArn": f"{TOPIC}:s{i}"} for i in range(subscribers)]}
    return w


def cis_checks(w, target):
    clients = FakeClients(CALLER_REGION, w)
    return {r.id: r.status for r in run_checks(Context(clients=clients, target=target,
                                                       now=lambda: NOW))}


def test_published_cis_filters_under_any_name_pass():
    t = make_target()
    st = cis_checks(cis_world(t), t)
    assert (st["cis.metric_filters"], st["cis.alarms"], st["cis.topic_subscribers"]) == \
        ("PASS", "PASS", "PASS")


@pytest.mark.parametrize("edit", [
    lambda p: p.replace("{$.", "{ $."),                                   # whitespace tidied
    lambda p: p[:-1] + ' || ($.eventName=HeadBucket)}',                  # a term added
    lambda p: p.replace('($.errorCode="AccessDenied*")', '($.errorCode="AccessDenied")'),
])
def test_tweaked_cis_filter_fails(edit):
    t = make_target()
    patterns = {c: d["pattern"] for c, d in PUBLISHED.items()}
    patterns["4.1"] = edit(patterns["4.1"])
    patterns["4.3"] = edit(patterns["4.3"]) if "{$." in patterns["4.3"] else patterns["4.3"]
    st = cis_checks(cis_world(t, patterns), t)
    assert st["cis.metric_filters"] == "FAIL"


def test_missing_cis_filters_are_not_a_pass():
    t = make_target()
    assert cis_checks(cis_world(t, {}), t)["cis.metric_filters"] in ("WARN", "FAIL")
    some = {c: d["pattern"] for c, d in list(PUBLISHED.items())[:3]}
    assert cis_checks(cis_world(t, some), t)["cis.metric_filters"] == "FAIL"


def test_cis_alarm_without_action_or_subscriber_is_not_a_pass():
    t = make_target()
    assert cis_checks(cis_world(t, actions=()), t)["cis.alarms"] == "FAIL"
    assert cis_checks(cis_world(t, subscribers=0), t)["cis.topic_subscribers"] != "PASS"


# ----------------------------------------------------------------------- Lambda destination

FN = f"arn:aws:lambda:{HOME}:{ACCT}:function:processor"


def lambda_world(target, statement):
    w = world(target)
    w[("logs", "describe_subscription_filters")] = {"subscriptionFilters": [
        {"filterName": "trailwatch", "destinationArn": FN}]}
    w[("lambda", "get_policy")] = {"Policy": json.dumps({"Statement": [statement]})}
    return w


def perm(principal=f"logs.{HOME}.amazonaws.com", source=GROUP_BARE + ":*", effect="Allow"):
    st = {"Effect": effect, "Principal": {"Service": principal},
          "Action": "lambda:InvokeFunction", "Resource": FN}
    if source:
        st["Condition"] = {"ArnLike": {"AWS:SourceArn": source}}
    return st


@pytest.mark.parametrize("statement,ok", [
    (perm(), True),
    (perm(source=GROUP_BARE), True),
    (perm(source=f"arn:aws:logs:{HOME}:{ACCT}:log-group:*"), True),
    (perm(source=f"arn:aws:logs:{HOME}:{ACCT}:log-group:Other:*"), False),
    (perm(principal="logs.us-west-2.amazonaws.com"), False),
    (perm(principal="events.amazonaws.com"), False),
    (perm(effect="Deny"), False),
])
def test_lambda_destination_must_let_this_log_group_invoke_it(statement, ok):
    t = make_target()
    st = cis_checks(lambda_world(t, statement), t)
    assert (st["subscription.filters"] == "PASS") is ok


def test_unreadable_lambda_policy_fails():
    t = make_target()
    w = lambda_world(t, perm())
    w[("lambda", "get_policy")] = client_error("ResourceNotFoundException", "no policy")
    assert cis_checks(w, t)["subscription.filters"] == "FAIL"


def test_a_check_that_raises_an_aws_error_is_a_fail_not_a_crash():
    from setup.verify import summary
    t = make_target()
    w = world(t)
    w[("iam", "get_role")] = client_error("AccessDenied", "no iam:GetRole")
    clients = FakeClients(CALLER_REGION, w)
    results = run_checks(Context(clients=clients, target=t, now=lambda: NOW))
    failed = [r for r in results if r.status == "FAIL"]
    assert failed and all(r.remediation for r in failed)
    counts = summary(results)
    assert counts == {"pass": sum(r.status == "PASS" for r in results),
                      "warn": sum(r.status == "WARN" for r in results),
                      "fail": len(failed)}
    assert sum(counts.values()) == len(results)


def test_lambda_policy_statements_are_each_considered():
    t = make_target()
    w = lambda_world(t, perm())
    w[("lambda", "get_policy")] = {"Policy": json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "lambda:GetFunction", "Resource": FN},
        perm(principal="events.amazonaws.com"),
        perm()]})}
    assert cis_checks(w, t)["subscription.filters"] == "PASS"
    w[("lambda", "get_policy")] = {"Policy": "{}"}
    assert cis_checks(w, t)["subscription.filters"] == "FAIL"
