"""CIS monitoring controls pinned to an independent copy of the published text (trap 18).

``tests/data/cis_patterns.json`` is transcribed from aws-facts.md section 7 (the Security Hub
strings for CloudWatch.1-14 and the CIS v2.0.0 text for 4.15). It is never generated from or
compared with ``handlers/detection/cis.py``'s constants by construction: the code is checked against it.

Besides the exact strings, every term of every pattern gets a record of its own: a dropped term
fails a "must match" case, an added event name or a dropped conjunct fails a "must not match" case.
The cases carried by the built-in rules themselves (``handlers/detection/cis_cases.json`` and any other
built-in rule's ``tests``) run here too.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from handlers.detection.cis import CIS_CONTROLS
from handlers.pipeline import iter_cases
from handlers.detection.rules import build_index
from handlers.detection.builtin import builtin_rules

DATA = json.loads((Path(__file__).resolve().parents[2] / "data" / "cis_patterns.json").read_text())["controls"]
CIS_IDS = sorted(DATA, key=lambda c: int(c.split(".")[1]))


def published_event_names(cis: str) -> list[str]:
    return re.findall(r'\$\.eventName\s*=\s*"?([A-Za-z]+)"?', DATA[cis]["pattern"])


# The conjunct every event-name control adds (written here from the published text, not parsed).
EVENT_SOURCE = {"4.7": "kms.amazonaws.com", "4.8": "s3.amazonaws.com",
                "4.9": "config.amazonaws.com", "4.15": "organizations.amazonaws.com"}
NAME_LIST_CONTROLS = ["4.4", "4.5", "4.7", "4.8", "4.9", "4.10", "4.11", "4.12", "4.13", "4.14",
                      "4.15"]
# Names an "added term" mutation would plausibly use: every published name plus near misses.
NEAR_MISSES = sorted({n for c in NAME_LIST_CONTROLS for n in published_event_names(c)} | {
    "HeadBucket", "GetBucketPolicy", "PutBucketTagging", "PutBucketVersioning", "ListPolicies",
    "GetPolicy", "TagPolicy", "DescribeTrails", "GetTrailStatus", "PutEventSelectors",
    "EnableKey", "CancelKeyDeletion", "CreateKey", "StartConfigurationRecorder",
    "DescribeSecurityGroups", "ModifySecurityGroupRules", "CreateVpcEndpoint", "AssociateRouteTable",
    "CreateNatGateway", "ListAccounts", "DescribeOrganization", "ConsoleLogin", "GetObject"})

BASE = {
    "eventVersion": "1.11",
    "userIdentity": {"type": "IAMUser", "accountId": "111122223333", "userName": "alice",
                     "arn": "arn:aws:iam::111122223333:user/alice"},
    "eventTime": "2026-11-20T10:00:00Z",
    "eventSource": "ec2.amazonaws.com",
    "eventName": "DescribeInstances",
    "awsRegion": "eu-west-1",
    "sourceIPAddress": "198.51.100.7",
    "userAgent": "aws-cli/2.15.0",
    "requestParameters": {},
    "responseElements": None,
    "eventID": "0f2b3c4d-0000-4000-8000-000000000001",
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "111122223333",
    "eventCategory": "Management",
}


def record(**fields) -> dict:
    rec = copy.deepcopy(BASE)
    for key, value in fields.items():
        path = key.split("__")
        node = rec
        for p in path[:-1]:
            node = node.setdefault(p, {})
        if value is DROP:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return rec


DROP = object()
RULES = builtin_rules(None)
INDEX = build_index(RULES)


def cis_hits(rec: dict) -> set[str]:
    return {r.cis for r in INDEX.matches(rec) if getattr(r, "cis", None)}


# ----------------------------------------------------------------------- exact strings

def test_test_data_is_complete():
    assert len(DATA) == 15
    assert {DATA[c]["securityhub"] for c in DATA} - {None} == {f"CloudWatch.{n}"
                                                               for n in range(1, 15)}


@pytest.mark.parametrize("cis", CIS_IDS)
def test_catalog_pattern_is_the_published_string(cis):
    (control,) = [c for c in CIS_CONTROLS if c.cis == cis]
    assert control.pattern == DATA[cis]["pattern"]
    assert control.securityhub == DATA[cis]["securityhub"]


@pytest.mark.parametrize("cis", CIS_IDS)
def test_processor_rule_compiles_the_published_string(cis):
    (rule,) = [r for r in RULES if getattr(r, "cis", None) == cis]
    assert rule.pattern.text == DATA[cis]["pattern"]
    assert rule.securityhub == DATA[cis]["securityhub"]


def test_catalog_has_no_extra_control():
    assert sorted(c.cis for c in CIS_CONTROLS) == sorted(DATA)


# ----------------------------------------------------------------------- the rules' own cases

def test_every_builtin_rule_case_runs_and_holds():
    cases = list(iter_cases(RULES))
    assert cases, "built-in rules carry no test cases"
    failures = []
    for rule, kind, rec in cases:
        hit = rule in INDEX.matches(rec)
        if hit != (kind == "match"):
            failures.append((rule.id, kind, rec.get("eventName")))
    assert failures == []


@pytest.mark.parametrize("cis", CIS_IDS)
def test_every_cis_rule_carries_match_and_no_match_cases(cis):
    (rule,) = [r for r in RULES if getattr(r, "cis", None) == cis]
    assert rule.tests.get("match") and rule.tests.get("no_match")


# ----------------------------------------------------------------------- one case per term

NAME_CASES = [(c, n) for c in NAME_LIST_CONTROLS for n in published_event_names(c)]


@pytest.mark.parametrize("cis,name", NAME_CASES, ids=[f"{c}-{n}" for c, n in NAME_CASES])
def test_each_published_event_name_matches_its_control(cis, name):
    rec = record(eventName=name, eventSource=EVENT_SOURCE.get(cis, "iam.amazonaws.com"))
    assert cis in cis_hits(rec)


@pytest.mark.parametrize("cis", [c for c in NAME_LIST_CONTROLS if c in EVENT_SOURCE])
def test_event_source_conjunct_is_required(cis):
    for name in published_event_names(cis):
        assert cis not in cis_hits(record(eventName=name, eventSource="ec2.amazonaws.com")), name
        assert cis not in cis_hits(record(eventName=name, eventSource=DROP)), name


@pytest.mark.parametrize("cis", NAME_LIST_CONTROLS)
def test_no_unpublished_event_name_matches(cis):
    published = set(published_event_names(cis))
    source = EVENT_SOURCE.get(cis, "iam.amazonaws.com")
    wrong = [n for n in NEAR_MISSES if n not in published
             and cis in cis_hits(record(eventName=n, eventSource=source))]
    assert wrong == []


def test_name_lists_have_the_published_lengths():
    # Counted by hand from the Security Hub / CIS text.
    assert {c: len(published_event_names(c)) for c in NAME_LIST_CONTROLS} == {
        "4.4": 16, "4.5": 5, "4.7": 2, "4.8": 9, "4.9": 4, "4.10": 6, "4.11": 6, "4.12": 6,
        "4.13": 7, "4.14": 11, "4.15": 18}


ROOT = {"userIdentity": {"type": "Root", "arn": "arn:aws:iam::111122223333:root",
                         "accountId": "111122223333", "principalId": "111122223333"}}


@pytest.mark.parametrize("fields,expected", [
    (dict(ROOT), True),
    (dict(ROOT, eventType="AwsConsoleSignIn", eventName="ConsoleLogin"), True),
    ({}, False),                                                            # type term
    (dict(ROOT, userIdentity__invokedBy="s3.amazonaws.com"), False),        # NOT EXISTS term
    (dict(ROOT, eventType="AwsServiceEvent"), False),                       # != term
])
def test_root_usage_terms(fields, expected):
    assert ("4.3" in cis_hits(record(**fields))) is expected


@pytest.mark.parametrize("code,expected", [
    ("Client.UnauthorizedOperation", True), ("UnauthorizedOperation", True),
    ("AccessDenied", True), ("AccessDeniedException", True),
    ("UnauthorizedOperationX", False), ("NotAccessDenied", False), ("ThrottlingException", False),
    (DROP, False),
])
def test_unauthorized_api_call_terms(code, expected):
    assert ("4.1" in cis_hits(record(errorCode=code))) is expected


def test_unauthorized_calls_match_published_form_even_for_headbucket():
    # Security Hub's CloudWatch.2 string has no HeadBucket / delivery.logs exclusion.
    assert "4.1" in cis_hits(record(errorCode="AccessDenied", eventName="HeadBucket",
                                    eventSource="s3.amazonaws.com"))
    assert "4.1" in cis_hits(record(errorCode="AccessDenied",
                                    sourceIPAddress="delivery.logs.amazonaws.com"))


NO_MFA = dict(eventName="ConsoleLogin", eventType="AwsConsoleSignIn",
              eventSource="signin.amazonaws.com", additionalEventData__MFAUsed="No",
              responseElements={"ConsoleLogin": "Success"})


@pytest.mark.parametrize("fields,expected", [
    (NO_MFA, True),
    (dict(NO_MFA, eventName="CheckMfa"), False),                       # eventName term
    (dict(NO_MFA, additionalEventData__MFAUsed="Yes"), False),          # MFAUsed term
    (dict(NO_MFA, userIdentity__type="AssumedRole"), False),            # IAMUser term
    (dict(NO_MFA, responseElements={"ConsoleLogin": "Failure"}), False),  # Success term
])
def test_console_login_without_mfa_terms(fields, expected):
    assert ("4.2" in cis_hits(record(**fields))) is expected


FAILED = dict(eventName="ConsoleLogin", eventType="AwsConsoleSignIn",
              eventSource="signin.amazonaws.com", errorMessage="Failed authentication",
              responseElements={"ConsoleLogin": "Failure"})


@pytest.mark.parametrize("fields,expected", [
    (FAILED, True),
    (dict(FAILED, eventName="GetSigninToken"), False),
    (dict(FAILED, errorMessage="No username found in supplied account"), False),
    (dict(FAILED, errorMessage=DROP), False),
])
def test_console_authentication_failure_terms(fields, expected):
    assert ("4.6" in cis_hits(record(**fields))) is expected


def test_a_plain_read_only_call_hits_no_cis_control():
    assert cis_hits(record()) == set()


# ----------------------------------------------------------------------- the fact sheet

def test_test_data_is_a_faithful_copy_of_the_fact_sheet():
    """The transcription itself is checked against aws-facts.md section 7 when it is present."""
    from tests.conftest import facts_text
    section = facts_text().split("## 7. CIS monitoring controls")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| CloudWatch.") or
            ln.startswith("| —")]
    published = {}
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        pattern = re.search(r"`(\{.*\})`", cells[3].replace("\\|", "|")).group(1)
        published[re.findall(r"4\.\d+", cells[1])[-1]] = (
            cells[0] if cells[0].startswith("CloudWatch.") else None, pattern)
    assert published == {c: (d["securityhub"], d["pattern"]) for c, d in DATA.items()}
