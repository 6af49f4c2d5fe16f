"""The local IAM evaluator, case by case against IAM's documented evaluation logic.

Expected results are IAM's: an explicit Deny wins; Allow needs a matching Action (or not a
NotAction) and a matching Resource (or not a NotResource); action names are case-insensitive,
resource ARNs are case-sensitive; ``*`` matches any run of characters (``:`` and ``/`` included),
``?`` exactly one. A statement with a Condition cannot be judged without the request, so a
conditional Allow never counts as allowed (but is reported as conditional) and a conditional
Deny counts as a deny. Permission boundaries are not modelled by ``evaluate`` (it takes the role's
own documents only), so there is no boundary case here.
"""

from __future__ import annotations

import pytest

from setup.wiring.models import stream_policy, trust_policy
from setup.policy_eval import as_list, evaluate, matches_any

STREAM = ("arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail/Main:log-stream:"
          "111111111111_CloudTrail_us-east-2")
MEMBER = ("arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail/Main:log-stream:"
          "o-exampleorgid_222222222222_CloudTrail_us-east-2")
GROUP = "arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail/Main"


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(**kw):
    return dict({"Effect": "Allow"}, **kw)


def deny(**kw):
    return dict({"Effect": "Deny"}, **kw)


def allowed(documents, action, resource=None, principal=None):
    return evaluate(documents, action, resource, principal).allowed


# ----------------------------------------------------------------------- Allow / implicit deny

def test_empty_policy_is_an_implicit_deny():
    d = evaluate([doc()], "logs:PutLogEvents", STREAM)
    assert (d.allowed, d.reason, d.conditional) == (False, "implicit-deny", False)


def test_plain_allow():
    d = evaluate([doc(allow(Action="logs:PutLogEvents", Resource=STREAM))],
                 "logs:PutLogEvents", STREAM)
    assert (d.allowed, d.reason) == (True, "allow")


def test_statement_may_be_a_single_object():
    assert allowed([{"Statement": allow(Action="logs:PutLogEvents", Resource="*")}],
                   "logs:PutLogEvents", STREAM)


def test_malformed_statements_and_documents_are_ignored_not_fatal():
    pol = {"Statement": ["not a statement", 7, None,
                         allow(Action="logs:PutLogEvents", Resource="*")]}
    assert allowed([pol, "not a document", None], "logs:PutLogEvents", STREAM)
    assert not allowed([{"Statement": ["x"]}], "logs:PutLogEvents", STREAM)


def test_statement_without_effect_grants_nothing():
    assert not allowed([doc({"Action": "*", "Resource": "*"})], "logs:PutLogEvents", STREAM)


def test_other_action_is_not_allowed():
    assert not allowed([doc(allow(Action="logs:CreateLogStream", Resource=STREAM))],
                       "logs:PutLogEvents", STREAM)


def test_other_resource_is_not_allowed():
    assert not allowed([doc(allow(Action="logs:PutLogEvents", Resource=STREAM + "x"))],
                       "logs:PutLogEvents", STREAM)


# ----------------------------------------------------------------------- explicit Deny

@pytest.mark.parametrize("order", ["deny-first", "deny-last"])
def test_explicit_deny_wins_in_any_order(order):
    a = allow(Action="logs:*", Resource="*")
    d = deny(Action="logs:PutLogEvents", Resource=STREAM)
    stmts = [d, a] if order == "deny-first" else [a, d]
    res = evaluate([doc(*stmts)], "logs:PutLogEvents", STREAM)
    assert (res.allowed, res.reason) == (False, "explicit-deny")


def test_deny_in_another_document_wins():
    res = evaluate([doc(allow(Action="*", Resource="*")),
                    doc(deny(Action="logs:PutLogEvents", Resource="*"))],
                   "logs:PutLogEvents", STREAM)
    assert res.reason == "explicit-deny" and not res.allowed


def test_deny_of_another_action_does_not_block():
    assert allowed([doc(allow(Action="logs:*", Resource="*"),
                        deny(Action="logs:DeleteLogGroup", Resource="*"))],
                   "logs:PutLogEvents", STREAM)


# ----------------------------------------------------------------------- Condition

def test_conditional_allow_is_not_allowed_but_reported():
    cond = {"StringEquals": {"aws:SourceAccount": "111111111111"}}
    res = evaluate([doc(allow(Action="logs:PutLogEvents", Resource="*", Condition=cond))],
                   "logs:PutLogEvents", STREAM)
    assert (res.allowed, res.conditional, res.reason) == (False, True, "implicit-deny")


def test_conditional_allow_beside_an_unconditional_one_is_allowed():
    cond = {"StringEquals": {"aws:SourceAccount": "111111111111"}}
    res = evaluate([doc(allow(Action="logs:PutLogEvents", Resource="*", Condition=cond),
                        allow(Action="logs:PutLogEvents", Resource=STREAM))],
                   "logs:PutLogEvents", STREAM)
    assert res.allowed and res.conditional


