"""PatternIndex.matches is exactly "evaluate every rule's pattern against the record".

The index files each pattern under a guard (an exact eventName, another exact value, a required
key) and calls only the candidates' predicates, or none when the guard decides alone. These tests
compare it with the plain evaluation (every pattern's own predicate, in rule order):

* over hostile records (hypothesis): random or near-miss eventName / eventSource values, values of
  every JSON type where strings are expected, missing keys, objects where strings are expected;
* over every record of ../shared/corpus, attack and ordinary traffic (skipped when absent);
* for the built-in rules (tamper rules armed) plus patterns written to stress the guards:
  wildcard and negated eventName terms, OR of exact and wildcard terms, contradictory ANDs,
  NOT EXISTS, IS NULL / TRUE / FALSE, numbers, booleans and array indexes;
* and for the pipeline's own dispatcher, which files the canary's event names first.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.canary import CANARY_EVENTS
from handlers.detection.builtin import builtin_rules
from handlers.detection.patterns import PatternIndex, compile_pattern
from handlers.pipeline import _CANARY, Pipeline
from tests.conftest import CORPUS

TAMPER_ENV = {"TRAIL_NAME": "org-trail", "TRAIL_LOG_GROUP_NAME": "aws-cloudtrail-logs",
              "DELIVERY_ROLE_NAME": "trailwatch-cwl-org-trail",
              "AWS_LAMBDA_FUNCTION_NAME": "trailwatch-processor"}

# Patterns that exercise every way a guard can be derived (or must not be).
STRESS_PATTERNS = [
    '{ $.eventName = "ConsoleLogin" }',
    '{ $.eventName != "ConsoleLogin" }',                                     # negated: no guard
    '{ $.eventName = "Delete*" }',                                          # wildcard: no guard
    '{ $.eventName = "*Policy" }',
    '{ $.eventName = "*" }',                                                # any value
    '{ $.eventName = "Put*" || $.eventName = "CreateTrail" }',              # exact || wildcard
    '{ $.eventName = "CreateTrail" || $.eventName = "DeleteTrail" }',       # exact set
    '{ ($.eventName = "CreateTrail") && ($.eventName = "DeleteTrail") }',   # never matches
    '{ $.eventName = "CreateTrail" && $.eventName != "DeleteTrail" }',
    '{ $.eventName = "StopLogging" || $.errorCode = "AccessDenied" }',      # guard on one side
    '{ $.eventName = StopLogging && $.eventSource = cloudtrail.amazonaws.com }',
    '{ $.eventSource = "iam.amazonaws.com" && $.eventName != "Get*" }',
    '{ $.eventSource = "iam.*" }',
    '{ $.eventName NOT EXISTS }',
    '{ $.eventName EXISTS }',
    '{ $.eventName IS NULL }',
    '{ $.eventName = 1 }',                                                   # number-like
    '{ $.eventName = true }',                                                # boolean text
    '{ $.eventName = "true" }',
    '{ $.eventName[0] = "CreateTrail" }',                                    # array index
    '{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS }',
    '{ $.userIdentity.type != "Root" }',
    '{ $.userIdentity.type = "Root" || $.userIdentity.type = "IAMUser" }',
    '{ $.userIdentity.arn = "*:role/admin" }',
    '{ $.additionalEventData.MFAUsed != "Yes" && $.eventName = "ConsoleLogin" }',
    '{ $.responseElements.ConsoleLogin = "Failure" }',
    '{ $.requestParameters.bucketName = "logs" }',
    '{ $.readOnly IS TRUE }',
    '{ $.readOnly IS FALSE && $.eventName = "PutBucketPolicy" }',
    '{ $.errorCode = "*UnauthorizedOperation" || $.errorCode = "AccessDenied*" }',
    '{ $.errorCode EXISTS && $.eventSource = "s3.amazonaws.com" }',
    '{ $.recipientAccountId = 111122223333 }',
    '{ $.requestParameters.maxResults > 50 }',
    '{ $.eventVersion >= 1.05 && $.eventName = "CreateTrail" }',
]


def _items(include_stress: bool = True) -> list[tuple[str, object]]:
    items = [(r.id, r.pattern) for r in builtin_rules(TAMPER_ENV)]
    if include_stress:
        items += [(f"stress-{n}", compile_pattern(p)) for n, p in enumerate(STRESS_PATTERNS)]
    return items


ITEMS = _items()
RULE_ITEMS = _items(include_stress=False)
INDEX = PatternIndex(ITEMS)
PIPELINE = Pipeline(builtin_rules(TAMPER_ENV))


def plain(record: dict) -> list[str]:
    """The reference: every pattern's own predicate, in the order the patterns were given."""
    return [key for key, pat in ITEMS if pat.match(record)]


def _guard_strings() -> list[str]:
    """Every string some guard or literal of the rules compares with, and near misses of them."""
    out: set[str] = set(CANARY_EVENTS)
    for _, pat in ITEMS:
        for values in pat.guards.values():
            out |= set(values)
    near = set()
    for s in out:
        near |= {s.lower(), s.upper(), s + "x", "x" + s, s[:-1], s + " ", s[:1]}
    return sorted(out | near | {"", "*", "Delete", "DeleteTrail", "PutBucketPolicy", "GetObject",
                                "DescribeInstances", "AccessDenied", "Client.UnauthorizedOperation",
                                "Root", "IAMUser", "AssumedRole", "true", "false", "1", "Yes"})


