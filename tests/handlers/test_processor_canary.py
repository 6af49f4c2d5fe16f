"""The processor recognises trailwatch's canary (verify --canary): only the canary's own
PutMetricFilter (exact name, pattern and metric) on the very log group the batch came from, or,
from earlier trailwatch versions, a TagResource that sets exactly the trailwatch:canary tag
there."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from handlers.canary import CANARY_TAG, canary_filter, canary_nonce
from handlers.detection.patterns import compile_pattern
from handlers.pipeline import Pipeline
from handlers.processor import App
from handlers.detection.rules import Rule
from tests.conftest import ListMetrics

NOW = 1_763_640_000.0
ACCT = "111122223333"
GROUP = "CloudTrail/org-trail"


class Log:
    def __init__(self):
        self.records = []

    def info(self, msg, extra=None):
        self.records.append(("info", msg, extra or {}))

    def error(self, msg, extra=None):
        self.records.append(("error", msg, extra or {}))

    warning = error


NONCE = "tw-" + "0123456789abcdef" * 2           # the shape new_nonce() makes

def tag_record(group=GROUP, account=ACCT, tags=None, event="TagResource", **extra):
    params = {"resourceArn": f"arn:aws:logs:us-east-1:{account}:log-group:{group}",
              "tags": tags if tags is not None else {CANARY_TAG: NONCE}}
    if event == "TagLogGroup":
        params = {"logGroupName": group, "tags": params["tags"]}
    return {"eventVersion": "1.09", "eventSource": "logs.amazonaws.com", "eventName": event,
            "eventTime": "2025-11-20T11:58:00Z", "eventID": "e1", "awsRegion": "us-east-1",
            "recipientAccountId": account, "requestParameters": params, **extra}


def envelope(records, group=GROUP, owner=ACCT):
    return {"messageType": "DATA_MESSAGE", "owner": owner, "logGroup": group,
            "logStream": f"{ACCT}_CloudTrail_us-east-1", "subscriptionFilters": ["f"],
            "logEvents": [{"id": str(i), "timestamp": int((NOW - 30) * 1000),
                           "message": json.dumps(r)} for i, r in enumerate(records)]}


def wrap(env):
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()}}


TAG_RULE = Rule(id="any-tagging", title="tagging", severity="LOW",
                pattern=compile_pattern("{ $.eventName = TagResource || $.eventName = TagLogGroup }"))


def test_canary_on_own_group_logs_metric_and_no_alert():
    emitted = []
    log = Log()
    app = App(Pipeline([TAG_RULE], clock=lambda: NOW), [], None, metrics_sink=ListMetrics(),
              log=log, emit=lambda line: emitted.append(json.loads(line)))
    out = app.handle(wrap(envelope([tag_record()])))
    assert out["alerts"] == 0 and out["records"] == 1
    (obs,) = [e for lvl, m, e in log.records if m == "canary_observed"]
    assert obs["nonce"] == NONCE
    assert obs["delivery_lag_seconds"] == pytest.approx(NOW - 30 - 1763639880.0)
    assert obs["receipt_lag_seconds"] == pytest.approx(30.0)
    lags = [v for doc in emitted for v in doc.get("CanaryLag", [])]
    assert lags == [pytest.approx(obs["delivery_lag_seconds"] + 30.0)]
    assert not [r for r in log.records if r[1] == "alert"]


@pytest.mark.parametrize("record,env", [
    (tag_record(group="CloudTrail/other"), {}),                       # another log group
    (tag_record(account="999999999999"), {}),                         # same name, other account
    (tag_record(tags={CANARY_TAG: NONCE, "owner": "x"}), {}),      # more than the canary tag
    (tag_record(tags={"trailwatch:canaryx": "tw"}), {}),              # not the key
    (tag_record(errorCode="AccessDenied"), {}),                       # failed call
    (dict(tag_record(), eventSource="evil.amazonaws.com"), {}),
    (tag_record(), {"group": "CloudTrail/other"}),                    # batch from another group
])
def test_canary_shaped_events_elsewhere_are_ordinary(record, env):
    log = Log()
    app = App(Pipeline([TAG_RULE], clock=lambda: NOW), [], None, metrics_sink=ListMetrics(),
              log=log, emit=lambda line: None)
    out = app.handle(wrap(envelope([record], group=env.get("group", GROUP))))
    assert out["alerts"] == 1
    assert not [r for r in log.records if r[1] == "canary_observed"]


def test_legacy_tag_log_group_and_star_arn():
    env = envelope([])
    assert canary_nonce(tag_record(event="TagLogGroup"), env) == NONCE
    rec = tag_record()
    rec["requestParameters"]["resourceArn"] += ":*"
    assert canary_nonce(rec, env) == NONCE
    assert canary_nonce({"eventName": "TagResource"}, env) is None


# ------------------------------------------------------------------------------ PutMetricFilter
# The canary's call since issue 24: PutMetricFilter is on the CloudWatch Logs User Guide's list of
# actions CloudTrail logs; TagResource/TagLogGroup are not.

def filter_record(group=GROUP, account=ACCT, nonce=NONCE, **params):
    p = {"logGroupName": group, **canary_filter(nonce), **params}
    return {"eventVersion": "1.09", "eventSource": "logs.amazonaws.com",
            "eventName": "PutMetricFilter", "eventTime": "2025-11-20T11:58:00Z", "eventID": "e2",
            "awsRegion": "us-east-1", "recipientAccountId": account, "requestParameters": p}


FILTER_RULE = Rule(id="metric-filters", title="metric filter changed", severity="LOW",
                   pattern=compile_pattern("{ $.eventName = PutMetricFilter }"))


def test_the_canarys_metric_filter_on_its_own_group_is_observed_not_alerted():
    log = Log()
    app = App(Pipeline([FILTER_RULE], clock=lambda: NOW), [], None, metrics_sink=ListMetrics(),
              log=log, emit=lambda line: None)
    out = app.handle(wrap(envelope([filter_record()])))
    assert out["alerts"] == 0 and out["records"] == 1
    (obs,) = [e for lvl, m, e in log.records if m == "canary_observed"]
    assert obs["nonce"] == NONCE


@pytest.mark.parametrize("record", [
    filter_record(group="CloudTrail/other"),                                  # another group
    filter_record(account="999999999999"),                                    # another account
    filter_record(filterPattern='{ $.eventName = "ConsoleLogin" }'),          # a real pattern
    filter_record(filterName="cis-root-usage"),                               # not the name
    filter_record(nonce=""),                                                  # no nonce
    filter_record(metricTransformations=[{"metricName": "RootUsage",         # another metric
                                          "metricNamespace": "CISBenchmark", "metricValue": "1"}]),
    filter_record(metricTransformations=[                                     # two metrics
        canary_filter(NONCE)["metricTransformations"][0],
        {"metricName": "x", "metricNamespace": "y", "metricValue": "1"}]),
    filter_record(metricTransformations=[{**canary_filter(NONCE)["metricTransformations"][0],
                                          "dimensions": {"who": "$.userIdentity.arn"}}]),
    dict(filter_record(), errorCode="LimitExceededException"),                # failed call
    dict(filter_record(), eventName="DeleteMetricFilter"),                    # the clean-up
])
def test_metric_filter_calls_other_than_the_canarys_are_ordinary(record):
    log = Log()
    rule = Rule(id="metric-filters", title="metric filter changed", severity="LOW",
                pattern=compile_pattern("{ $.eventName = PutMetricFilter || "
                                        "$.eventName = DeleteMetricFilter }"))
    app = App(Pipeline([rule], clock=lambda: NOW), [], None, metrics_sink=ListMetrics(),
              log=log, emit=lambda line: None)
    out = app.handle(wrap(envelope([record])))
    assert out["alerts"] == 1
    assert not [r for r in log.records if r[1] == "canary_observed"]


# ----------------------------------------------------------------------------------- hostile input

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GROUP_CHARS = "abcXYZ019._-/#"     # the characters a log group name may hold
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(event_name=st.sampled_from(["TagResource", "TagLogGroup", "UntagResource",
                                   "PutMetricFilter", "DeleteMetricFilter"]) | JSON,
       params=JSON | st.fixed_dictionaries({"resourceArn": JSON, "tags": JSON})
       | st.fixed_dictionaries({
           "logGroupName": st.sampled_from([GROUP, "CloudTrail/other"]) | JSON,
           "filterName": st.sampled_from(["trailwatch-canary-tw-1", "trailwatch-canary-",
                                          "cis-root"]) | JSON,
           "filterPattern": st.sampled_from([canary_filter("tw-1")["filterPattern"], ""]) | JSON,
           "metricTransformations": st.sampled_from([
               canary_filter("tw-1")["metricTransformations"],
               [{**canary_filter("tw-1")["metricTransformations"][0], "dimensions": {"a": "$.b"}}],
           ]) | JSON}),
       owner=JSON, group=JSON)
def test_canary_recognition_never_raises_and_never_widens(event_name, params, owner, group):
    """Whatever the record holds, recognition does not crash, and a record is a canary only when
    it sets exactly the canary tag on the batch's own group in the owner's account."""
    rec = {"eventName": event_name, "eventSource": "logs.amazonaws.com",
           "requestParameters": params, "recipientAccountId": ACCT}
    env = {"logGroup": group, "owner": owner}
    nonce = canary_nonce(rec, env)
    if nonce is not None:
        assert isinstance(group, str) and group
        if event_name == "PutMetricFilter":
            expected = canary_filter(nonce)
            assert params["logGroupName"] == group
            assert params["filterName"] == expected["filterName"]
            assert params["filterPattern"] == expected["filterPattern"]
        else:
            assert isinstance(params, dict) and list(params["tags"]) == [CANARY_TAG]
            assert params["tags"][CANARY_TAG] == nonce


@settings(max_examples=200, deadline=None)
@given(group=st.text(GROUP_CHARS, min_size=1, max_size=30),
       other=st.text(GROUP_CHARS, min_size=1, max_size=30))
def test_canary_on_another_group_is_never_recognised(group, other):
    if group == other:
        return
    rec = tag_record(group=other)
    assert canary_nonce(rec, {"logGroup": group, "owner": ACCT}) is None


def test_a_canary_shaped_call_by_root_is_alerted_not_swallowed():
    """Review: any caller's canary-shaped PutMetricFilter skipped every rule, root usage too."""
    root = dict(filter_record(), eventType="AwsApiCall",
                userIdentity={"type": "Root", "arn": f"arn:aws:iam::{ACCT}:root",
                              "accountId": ACCT, "principalId": ACCT})
    assert canary_nonce(root, {"logGroup": GROUP, "owner": ACCT}) is None
    rule = Rule(id="root", title="root", severity="HIGH",
                pattern=compile_pattern('{ $.userIdentity.type = "Root" }'))
    app = App(Pipeline([rule], clock=lambda: NOW), [], None, metrics_sink=ListMetrics(),
              log=Log(), emit=lambda line: None)
    assert app.handle(wrap(envelope([root])))["alerts"] == 1


@pytest.mark.parametrize("nonce", [
    'tw-x" || $.eventName = "ConsoleLogin',     # a pattern that matches real records
    "tw-abc", "tw-" + "0" * 31, "tw-" + "0" * 32 + "-other", "TW-" + "0" * 32, "x" * 40,
])
def test_only_nonces_the_cli_makes_are_canaries(nonce):
    env = {"logGroup": GROUP, "owner": ACCT}
    assert canary_nonce(filter_record(nonce=nonce), env) is None
    assert canary_nonce(tag_record(tags={CANARY_TAG: nonce}), env) is None
    assert canary_nonce(filter_record(nonce=NONCE + "-member"), env) == NONCE + "-member"
