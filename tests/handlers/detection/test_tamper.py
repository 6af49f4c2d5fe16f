"""Tamper rules (issue 10): every rule matches its match samples and none of its no_match samples,
through the same index the processor uses; names come from the processor's environment."""

from __future__ import annotations

import pytest

from handlers.pipeline import iter_cases
from handlers.detection.rules import build_index
from handlers.detection.builtin import builtin_rules
from handlers.detection.tamper import (FUNCTION_EVENTS, LOG_GROUP_EVENTS, ROLE_EVENTS,
                                       TRAIL_EVENTS, TamperConfigError, tamper_rules)

ENV = {"TRAIL_NAME": "org-trail", "TRAIL_LOG_GROUP_NAME": "CloudTrail/org-trail",
       "DELIVERY_ROLE_NAME": "trailwatch-cwl-org-trail",
       "AWS_LAMBDA_FUNCTION_NAME": "trailwatch-processor"}
RULES = tamper_rules(ENV)
INDEX = build_index(builtin_rules(ENV))
CASES = list(iter_cases(RULES))


def test_builtin_rules_include_the_tamper_rules_high_with_attack():
    ids = {r.id for r in builtin_rules(ENV) if r.source == "tamper"}
    assert ids == {"trailwatch-tamper-trail", "trailwatch-tamper-log-group",
                   "trailwatch-tamper-cis-monitoring", "trailwatch-tamper-delivery-role",
                   "trailwatch-tamper-processor"}
    for r in RULES:
        assert r.severity == "HIGH" and r.doc["attack"]["tactics"] == ["TA0005"]
        assert r.tests["match"] and r.tests["no_match"]


@pytest.mark.parametrize("rule,kind,record", CASES,
                         ids=[f"{r.id}-{k}-{rec['eventName']}-{i}"
                              for i, (r, k, rec) in enumerate(CASES)])
def test_sample(rule, kind, record):
    hit = rule.id in {r.id for r in INDEX.matches(record)}
    assert hit == (kind == "match")


@pytest.mark.parametrize("rule_id,events", [
    ("trailwatch-tamper-trail", TRAIL_EVENTS),
    ("trailwatch-tamper-log-group", LOG_GROUP_EVENTS),
    ("trailwatch-tamper-delivery-role", ROLE_EVENTS),
    ("trailwatch-tamper-processor", FUNCTION_EVENTS),
])
def test_every_listed_event_has_a_matching_sample(rule_id, events):
    (rule,) = [r for r in RULES if r.id == rule_id]
    covered = {rec["eventName"] for rec in rule.tests["match"]}
    for name in events:
        assert any(c == name or c.startswith(name + "20") for c in covered), name


def test_delete_alarms_on_cis_alarms_and_metric_filter():
    events = {rec["eventName"] for r in RULES if r.id == "trailwatch-tamper-cis-monitoring"
              for rec in r.tests["match"]}
    assert events == {"DeleteMetricFilter", "DeleteAlarms"}


def test_unnamed_resources_are_not_watched():
    assert tamper_rules({}) == [] and tamper_rules(None) == []
    only_fn = tamper_rules({"AWS_LAMBDA_FUNCTION_NAME": "p"})
    assert [r.id for r in only_fn] == ["trailwatch-tamper-processor"]


def test_hostile_name_in_environment_is_refused():
    with pytest.raises(TamperConfigError):
        tamper_rules({"TRAIL_LOG_GROUP_NAME": 'x" || $.eventName = *'})


def test_processor_raises_tamper_alert_with_env(tmp_path):
    import base64
    import gzip
    import json

    from handlers.processor import App
    from tests.conftest import ListLogger, ListMetrics
    rec = next(r for r in RULES if r.id == "trailwatch-tamper-delivery-role").tests["match"][0]
    env = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "g",
           "logStream": "s", "subscriptionFilters": ["f"],
           "logEvents": [{"id": "1", "timestamp": 1768035600000, "message": json.dumps(rec)}]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(env).encode()))
                         .decode()}}
    log = ListLogger()
    app = App.from_env(ENV, metrics_sink=ListMetrics(), log=log, emit=lambda line: None,
                       clock=lambda: 1768035660.0)
    assert app.handle(event)["alerts"] == 2       # the CIS IAM-policy-change rule fires too
    (alert,) = [e["alert"] for lvl, m, e in log.records if m == "alert"
                and e["alert"]["rule"]["source"] == "tamper"]
    assert alert["rule"]["id"] == "trailwatch-tamper-delivery-role"
    assert alert["rule"]["severity"] == "HIGH" and alert["rule"]["source"] == "tamper"


# ------------------------------------------------------------------- issue 24: items 1 and 5
# The template passes TrailName (a name or an ARN, as its AllowedPattern accepts) and
# DeliveryRoleName (empty: the role `trailwatch apply` creates) to the processor unchanged.

ARN = "arn:aws:cloudtrail:eu-west-1:111122223333:trail/org-trail"
LONG = [("a" * n) for n in (3, 44, 49, 50, 64, 128)]


def _watched(rules, rule_id):
    (rule,) = [r for r in rules if r.id == rule_id]
    return rule


