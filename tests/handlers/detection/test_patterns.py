"""The filter-pattern engine against AWS's documented examples and semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.detection.patterns import PatternError, PatternIndex, compile_pattern

# The JSON from AWS's "Filter and pattern syntax" page (JSON log events).
DOC1 = {
    "eventType": "UpdateTrail",
    "sourceIPAddress": "111.111.111.111",
    "arrayKey": ["value", "another value"],
    "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
    "SomeObject": None,
    "ThisFlag": True,
}
DOC2 = {
    "user": {"id": 1, "email": "John.Stiles@example.com"},
    "users": [{"id": 2, "email": "John.Doe@example.com"}, {"id": 3, "email": "Jane.Doe@example.com"}],
    "actions": ["GET", "PUT", "DELETE"],
    "coordinates": [[0, 1, 2], [4, 5, 6], [7, 8, 9]],
}


@pytest.mark.parametrize("pattern", [
    '{ $.eventType = "UpdateTrail" }',
    "{ $.sourceIPAddress != 123.123.* }",
    '{ $.arrayKey[0] = "value" }',
    "{ $.objectList[1].id = 2 }",
    "{ $.SomeObject IS NULL }",
    "{ $.SomeOtherObject NOT EXISTS }",
    "{ $.ThisFlag IS TRUE }",
    "{ $.eventType EXISTS }",
])
def test_aws_documented_examples_match(pattern):
    assert compile_pattern(pattern).match(DOC1) is True


@pytest.mark.parametrize("pattern,expected", [
    ('{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }', True),
    ('{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }', False),
    ('{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch '
     '&& $.actions[2] = nomatch }', True),
    ('{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch) '
     '&& $.actions[2] = nomatch }', False),
])
def test_aws_documented_precedence_examples(pattern, expected):
    """AWS documents () > && > ||; these four examples are from its page, with its verdicts."""
    assert compile_pattern(pattern).match(DOC2) is expected


def test_selector_on_object_or_array_never_matches():
    for pattern in ("{ $.users = 1 }", "{ $.users != 1 }", "{ $.user != x }"):
        assert compile_pattern(pattern).match({"users": [1, 2, 3], "user": {"a": 1}}) is False


def test_missing_field_matches_neither_equal_nor_not_equal():
    p_eq = compile_pattern('{ $.additionalEventData.MFAUsed = "Yes" }')
    p_ne = compile_pattern('{ $.additionalEventData.MFAUsed != "Yes" }')
    assert (p_eq.match({}), p_ne.match({})) == (False, False)
    assert p_ne.match({"additionalEventData": {"MFAUsed": "No"}}) is True


@pytest.mark.parametrize("pattern,value,expected", [
    ('{ $.e = "*UnauthorizedOperation" }', "Client.UnauthorizedOperation", True),
    ('{ $.e = "*UnauthorizedOperation" }', "UnauthorizedOperationX", False),
    ('{ $.e = "AccessDenied*" }', "AccessDeniedException", True),
    ('{ $.e = "AccessDenied*" }', "XAccessDenied", False),
    ("{ $.e = *Denied* }", "xxDeniedyy", True),
    ("{ $.e = Ev*ent }", "Event", False),        # a middle * is literal (AWS docs)
    ("{ $.e = Ev*ent }", "Ev*ent", True),
    ("{ $.e = * }", "anything", True),
    ("{ $.e = * }", None, False),
    ('{ $.e = "a \\"quoted\\" word" }', 'a "quoted" word', True),
])
def test_wildcards_and_quotes(pattern, value, expected):
    rec = {} if value is None else {"e": value}
    assert compile_pattern(pattern).match(rec) is expected


@pytest.mark.parametrize("pattern,value,expected", [
    ("{ $.latency >= 500 }", 500, True),
    ("{ $.latency > 500 }", 500, False),
    ("{ $.latency < 10e3 }", 9999.5, True),
    ("{ $.latency <= -1 }", -1, True),
    ("{ $.latency > +1000 }", 1001, True),
    ("{ $.latency > 5 }", "900", False),          # numeric operators need a JSON number
    ("{ $.code = 400 }", 400, True),
    ("{ $.code = 400 }", 400.0, True),
    ("{ $.code != 500 }", 400, True),
    ("{ $.acct = 123456789012 }", "123456789012", True),  # numeric literal vs string field: text
    ("{ $.flag = true }", True, True),
    ("{ $.flag IS FALSE }", False, True),
    ("{ $.flag IS TRUE }", 1, False),
])
def test_numbers_and_booleans(pattern, value, expected):
    assert compile_pattern(pattern).match({"latency": value, "code": value, "acct": value,
                                           "flag": value}) is expected


@pytest.mark.parametrize("pattern,position", [
    ("$.a = 1", 0),                 # not a JSON pattern
    ("{ $.a = 1 && }", 13),
    ("{ $.a = 1 ", 10),
    ("{ $. = 1 }", 4),
    ('{ $.a = "open }', 8),
    ("{ $.a > abc }", 8),
    ("{ $.a ! 1 }", 6),
    ("{ $.a IS MAYBE }", 9),
    ("{ ($.a = 1 }", 11),
    ("{ $.a = 1 } trailing", 12),
    ("{ $[0] = 1 }", 3),
])
def test_errors_report_position(pattern, position):
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert info.value.position == position
    assert info.value.pointer().splitlines()[1] == " " * position + "^"


def test_no_eval_is_possible():
    p = compile_pattern('{ $.a = "__import__(\'os\').system(\'false\')" }')
    assert p.match({"a": "__import__('os').system('false')"}) is True


def test_index_visits_only_candidate_rules_but_keeps_results_identical():
    pats = {
        "by_name": compile_pattern("{ ($.eventName = A) || ($.eventName = B) }"),
        "and_name": compile_pattern("{ $.eventSource = s3 && ($.eventName = A || $.eventName = C) }"),
        "always": compile_pattern('{ $.errorCode = "AccessDenied*" }'),
        "wild": compile_pattern("{ $.eventName = A* }"),
    }
    assert pats["by_name"].event_names == {"A", "B"}
    assert pats["and_name"].event_names == {"A", "C"}
    assert pats["always"].event_names is None and pats["wild"].event_names is None
    index = PatternIndex(pats.items())
    for rec in ({"eventName": "A", "eventSource": "s3", "errorCode": "AccessDenied"},
                {"eventName": "B"}, {"eventName": "C", "eventSource": "s3"}, {"eventName": "Ax"},
                {"errorCode": "AccessDeniedX"}, {"eventName": 5}):
        brute = [k for k, p in pats.items() if p.match(rec)]
        assert index.matches(rec) == brute


_names = st.sampled_from(["A", "B", "C", "D"])
_atoms = st.one_of(
    _names.map(lambda n: f"$.eventName = {n}"),
    st.sampled_from(["$.x = 1", "$.x != 1", "$.y EXISTS", "$.y NOT EXISTS", '$.z = "q*"',
                     '$.u.t = "Root"', "$.u.t = IAMUser", '$.u.t != "Root"', "$.e = Access*",
                     '$.x = "1"', '$.b = "true"', "$.b = true", '$.u.t = "5"', "$.z = q"]),
)


@st.composite
def _exprs(draw, depth=0):
    if depth > 2 or draw(st.booleans()):
        return draw(_atoms)
    op = draw(st.sampled_from(["&&", "||"]))
    parts = draw(st.lists(_exprs(depth=depth + 1), min_size=2, max_size=3))
    return "(" + f" {op} ".join(parts) + ")"


@given(st.lists(_exprs(), min_size=1, max_size=4), st.fixed_dictionaries({}, optional={
    "eventName": _names, "x": st.sampled_from([1, "1", 2, 1.0, True]), "y": st.none(),
    "b": st.sampled_from([True, "true", False, {"t": 1}]),
    "z": st.sampled_from(["q", "qq", "r"]),
    "u": st.one_of(st.fixed_dictionaries({}, optional={"t": st.sampled_from(
        ["Root", "IAMUser", 5])}), st.just("Root")),
    "e": st.sampled_from(["AccessDenied", "x"])}))
def test_prefilter_never_changes_the_verdict(exprs, record):
    """Property: the guard index is an optimisation only; it never hides or adds a match, and
    keeps the rules' order."""
    pats = [(i, compile_pattern("{ " + e + " }")) for i, e in enumerate(exprs)]
    index = PatternIndex(pats)
    assert list(index.matches(record)) == [i for i, p in pats if p.match(record)]