def test_conditional_deny_counts_as_deny():
    cond = {"Bool": {"aws:SecureTransport": "false"}}
    res = evaluate([doc(allow(Action="*", Resource="*"),
                        deny(Action="logs:PutLogEvents", Resource="*", Condition=cond))],
                   "logs:PutLogEvents", STREAM)
    assert (res.allowed, res.reason, res.conditional) == (False, "explicit-deny", True)


def test_empty_condition_block_is_no_condition():
    res = evaluate([doc(allow(Action="logs:PutLogEvents", Resource="*", Condition={}))],
                   "logs:PutLogEvents", STREAM)
    assert res.allowed and not res.conditional


def test_conditional_trust_is_not_a_trust():
    trust = doc(allow(Principal={"Service": "cloudtrail.amazonaws.com"}, Action="sts:AssumeRole",
                      Condition={"StringEquals": {"aws:SourceAccount": "111111111111"}}))
    res = evaluate([trust], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    assert not res.allowed and res.conditional


# ----------------------------------------------------------------------- NotAction / NotResource

def test_not_action_allows_everything_else():
    pol = [doc(allow(NotAction="iam:*", Resource="*"))]
    assert allowed(pol, "logs:PutLogEvents", STREAM)
    assert not allowed(pol, "iam:PassRole", STREAM)
    assert not allowed(pol, "IAM:passrole", STREAM)     # action names: case-insensitive


def test_not_resource_excludes_the_named_resource():
    pol = [doc(allow(Action="logs:PutLogEvents", NotResource=STREAM))]
    assert not allowed(pol, "logs:PutLogEvents", STREAM)
    assert allowed(pol, "logs:PutLogEvents", MEMBER)


def test_deny_with_not_resource_denies_everything_else():
    pol = [doc(allow(Action="logs:*", Resource="*"),
               deny(Action="logs:*", NotResource=[GROUP + ":log-stream:111111111111_*"]))]
    assert allowed(pol, "logs:PutLogEvents", STREAM)
    assert not allowed(pol, "logs:PutLogEvents", MEMBER)


# ----------------------------------------------------------------------- wildcards and case

@pytest.mark.parametrize("pattern,resource,expected", [
    (GROUP + ":log-stream:111111111111_CloudTrail_us-east-2*", STREAM, True),
    (GROUP + ":log-stream:111111111111_CloudTrail_us-east-2*", STREAM + "_2", True),
    (GROUP + ":log-stream:o-exampleorgid_*", MEMBER, True),
    (GROUP + ":log-stream:o-exampleorgid_*", STREAM, False),
    (GROUP + ":*", STREAM, True),                             # * crosses ':' and '/'
    (GROUP.replace("CloudTrail/Main", "*") + ":*", STREAM, True),
    (GROUP + ":log-stream:111111111111_CloudTrail_us-east-?", STREAM, True),
    (GROUP + ":log-stream:111111111111_CloudTrail_us-east-??", STREAM, False),  # ? is one char
    (GROUP + ":log-stream:111111111111_CloudTrail_us-east-", STREAM, False),    # no implicit *
    (GROUP.lower() + ":*", STREAM, False),                    # ARNs are case-sensitive
    (GROUP.replace("Main", "MAIN") + ":*", STREAM, False),
    (GROUP + ":log-stream:O-EXAMPLEORGID_*", MEMBER, False),
    ("arn:aws:logs:us-east-2:111111111111:log-group:CloudTrail.Main:*", STREAM, False),  # '.' literal
])
def test_resource_wildcards_and_case(pattern, resource, expected):
    assert allowed([doc(allow(Action="logs:PutLogEvents", Resource=pattern))],
                   "logs:PutLogEvents", resource) is expected


@pytest.mark.parametrize("pattern,action,expected", [
    ("logs:*", "logs:PutLogEvents", True),
    ("logs:Put*", "logs:PutLogEvents", True),
    ("logs:put*", "LOGS:PUTLOGEVENTS", True),
    ("logs:PutLogEvent?", "logs:PutLogEvents", True),
    ("logs:PutLogEvent?", "logs:PutLogEvent", False),
    ("logs:Create*", "logs:PutLogEvents", False),
    ("*", "sts:AssumeRole", True),
    ("logs:PutLogEvents", "logs:PutLogEventsX", False),
])
def test_action_wildcards_and_case(pattern, action, expected):
    assert allowed([doc(allow(Action=pattern, Resource="*"))], action, STREAM) is expected


def test_matches_any_and_as_list():
    assert as_list(None) == [] and as_list("a") == ["a"] and as_list(("a", "b")) == ["a", "b"]
    assert matches_any(["a*", "b?"], "bz") and not matches_any(["a*", "b?"], "bzz")
    assert not matches_any(["A*"], "abc") and matches_any(["A*"], "abc", ignore_case=True)
    assert not matches_any([], "x")


# ----------------------------------------------------------------------- principals

def test_trust_policy_principal_matching():
    trust = trust_policy()
    assert allowed([trust], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    assert not allowed([trust], "sts:AssumeRole", None, "lambda.amazonaws.com")
    assert not allowed([trust], "sts:TagSession", None, "cloudtrail.amazonaws.com")
    listed = doc(allow(Principal={"Service": ["ec2.amazonaws.com", "cloudtrail.amazonaws.com"]},
                       Action=["sts:AssumeRole"]))
    assert allowed([listed], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    aws_only = doc(allow(Principal={"AWS": "arn:aws:iam::111111111111:root"},
                         Action="sts:AssumeRole"))
    assert not allowed([aws_only], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    everyone = doc(allow(Principal="*", Action="sts:AssumeRole"))
    assert allowed([everyone], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")


def test_trust_deny_for_cloudtrail_wins():
    trust = trust_policy()
    trust["Statement"].append(deny(Principal={"Service": "cloudtrail.amazonaws.com"},
                                   Action="sts:AssumeRole"))
    res = evaluate([trust], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    assert res.reason == "explicit-deny"


# ----------------------------------------------------------------------- the documented policies

def test_documented_org_policy_allows_exactly_the_documented_streams():
    """aws-facts 1.3: both actions on <acct>_CloudTrail_<region>* and o-<orgid>_*."""
    pol = doc(
        allow(Action=["logs:CreateLogStream"], Resource=[GROUP + ":log-stream:"
                                                         "111111111111_CloudTrail_us-east-2*",
                                                         GROUP + ":log-stream:o-exampleorgid_*"]),
        allow(Action=["logs:PutLogEvents"], Resource=[GROUP + ":log-stream:"
                                                      "111111111111_CloudTrail_us-east-2*",
                                                      GROUP + ":log-stream:o-exampleorgid_*"]))
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert allowed([pol], action, STREAM) and allowed([pol], action, MEMBER)
        assert not allowed([pol], action, GROUP + ":log-stream:222222222222_CloudTrail_us-east-2")
        assert not allowed([pol], action, GROUP.replace("us-east-2", "us-east-1") +
                           ":log-stream:111111111111_CloudTrail_us-east-2")
    assert not allowed([pol], "logs:DeleteLogStream", STREAM)


def test_single_account_policy_misses_member_streams():
    """Trap 4: the single-account policy silently drops member-account events."""
    pol = doc(allow(Action=["logs:CreateLogStream", "logs:PutLogEvents"],
                    Resource=[GROUP + ":log-stream:111111111111_CloudTrail_us-east-2*"]))
    assert allowed([pol], "logs:PutLogEvents", STREAM)
    assert not allowed([pol], "logs:PutLogEvents", MEMBER)


def test_builders_policy_is_judged_like_the_documented_one():
    from setup.wiring.models import Target, Trail
    trail = Trail("Main", "arn:aws:cloudtrail:us-east-2:111111111111:trail/Main", "us-east-2",
                  "111111111111", True, True)
    target = Target(trail=trail, account="111111111111", log_group="CloudTrail/Main",
                    role_name="r", org_id="o-exampleorgid")
    pol = stream_policy(target)
    assert allowed([pol], "logs:PutLogEvents", MEMBER)
    assert allowed([pol], "logs:CreateLogStream", STREAM)
    assert not allowed([pol], "logs:PutLogEvents", MEMBER.replace("o-exampleorgid", "o-other"))


# ----------------------------------------------------------------------- survivors of `make mutate`

def test_document_without_statements_is_an_implicit_deny():
    assert evaluate([{"Version": "2012-10-17"}], "logs:PutLogEvents", STREAM).reason == \
        "implicit-deny"


def test_not_resource_is_case_sensitive_like_resource():
    pol = [doc(allow(Action="logs:PutLogEvents", NotResource=STREAM.lower()))]
    assert allowed(pol, "logs:PutLogEvents", STREAM)          # a different ARN: not excluded


def test_aws_wildcard_principal_is_everyone_and_other_principals_are_not_services():
    everyone = doc(allow(Principal={"AWS": "*"}, Action="sts:AssumeRole"))
    assert allowed([everyone], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    named = doc(allow(Principal="arn:aws:iam::111111111111:root", Action="sts:AssumeRole"))
    assert not allowed([named], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
    no_principal = doc(allow(Action="sts:AssumeRole"))
    assert not allowed([no_principal], "sts:AssumeRole", None, "cloudtrail.amazonaws.com")
