"""Engine hygiene (issue 13): escaped wildcards, exact big integers, the documented grammar as the
default with processor-only extensions flagged, and CIS labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import handlers.detection.patterns as P
from handlers.detection.cis import CIS_CONTROLS
from handlers.detection.patterns import PatternError, compile_pattern

# Looked up at call time so that, run against the code before issue 13, each test fails on its
# own (wrong verdict or missing API) instead of the whole module failing to import.
MAX_PATTERN_CHARS = 1024


def lint_pattern(text):
    return P.lint_pattern(text)


# ----------------------------------------------------------------------------------- \* escape

@pytest.mark.parametrize("pattern,value,expected", [
    (r'{ $.p = "\*" }', "*", True),                 # the literal star ...
    (r'{ $.p = "\*" }', "s3.amazonaws.com", False),  # ... not "any value"
    (r'{ $.p = "a\*" }', "a*", True),
    (r'{ $.p = "a\*" }', "abc", False),             # not a trailing wildcard
    (r'{ $.p = "\*a" }', "xa", False),              # not a leading wildcard
    (r'{ $.p = "\*a" }', "*a", True),
    (r'{ $.p = "\**" }', "*anything", True),        # escaped star, then a real wildcard
    (r'{ $.p = "\**" }', "anything", False),
    (r"{ $.p = a\* }", "a*", True),                 # unquoted too
    (r"{ $.p = a\* }", "ab", False),
    (r'{ $.p != "\*" }', "s3.amazonaws.com", True),
    (r'{ $.p != "\*" }', "*", False),
])
def test_backslash_star_is_a_literal_star(pattern, value, expected):
    assert compile_pattern(pattern).match({"p": value}) is expected


def test_unescaped_stars_keep_their_documented_meaning():
    assert compile_pattern('{ $.p = "*" }').match({"p": "x"}) is True
    assert compile_pattern('{ $.p = "a*" }').match({"p": "abc"}) is True
    assert compile_pattern('{ $.p = "*a" }').match({"p": "xa"}) is True
    assert compile_pattern('{ $.p = "a*b" }').match({"p": "axb"}) is False   # middle: literal


# ----------------------------------------------------------------------------------- integers

BIG = 2**53


@pytest.mark.parametrize("pattern,value,expected", [
    (f"{{ $.n = {BIG + 1} }}", BIG, False),       # float(2**53 + 1) == 2**53
    (f"{{ $.n = {BIG + 1} }}", BIG + 1, True),
    (f"{{ $.n != {BIG + 1} }}", BIG, True),
    (f"{{ $.n > {BIG} }}", BIG + 1, True),
    (f"{{ $.n >= {BIG + 1} }}", BIG, False),
    (f"{{ $.n < {BIG + 1} }}", BIG, True),
    (f"{{ $.n <= {BIG} }}", BIG + 1, False),
    ("{ $.n = 123456789012345678901 }", 123456789012345678900, False),
    ("{ $.n = 10 }", 10.0, True),                  # ints and floats still compare by value
    ("{ $.n = 1.5 }", 1.5, True),
    ("{ $.n > 1.5 }", 2, True),
])
def test_integers_above_2_53_compare_exactly(pattern, value, expected):
    assert compile_pattern(pattern).match({"n": value}) is expected


@given(st.integers(min_value=-(2**64), max_value=2**64), st.integers(min_value=-3, max_value=3),
       st.booleans())
def test_integer_comparisons_agree_with_python(a, delta, big):
    """Neighbouring integers (where doubles run out of precision) compare as Python ints do."""
    if big:
        a = a // 2 + (2**60 if a >= 0 else -(2**60))
    b = a + delta
    rec = {"n": a}
    assert compile_pattern(f"{{ $.n = {b} }}").match(rec) is (a == b)
    assert compile_pattern(f"{{ $.n != {b} }}").match(rec) is (a != b)
    assert compile_pattern(f"{{ $.n < {b} }}").match(rec) is (a < b)
    assert compile_pattern(f"{{ $.n >= {b} }}").match(rec) is (a >= b)


# ----------------------------------------------------------------------------------- lint

@pytest.mark.parametrize("pattern,code", [
    ("{ $.a EXISTS }", "TW101"),
    ("{ $.@aws = 1 }", "TW102"),
    (r'{ $.a = "x\*" }', "TW103"),
    ("{ $.arn = arn:aws:iam::123456789012:root }", "TW104"),
    ("{ $.a = a/b }", "TW104"),
    ("{ $.n = 1E2 }", "TW105"),
    ("{ $.n > 2e10 }", "TW105"),
    ("{ $.a = " + '"' + "x" * MAX_PATTERN_CHARS + '"' + " }", "TW201"),
    ("{ $.a = }", "TW001"),
    ("not a pattern", "TW001"),
])
def test_lint_flags_what_metric_filters_may_reject(pattern, code):
    assert code in [f.code for f in lint_pattern(pattern)]


@pytest.mark.parametrize("pattern", [
    '{ $.eventType = "UpdateTrail" }',
    "{ $.sourceIPAddress != 123.123.* }",
    '{ $.arrayKey[0] = "value" }',
    "{ $.objectList[1].id = 2 }",
    "{ $.SomeObject IS NULL }",
    "{ $.SomeOtherObject NOT EXISTS }",
    "{ $.ThisFlag IS TRUE }",
    '{ $.a = "arn:aws:iam::123456789012:root" }',      # specials are fine when quoted
    "{ $.eventSource = kms.amazonaws.com }",
    "{ $.n = -12.5 }",
    '{ $.policy = "*\\"AWS\\":\\"*\\"*" }',               # quoted quotes, middle star literal
])
def test_documented_grammar_is_lint_clean(pattern):
    assert lint_pattern(pattern) == []
    compile_pattern(pattern, strict=True)


def test_every_cis_pattern_is_lint_clean():
    for c in CIS_CONTROLS:
        assert lint_pattern(c.pattern) == [], c.cis


def test_strict_mode_refuses_extensions_with_the_position():
    with pytest.raises(PatternError) as e:
        compile_pattern("{ $.eventName = X && $.errorCode EXISTS }", strict=True)
    assert e.value.position == 33 and "EXISTS" in e.value.reason
    # the processor (default) still accepts it: RULES_FILEs that use EXISTS keep working
    assert compile_pattern("{ $.errorCode EXISTS }").match({"errorCode": "x"}) is True


def test_finding_positions_point_at_the_offending_text():
    text = '{ $.a = 1 && $.b = x:y }'
    (f,) = lint_pattern(text)
    assert text[f.position:].startswith("x:y")


# ----------------------------------------------------------------------------------- CIS labels

def test_cis_labels_name_the_cis_version_and_security_hub_control():
    by = {c.cis: c for c in CIS_CONTROLS}
    assert by["4.3"].label.startswith("CIS AWS Foundations Benchmark v1.4.0-v2.0.0 4.3")
    assert "v1.2.0 3.3" in by["4.3"].label and "Security Hub control CloudWatch.1" in by["4.3"].label
    assert "Security Hub control CloudWatch.14" in by["4.14"].label
    assert "v2.0.0 4.15" in by["4.15"].label and "no Security Hub control" in by["4.15"].label
    for c in CIS_CONTROLS:
        assert c.cis in c.label and (c.securityhub or "no Security Hub") in c.label


def test_cis_rules_carry_their_label():
    from handlers.detection.builtin import builtin_rules
    for r in builtin_rules(None):
        if r.source == "cis":
            assert "CIS AWS Foundations Benchmark" in r.description and r.cis in r.description, r.id


# ----------------------------------------------------------------------------------- lint/strict

_FIELDS = ["$.a", "$.b.c", "$.d[0]"]
_DOCUMENTED = ['= "x"', "= x*", "!= *y", "= 12", "> 3", "IS NULL", "NOT EXISTS", "IS TRUE",
               '= "a:b/c"', "= 1.5"]
_EXTENSIONS = ["EXISTS", "= a:b", "= 1E3", r'= "x\*"']


@given(st.lists(st.tuples(st.sampled_from(_FIELDS + ["$.@e"]),
                          st.sampled_from(_DOCUMENTED + _EXTENSIONS)), min_size=1, max_size=4),
       st.lists(st.sampled_from(["&&", "||"]), min_size=3, max_size=3),
       st.dictionaries(st.sampled_from(["a", "b", "d", "@e"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                                 st.sampled_from(["x", "xy", "a:b", "x*", "a:b/c"]),
                                 st.just({"c": "x"}), st.just(["x"]))))
def test_lint_clean_exactly_when_strict_accepts_and_verdicts_agree(terms, ops, rec):
    body = f"{terms[0][0]} {terms[0][1]}"
    for (sel, cond), op in zip(terms[1:], ops):
        body += f" {op} {sel} {cond}"
    text = "{ " + body + " }"
    findings = lint_pattern(text)
    try:
        strict = compile_pattern(text, strict=True)
    except PatternError:
        strict = None
    assert (strict is not None) is (findings == [])
    if strict is not None:       # the same engine reads the documented grammar the same way
        assert strict.match(rec) is compile_pattern(text).match(rec)


@given(st.text(alphabet='ab *"\\&|=:/é', max_size=12))
def test_quoted_values_round_trip_through_the_tokenizer(value):
    """Fast (no backslash) and escaped paths of the tokenizer read a quoted value the same way."""
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    (tok,) = [t for t in P._tokenize("{ $.a = " + quoted + " }") if t.kind == "STRING"]
    assert tok.text == value


@given(st.text(alphabet="ab*&|:/.-_1", min_size=1, max_size=12).filter(
    lambda w: "&&" not in w and "||" not in w))
def test_bare_words_stop_only_at_operators(word):
    toks = P._tokenize("{ $.a = " + word + " && $.b = 1 }")
    assert [t.text for t in toks if t.kind == "BARE"][0] == word
    assert [t.kind for t in toks].count("AND") == 1


def test_cis_rules_carry_attack_ids_and_unchanged_patterns():
    from handlers.detection.builtin import builtin_rules
    cis = {r.id: r for r in builtin_rules(None) if r.source == "cis"}
    assert len(cis) == 15
    for c in CIS_CONTROLS:
        r = cis[c.rule_id]
        assert r.pattern.text == c.pattern
        assert r.tactics and r.techniques and r.doc["attack"]["tactics"] == list(c.tactics)
    assert cis["cis-4.5"].doc["attack"] == {"tactics": ["TA0005"], "techniques": ["T1562.008"]}
