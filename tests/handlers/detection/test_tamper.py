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
