"""Sigma import (``trailwatch rules import-sigma``) on Sigma rules written for these tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("sigma")

from handlers.detection.patterns import compile_pattern, lint_pattern  # noqa: E402
from handlers.detection.rules import load_rules_file, parse_rules  # noqa: E402
from setup.cli import main  # noqa: E402
from setup.sigma import convert_paths  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "sigma"


def converted(name: str) -> dict:
    (res,) = convert_paths([str(DATA / "convert" / name)])
    assert res.rule is not None, res.reason
    return res.rule


def rec(**fields) -> dict:
    """A CloudTrail-like record from dotted field names."""
    out: dict = {"eventVersion": "1.08"}
    for dotted, value in fields.items():
        cur = out
        *path, last = dotted.split("__")
        for p in path:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return out


def test_equality_list_and_negation_keep_sigma_semantics():
    rule = converted("stop_logging.yml")
    assert rule["id"] == "sigma-0b7c2a1e-5d3f-4c8b-9a61-2f4e8d7c1b01"
    assert rule["title"] == "CloudTrail Logging Stopped From Outside Automation"
    assert rule["severity"] == "HIGH"
    assert rule["attack"] == {"tactics": ["TA0005"], "techniques": ["T1562.008"]}
    assert rule["sigma"]["id"] == "0b7c2a1e-5d3f-4c8b-9a61-2f4e8d7c1b01"
    assert rule["sigma"]["level"] == "high"
    assert "Planned trail migrations" in rule["remediation"]
    assert lint_pattern(rule["pattern"]) == [] and "processor_only" not in rule
    p = compile_pattern(rule["pattern"])
    base = dict(eventSource="cloudtrail.amazonaws.com")
    assert p.match(rec(**base, eventName="StopLogging"))          # no sessionContext at all:
    assert p.match(rec(**base, eventName="DeleteTrail",            # Sigma's "not" matches
                       userIdentity__sessionContext__sessionIssuer__userName="ops"))
    assert not p.match(rec(**base, eventName="DeleteTrail",
                           userIdentity__sessionContext__sessionIssuer__userName="deploy"))
    assert not p.match(rec(**base, eventName="StartLogging"))
    assert not p.match(rec(eventSource="s3.amazonaws.com", eventName="StopLogging"))


def test_contains_startswith_endswith_1_of_and_numbers():
    rule = converted("modifiers.yml")
    assert rule["severity"] == "MEDIUM"
    assert rule["attack"] == {"tactics": ["TA0040"], "techniques": ["T1496"]}
    assert lint_pattern(rule["pattern"]) == []
    p = compile_pattern(rule["pattern"])
    gpu = dict(eventName="RunInstances", userAgent="aws-cli/2.15 Python")
    assert p.match(rec(**gpu, requestParameters__instanceType="p4d.24xlarge"))
    assert p.match(rec(**gpu, requestParameters__instanceType="g5.xlarge"))
    assert not p.match(rec(**gpu, requestParameters__instanceType="m5.large"))
    assert not p.match(rec(eventName="RunInstances", userAgent="boto3/1.34",
                           requestParameters__instanceType="p4d.24xlarge"))
    assert p.match(rec(eventName="ListBuckets", userIdentity__arn="arn:aws:iam::1:user/miner"))
    assert not p.match(rec(eventName="ListBuckets", userIdentity__arn="arn:aws:iam::1:user/miners"))
    assert p.match(rec(eventName="ListBuckets", userAgent="Mozilla kali-linux x"))
    assert p.match(rec(eventName="GetFederationToken", requestParameters__durationSeconds=129600))
    assert not p.match(rec(eventName="GetFederationToken", requestParameters__durationSeconds=3600))


def test_exists_and_null_convert_with_exists_flagged_processor_only():
    (res,) = convert_paths([str(DATA / "convert" / "exists_and_null.yml")])
    rule = res.rule
    assert rule["processor_only"] is True
    assert any("EXISTS is a processor-only extension" in n for n in res.notes)
    assert rule["severity"] == "LOW" and rule["attack"]["tactics"] == ["TA0001"]
    p = compile_pattern(rule["pattern"])
    ok = rec(eventName="ConsoleLogin", responseElements__ConsoleLogin="Success")
    assert p.match(ok)
    assert p.match(dict(ok, errorCode=None))
    assert not p.match(dict(ok, errorCode="Failed"))
    assert not p.match(dict(ok, additionalEventData={"MFAUsed": "No"}))
    assert not p.match(rec(eventName="ConsoleLogin"))


@pytest.mark.parametrize("name,reason", [
    ("keywords.yml", "keyword search 'stratus-red-team'"),
    ("regex.yml", "regular expression on eventName"),
    ("cidr.yml", "CIDR match on sourceIPAddress"),
    ("middle_wildcard.yml", "a '*' wildcard in the middle of a value"),
    ("single_wildcard.yml", "a '?' single-character wildcard"),
    ("windows.yml", "logsource is product=windows"),
    ("negated_compare.yml", "negated comparison on requestParameters.instancesSet.items.maxCount"),
])
def test_refused_rules_say_why(name, reason):
    (res,) = convert_paths([str(DATA / "refuse" / name)])
    assert res.rule is None
    assert reason in res.reason
    assert res.sigma_id and res.title


def test_broken_yaml_is_reported_not_raised(tmp_path):
    (tmp_path / "x.yml").write_text("title: [unterminated\n")
    (tmp_path / "y.yml").write_text("title: no detection\nlogsource: {product: aws}\n")
    results = convert_paths([str(tmp_path)])
    assert len(results) >= 2 and all(r.rule is None and r.reason for r in results)


def test_cli_import_sigma_writes_a_loadable_rules_file_and_reports_refusals(tmp_path, capsys):
    out_file = tmp_path / "sigma-rules.json"
    code = main(["rules", "import-sigma", str(DATA), "-o", str(out_file)], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 1                                            # some rules were refused
    assert "3 converted, 7 not converted" in err
    assert "not converted: " in err and "regular expression on eventName" in err
    rules = load_rules_file(out_file)
    assert {r.id for r in rules} == {f"sigma-0b7c2a1e-5d3f-4c8b-9a61-2f4e8d7c1b0{n}"
                                     for n in (1, 2, 3)}
    assert sum(r.processor_only for r in rules) == 1
    # converted rules go straight into the other tools
    assert main(["rules", "lint", str(out_file)], out=io.StringIO()) == 0


def test_cli_import_sigma_exit_0_when_everything_converts(tmp_path):
    out = io.StringIO()
    assert main(["rules", "import-sigma", str(DATA / "convert")], out=out) == 0
    assert len(parse_rules(json.loads(out.getvalue()))) == 3