@pytest.mark.parametrize("pattern,value,expected", [
    ('{ $.code = "400" }', 400, True),      # quoted number still compares as text
    ('{ $.code = "400" }', "400", True),
    ('{ $.a.b = "x" }', {"b": "x"}, True),
    ('{ $.a.b = "x" }', "x", False),
    ('{ $.code = "Root" }', True, False),
])
def test_fast_equality_path_keeps_semantics(pattern, value, expected):
    rec = {"code": value, "a": value}
    assert compile_pattern(pattern).match(rec) is expected


@given(st.lists(st.sampled_from(["A", "B", "Root", "400", "true", "x*"]), min_size=2, max_size=4),
       st.sampled_from(["$.eventName", "$.u.t"]),
       st.one_of(st.sampled_from(["A", "B", "Root", "400", "true", "xy"]), st.integers(399, 401),
                 st.booleans(), st.none(), st.lists(st.just("A"), max_size=1),
                 st.fixed_dictionaries({"t": st.just("A")})))
def test_or_of_equalities_is_one_set_lookup_with_the_same_verdict(values, selector, value):
    """`$.p = A || $.p = B || ...` compiles to one membership test when every term can only match a
    string; the verdict equals evaluating the terms one by one, whatever JSON type the field has."""
    text = "{ " + " || ".join(f'{selector} = "{v}"' for v in values) + " }"
    pat = compile_pattern(text)
    record = {"eventName": value} if selector == "$.eventName" else {"u": {"t": value}}
    one_by_one = any(compile_pattern(f'{{ {selector} = "{v}" }}').match(record) for v in values)
    assert pat.match(record) is one_by_one
    assert (pat.exact is not None) == all(v not in ("400", "true", "x*") for v in values)
    assert list(PatternIndex([(0, pat)]).matches(record)) == ([0] if one_by_one else [])
