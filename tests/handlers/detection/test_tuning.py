"""Tuning as data (issue 20, handlers/detection/tuning.py): per-rule overrides and suppressions
that match only fields the caller cannot forge, with an expiry and a reason."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, date, datetime

import pytest

from handlers.detection.builtin import builtin_rules
from handlers.detection.cis import CIS_CONTROLS
from handlers.detection.tuning import (
    TuningError,
    apply_overrides,
    load_tuning,
    parse_suppressions,
)
from handlers.processor import App
from tests.conftest import Collect, ListLogger, ListMetrics

TODAY = date(2026, 12, 7)
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC).timestamp()


def sup(**fields):
    base = {"rules": ["tw-ssm-send-command"], "expires": "2027-03-31",
            "reason": "Patch Manager runs SendCommand nightly (CHG-1234)"}
    return parse_suppressions([dict(base, **fields)], "rules.json", TODAY)


def event(**over):
    rec = {"eventName": "SendCommand", "recipientAccountId": "111122223333",
           "userAgent": "aws-cli/2.15", "sourceIPAddress": "203.0.113.7",
           "requestParameters": {"documentName": "AWS-RunPatchBaseline"},
           "userIdentity": {"type": "AssumedRole", "accountId": "111122223333",
                            "arn": "arn:aws:sts::111122223333:assumed-role/patching/i-1",
                            "sessionContext": {"sessionIssuer": {
                                "arn": "arn:aws:iam::111122223333:role/patching"}}}}
    rec.update(over)
    return rec


@pytest.mark.parametrize("field", ["userAgent", "user_agent", "sourceIPAddress",
                                   "requestParameters", "eventName"])
def test_suppressions_refuse_fields_the_caller_writes(field):
    with pytest.raises(TuningError, match="cannot match on .*caller cannot forge"):
        sup(**{field: "x"})


@pytest.mark.parametrize("fields,message", [
    ({"reason": ""}, "needs a 'reason'"),
    ({"expires": "soon"}, "needs 'expires'"),
    ({"expires": "2028-12-31"}, "more than 366 days"),
    ({"account": "1234"}, "12-digit account id"),
    ({"invoked_by": "ec2.amazonaws.*"}, "only principal_arn takes a trailing"),
    ({"principal_arn": "*"}, "non-empty value"),
    ({}, "names no field"),
])
def test_a_suppression_needs_a_reason_an_expiry_and_a_field(fields, message):
    with pytest.raises(TuningError, match=message):
        sup(**fields)


@pytest.mark.parametrize("arn", [
    "arn*", "arn:*", "arn:aws:*", "arn:aws:iam::*", "arn:aws:iam::1111222233*",
    "arn:aws:s3:::bucket", "arn:aws:iam::111122223333:role/*/x", "role/patching",
])
def test_a_principal_arn_names_its_account_before_any_star(arn):
    """Review F8: "arn*" suppressed every principal of every account."""
    with pytest.raises(TuningError, match="IAM or STS ARN naming its account"):
        sup(principal_arn=arn)


def test_a_suppression_names_its_rules():
    """Review F8: without 'rules' a suppression applied to every rule."""
    with pytest.raises(TuningError, match="needs 'rules'"):
        parse_suppressions([{"principal_arn": "arn:aws:iam::111122223333:role/patching",
                             "expires": "2027-03-31", "reason": "r"}], "rules.json", TODAY)
    (every,) = sup(rules="*", principal_arn="arn:aws-us-gov:sts::111122223333:assumed-role/p/*")
    assert every.rules == ("*",)


def test_suppression_matches_principal_session_issuer_invoked_by_and_accounts():
    (role,) = sup(principal_arn="arn:aws:iam::111122223333:role/patching")
    assert role.matches("tw-ssm-send-command", event(), NOW)                # session issuer ARN
    assert not role.matches("tw-ssm-start-session", event(), NOW)          # other rule
    (prefix,) = sup(principal_arn="arn:aws:sts::111122223333:assumed-role/patching/*")
    assert prefix.matches("tw-ssm-send-command", event(), NOW)
    (both,) = sup(principal_arn="arn:aws:iam::111122223333:role/patching",
                  recipient_account="444455556666")
    assert not both.matches("tw-ssm-send-command", event(), NOW)           # all must hold
    (svc,) = sup(invoked_by="ssm.amazonaws.com", rules="*")
    assert not svc.matches("x", event(), NOW)
    svc_event = event(userIdentity={"type": "AWSService", "invokedBy": "ssm.amazonaws.com"})
    assert svc.matches("any-rule", svc_event, NOW)
    # a forged user agent or request parameter cannot make a record match
    assert not role.matches("tw-ssm-send-command", event(
        userIdentity={"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/mallory"},
        userAgent="arn:aws:iam::111122223333:role/patching"), NOW)


def test_an_expired_suppression_no_longer_applies():
    (s,) = sup(principal_arn="arn:aws:iam::111122223333:role/patching", expires="2026-12-31")
    end = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert s.matches("tw-ssm-send-command", event(), end - 1)
    assert not s.matches("tw-ssm-send-command", event(), end)


def test_overrides_change_severity_and_windows_never_the_pattern():
    rules = builtin_rules()
    tuned = apply_overrides(rules, {"cis-4.10": {"severity": "low", "window_minutes": 60,
                                                 "dedup_key": "userIdentity.arn"}}, "r.json")
    (before,) = [r for r in rules if r.id == "cis-4.10"]
    (after,) = [r for r in tuned if r.id == "cis-4.10"]
    assert after.severity == "LOW" and after.doc["severity"] == "LOW"
    assert after.window_minutes == 60 and after.dedup_key == ("userIdentity.arn",)
    assert after.pattern.text == before.pattern.text
    # the CIS metric filters stay the Security Hub strings verbatim
    assert {r.id: r.pattern.text for r in tuned if r.source == "cis"} == \
        {c.rule_id: c.pattern for c in CIS_CONTROLS}
    with pytest.raises(TuningError, match="unknown rule"):
        apply_overrides(rules, {"nope": {"severity": "LOW"}}, "r.json")
    with pytest.raises(TuningError, match="may change only"):
        apply_overrides(rules, {"cis-4.10": {"pattern": "{ $.x = 1 }"}}, "r.json")
    with pytest.raises(TuningError, match="window_minutes"):
        apply_overrides(rules, {"cis-4.10": {"window_minutes": -1}}, "r.json")


def test_a_bad_section_is_reported_and_skipped_when_lenient():
    errors: list[str] = []
    base = builtin_rules()
    rules, sups = load_tuning(base, {"source": "r.json", "tuning": {"x": {}},
                                     "suppressions": [{"userAgent": "x"}]}, errors)
    assert len(errors) == 2 and sups == [] and rules is base


# ------------------------------------------------------------------------------ the processor

def _payload(records):
    env = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "CloudTrail/org",
           "logStream": "s", "subscriptionFilters": ["f"],
           "logEvents": [{"id": f"le-{n}", "timestamp": int(NOW * 1000), "message": json.dumps(r)}
                         for n, r in enumerate(records)]}
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(env).encode())).decode()}}


def test_processor_applies_suppressions_from_the_rules_file(tmp_path):
    rec = dict(event(), eventSource="ssm.amazonaws.com", eventVersion="1.08", eventID="e1",
               eventTime="2026-12-07T11:59:00Z")
    other = dict(rec, eventID="e2", userIdentity={"type": "IAMUser", "accountId": "111122223333",
                                                  "arn": "arn:aws:iam::111122223333:user/eve"})
    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"rules": [], "suppressions": [{
        "rules": ["tw-ssm-send-command"], "principal_arn": "arn:aws:iam::111122223333:role/patching",
        "expires": "2027-03-31", "reason": "Patch Manager (CHG-1234)"}]}))
    app = App.from_env({"RULES_FILE": str(f)}, clock=lambda: NOW, metrics_sink=ListMetrics(),
                       log=ListLogger(), emit=lambda line: None)
    app.sinks = [Collect()]
    out = app.handle(_payload([rec, other]))
    assert [a["event"]["eventID"] for a in app.sinks[0].alerts] == ["e2"]
    assert out["alerts_windowed"] == 1 and app.rule_errors == []


def test_processor_reports_a_forgeable_suppression_and_applies_none(tmp_path):
    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"suppressions": [{"userAgent": "Patch*", "expires": "2027-01-01",
                                               "reason": "x"}], "rules": []}))
    metrics = ListMetrics()
    app = App.from_env({"RULES_FILE": str(f)}, clock=lambda: NOW, metrics_sink=metrics,
                       log=ListLogger(), emit=lambda line: None)
    assert len(app.rule_errors) == 1 and "caller cannot forge" in app.rule_errors[0]
    app.sinks = [Collect()]
    app.handle(_payload([dict(event(), eventSource="ssm.amazonaws.com", eventVersion="1.08",
                              eventID="e1", eventTime="2026-12-07T11:59:00Z")]))
    assert len(app.sinks[0].alerts) == 1 and metrics.total("RuleErrors") == 1