GUARD_STRINGS = _guard_strings()
SOURCES = sorted({"cloudtrail.amazonaws.com", "iam.amazonaws.com", "s3.amazonaws.com",
                  "lambda.amazonaws.com", "logs.amazonaws.com", "ec2.amazonaws.com",
                  "kms.amazonaws.com", "sts.amazonaws.com", "signin.amazonaws.com", ""})

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
guard_text = st.sampled_from(GUARD_STRINGS)
# A string-expected field: usually a guard string (or near miss), sometimes any JSON value.
field = st.one_of(guard_text, guard_text, st.text(max_size=16), json_values,
                  st.lists(guard_text, min_size=1, max_size=2))
identity = st.one_of(
    st.fixed_dictionaries({}, optional={"type": field, "invokedBy": field, "arn": field,
                                        "principalId": field, "userName": field}),
    json_values)


@st.composite
def records(draw) -> dict:
    rec = draw(st.fixed_dictionaries({}, optional={
        "eventVersion": st.one_of(st.sampled_from(["1.08", "1.05", "1.02"]), json_values),
        "eventName": field,
        "eventSource": st.one_of(st.sampled_from(SOURCES), field),
        "errorCode": field,
        "eventType": st.one_of(st.sampled_from(["AwsApiCall", "AwsServiceEvent",
                                                "AwsConsoleSignIn"]), json_values),
        "userIdentity": identity,
        "readOnly": st.one_of(st.booleans(), json_values),
        "recipientAccountId": st.one_of(st.just("111122223333"), st.just(111122223333),
                                        json_values),
        "requestParameters": st.one_of(st.none(), st.dictionaries(
            st.sampled_from(["bucketName", "maxResults", "name", "roleName", "policyArn",
                             "principal", "trailName", "logGroupName", "functionName"]),
            st.one_of(guard_text, json_values), max_size=4), json_values),
        "responseElements": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"ConsoleLogin": st.sampled_from(["Success", "Failure"])}), json_values),
        "additionalEventData": st.one_of(st.fixed_dictionaries(
            {}, optional={"MFAUsed": st.sampled_from(["Yes", "No"])}), json_values),
        "sourceIPAddress": st.one_of(st.sampled_from(["ec2.amazonaws.com", "203.0.113.9"]),
                                     json_values),
    }))
    # What the processor sees: a record decoded by orjson (JSON types only, big ints as int).
    try:
        return orjson.loads(orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS))
    except orjson.JSONEncodeError:   # an integer beyond 64 bits: keep the Python value
        return rec


@settings(max_examples=1500, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_index_equals_plain_evaluation_on_hostile_records(record):
    assert list(INDEX.matches(record)) == plain(record)


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_pipeline_dispatcher_adds_only_the_canary_key(record):
    """The pipeline's dispatcher: the canary key first for a canary-named record, then exactly
    the rules' matches (the pipeline's own index answers the same as the plain evaluation)."""
    rules = [key for key, pat in RULE_ITEMS if pat.match(record)]
    name = record.get("eventName")
    canary = [_CANARY] if name.__class__ is str and name in CANARY_EVENTS else []
    got = [k if k is _CANARY else k.id for k in PIPELINE._matches(record)]
    assert got == canary + rules
    assert [r.id for r in PIPELINE.index.matches(record)] == rules


def test_stress_patterns_take_the_guard_they_should():
    """The guards the index relies on: exact string equality only (never a negation, a wildcard,
    a number-like or boolean literal, or an array index)."""
    by_text = {p: compile_pattern(p) for p in STRESS_PATTERNS}
    assert by_text['{ $.eventName = "ConsoleLogin" }'].guards == {("eventName",): {"ConsoleLogin"}}
    for text in ('{ $.eventName != "ConsoleLogin" }', '{ $.eventName = "Delete*" }',
                 '{ $.eventName = "*" }', '{ $.eventName = "Put*" || $.eventName = "CreateTrail" }',
                 '{ $.eventName = 1 }', '{ $.eventName = true }', '{ $.eventName[0] = "CreateTrail" }',
                 '{ $.eventName NOT EXISTS }', '{ $.userIdentity.type != "Root" }'):
        assert ("eventName",) not in by_text[text].guards, text
    assert by_text['{ ($.eventName = "CreateTrail") && ($.eventName = "DeleteTrail") }'].guards \
        == {("eventName",): frozenset()}


def _corpus_records() -> list[dict]:
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present (fresh clone)")
    paths = sorted(CORPUS.glob("*.jsonl")) + sorted((CORPUS / "benign").glob("*.jsonl"))
    return [orjson.loads(ln) for p in paths for ln in p.read_bytes().splitlines() if ln.strip()]


@pytest.mark.corpus
def test_index_equals_plain_evaluation_on_the_corpus():
    recs = _corpus_records()
    matched = 0
    for rec in recs:
        got = list(INDEX.matches(rec))
        assert got == plain(rec), rec.get("eventID")
        matched += bool(got)
    assert matched   # the corpus does exercise the candidates' predicates


@pytest.mark.corpus
def test_pipeline_dispatcher_on_the_corpus():
    for rec in _corpus_records():
        rules = [key for key, pat in RULE_ITEMS if pat.match(rec)]
        name = rec.get("eventName")
        canary = [_CANARY] if name.__class__ is str and name in CANARY_EVENTS else []
        assert [k if k is _CANARY else k.id for k in PIPELINE._matches(rec)] == canary + rules