def test_trail_given_as_an_arn_is_watched_by_its_name():
    """Observed on 5bb8a96: TamperConfigError (the template's TRAIL_NAME was the ARN's
    `arn:aws:cloudtrail:<r>:<acct>:` piece, and any ARN is refused)."""
    rules = tamper_rules({"TRAIL_NAME": ARN})
    trail = _watched(rules, "trailwatch-tamper-trail")
    assert "org-trail" in trail.title and "arn:" not in trail.title
    index = build_index([trail])
    for case in trail.tests["match"]:
        assert index.matches(case), case
    assert index.matches({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging",
                          "requestParameters": {"name": ARN}})


@pytest.mark.parametrize("name", LONG + ["org-trail", "My.Trail_1"])
@pytest.mark.parametrize("ref", ["name", "arn"])
def test_default_delivery_role_is_the_role_the_cli_creates(name, ref):
    """Item 5: the template's default was trailwatch-cwl-<trail>; the CLI creates
    trailwatch-cwl-<trail>-<home region> (hashed when over 64 characters). Observed on 5bb8a96:
    names of 50+ characters made a role name over 64 and the processor raised."""
    from setup.wiring.models import default_role_name
    region = "ap-southeast-2"
    value = f"arn:aws:cloudtrail:{region}:111122223333:trail/{name}" if ref == "arn" else name
    rules = tamper_rules({"TRAIL_NAME": value, "AWS_REGION": region})
    role = _watched(rules, "trailwatch-tamper-delivery-role")
    expected = default_role_name(name, region)
    assert len(expected) <= 64
    assert f'$.requestParameters.roleName = "{expected}"' in role.pattern.text
    assert all(c["requestParameters"]["roleName"] == expected for c in role.tests["match"])


def test_an_explicit_delivery_role_wins_over_the_default():
    rules = tamper_rules({"TRAIL_NAME": "org-trail", "DELIVERY_ROLE_NAME": "TeamRole",
                          "AWS_REGION": "us-east-1"})
    assert '"TeamRole"' in _watched(rules, "trailwatch-tamper-delivery-role").pattern.text


def test_a_value_that_cannot_be_configured_skips_only_that_rule_with_an_error():
    errors: list[str] = []
    env = dict(ENV, TRAIL_LOG_GROUP_NAME='x" || $.eventName = *',
               DELIVERY_ROLE_NAME="trailwatch-cwl-" + "r" * 60)
    rules = tamper_rules(env, errors=errors)
    assert {r.id for r in rules} == {"trailwatch-tamper-trail", "trailwatch-tamper-processor"}
    assert len(errors) == 2
    assert any("TRAIL_LOG_GROUP_NAME" in e for e in errors)
    assert any("DELIVERY_ROLE_NAME" in e for e in errors)


@pytest.mark.parametrize("env,bad", [
    # what the template produced on 5bb8a96 for TrailName=<ARN>
    ({"TRAIL_NAME": "arn:aws:cloudtrail:us-east-1:111122223333:",
      "DELIVERY_ROLE_NAME": f"trailwatch-cwl-{ARN}"}, 2),
    # ... and for a 60-character name
    ({"TRAIL_NAME": "t" * 60, "DELIVERY_ROLE_NAME": "trailwatch-cwl-" + "t" * 60}, 1),
    ({"TRAIL_LOG_GROUP_NAME": 'x" || $.eventName = *'}, 1),
])
def test_processor_degrades_instead_of_crashing_on_a_bad_tamper_value(env, bad):
    """Observed on 5bb8a96: App.from_env raised TamperConfigError on every invocation (no alert
    until a redeploy). Now: the rule is skipped, an error is logged, RuleErrors is counted and
    every other rule still runs."""
    import base64
    import gzip
    import json

    from handlers.processor import App
    from tests.conftest import ListLogger, ListMetrics
    log, metrics = ListLogger(), ListMetrics()
    app = App.from_env(dict(env, AWS_LAMBDA_FUNCTION_NAME="trailwatch-processor"),
                       metrics_sink=metrics, log=log, emit=lambda line: None,
                       clock=lambda: 1768035660.0)
    assert [m for lvl, m, e in log.records if lvl == "error"] == ["rule skipped"] * bad
    rec = {"eventVersion": "1.09", "eventSource": "cloudtrail.amazonaws.com",
           "eventName": "StopLogging", "eventTime": "2026-01-10T09:00:00Z",
           "eventID": "e1", "recipientAccountId": "111122223333", "awsRegion": "us-east-1",
           "userIdentity": {"type": "Root", "arn": "arn:aws:iam::111122223333:root"},
           "requestParameters": {"name": "org-trail"}}
    data = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "g",
            "logStream": "s", "subscriptionFilters": ["f"],
            "logEvents": [{"id": "1", "timestamp": 1768035600000, "message": json.dumps(rec)}]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(data).encode()))
                         .decode()}}
    assert app.handle(event)["alerts"] >= 1        # CIS 4.5 (CloudTrail changes) still fires
    assert metrics.total("RuleErrors") == bad
