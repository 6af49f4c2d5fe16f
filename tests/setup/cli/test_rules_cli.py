"""``trailwatch rules list|test|backtest|lint|export`` (contract subcommand names)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path


from handlers.detection.patterns import compile_pattern
from handlers.detection.builtin import builtin_rules
from setup.cli import main

ROOT = Path(__file__).resolve().parents[3]
PACK_IDS = {r.id for r in builtin_rules() if r.source == "pack"}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["rules", *argv], out=out)
    return code, out.getvalue()


def write_rules(path: Path, rules: list[dict]) -> str:
    path.write_text(json.dumps({"rules": rules}))
    return str(path)


REC_STOP = {"eventVersion": "1.08", "eventSource": "cloudtrail.amazonaws.com",
            "eventName": "StopLogging", "eventID": "e-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/u"}}
REC_LIST = {"eventVersion": "1.08", "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets",
            "eventID": "e-2", "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/u"}}


# ----------------------------------------------------------------------------------- list

def test_list_shows_id_severity_attack_and_source():
    code, out = run("list")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("tw-cloudtrail-stopped-or-deleted "))
    assert line.split()[:4] == ["tw-cloudtrail-stopped-or-deleted", "HIGH", "pack",
                                "TA0005,T1562.008"]
    assert any(x.startswith("cis-4.3 ") and "CloudWatch.1" in x for x in out.splitlines())


def test_list_json_and_source_filter():
    code, out = run("list", "--source", "pack", "--output", "json")
    rows = json.loads(out)
    assert code == 0 and {r["id"] for r in rows} == PACK_IDS
    row = next(r for r in rows if r["id"] == "tw-secrets-bulk-retrieval")
    assert row["threshold"] == 10 and row["attack"]["techniques"] == ["T1555.006"]
    # issue 20: the window is data, and shown
    assert row["window_minutes"] == 10 and row["dedup_key"] == ["principal"]
    code, out = run("list", "--source", "cis")
    assert "1 per principal per 1440 min" in out and "cis-compliance" not in out


# ----------------------------------------------------------------------------------- test

def test_rules_test_passes_for_the_builtin_rules_in_a_subprocess():
    """What CI runs: the console script path, every built-in rule's samples, exit 0."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "setup.cli", "rules", "test",
                           "--require-samples"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = len(builtin_rules())
    assert f"{n}/{n} rules passed" in proc.stdout


def test_rules_test_fails_on_a_wrong_sample(tmp_path):
    f = write_rules(tmp_path / "r.json", [
        {"id": "stop", "pattern": '{ $.eventName = "StopLogging" }',
         "tests": {"match": [REC_STOP], "no_match": [REC_STOP]}},
        {"id": "ok", "pattern": '{ $.eventName = "StopLogging" }',
         "tests": {"match": [REC_STOP], "no_match": [REC_LIST]}}])
    code, out = run("test", f)
    assert code == 1
    assert "FAIL stop: no_match[0] (StopLogging) should not match" in out
    assert "1/2 rules passed, 4 samples" in out


def test_rules_test_require_samples(tmp_path):
    f = write_rules(tmp_path / "r.json", [{"id": "bare", "pattern": "{ $.a = 1 }"}])
    assert run("test", f)[0] == 0                       # a warning only
    code, out = run("test", f, "--require-samples")
    assert code == 1 and "FAIL bare: no match / no_match sample" in out


def test_rules_test_bad_rules_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"id": "x", "pattern": "{ $.a = }"}]}')
    assert run("test", str(bad))[0] == 1
    assert "rule 'x': bad pattern" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- lint/export

def test_lint_builtin_rules_pass_and_report_processor_only():
    code, out = run("lint")
    assert code == 0
    assert "tw-lambda-function-public: processor-only TW103" in out
    assert "0 failing" in out


def test_lint_fails_undeclared_extensions_and_accepts_declared_ones(tmp_path):
    rules = [{"id": "ex", "pattern": "{ $.errorCode EXISTS }"},
             {"id": "at", "pattern": "{ $.@x = 1 }", "processor_only": True},
             {"id": "clean", "pattern": '{ $.eventName = "X" }'}]
    code, out = run("lint", write_rules(tmp_path / "r.json", rules), "--output", "json")
    doc = json.loads(out)
    assert code == 1 and doc["failed"] == 1
    by = {r["id"]: r for r in doc["rules"]}
    assert by["ex"]["findings"][0]["code"] == "TW101" and not by["ex"]["ok"]
    assert by["at"]["ok"] and by["clean"]["findings"] == []


def test_export_metric_filters_only_lint_clean_rules(capsys):
    code, out = run("export", "--metric-filters", "--log-group", "CloudTrail/org",
                    "--alarm-topic", "arn:aws:sns:us-east-1:111122223333:t")
    assert code == 0
    items = json.loads(out)
    ids = {i["rule"] for i in items}
    assert ids == PACK_IDS - {"tw-lambda-function-public", "tw-lambda-layer-public",
                              "tw-s3-bucket-made-public"}
    assert "not exported: tw-lambda-function-public" in capsys.readouterr().err
    for item in items:
        mf = item["metric_filter"]
        compile_pattern(mf["filterPattern"], strict=True)       # the documented grammar only
        assert mf["logGroupName"] == "CloudTrail/org" and len(mf["filterPattern"]) <= 1024
        assert mf["metricTransformations"][0]["metricNamespace"] == "TrailWatch"
        assert item["alarm"]["MetricName"] == mf["metricTransformations"][0]["metricName"]
        assert item["alarm"]["AlarmActions"] == ["arn:aws:sns:us-east-1:111122223333:t"]
    secrets = next(i for i in items if i["rule"] == "tw-secrets-bulk-retrieval")
    assert secrets["alarm"]["Threshold"] == 10.0 and secrets["alarm"]["MetricName"] == \
        "TwSecretsBulkRetrieval"


def test_export_named_rules_and_refusal():
    code, out = run("export", "--metric-filters", "--log-group", "g", "--rule", "cis-4.3")
    (item,) = json.loads(out)
    assert code == 0 and item["metric_filter"]["filterPattern"].startswith('{$.userIdentity.type="Root"')
    code, out = run("export", "--metric-filters", "--log-group", "g", "--rule",
                    "tw-lambda-function-public")
    assert code == 1 and json.loads(out) == []
    assert run("export", "--metric-filters", "--log-group", "g", "--rule", "nope")[0] == 2


def test_export_requires_metric_filters_flag():
    assert run("export", "--log-group", "g")[0] == 2


# ----------------------------------------------------------------------------------- backtest

def _records(n_list=3):
    return [REC_STOP] + [dict(REC_LIST, eventID=f"l{i}") for i in range(n_list)]


def test_backtest_jsonl_s3_plain_and_gzip(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
    s3 = json.dumps({"Records": _records()}).encode()
    (tmp_path / "111122223333_CloudTrail_us-east-1_x.json").write_bytes(s3)
    (tmp_path / "111122223333_CloudTrail_us-east-1_y.json.gz").write_bytes(gzip.compress(s3))
    code, out = run("backtest", str(tmp_path), "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["records"] == 12
    assert [f["records"] for f in doc["files"]] == [4, 4, 4]
    stop = next(r for r in doc["rules"] if r["id"] == "tw-cloudtrail-stopped-or-deleted")
    assert stop["matches"] == stop["alerts"] == 3
    # CIS 4.5 and the pack rule both report StopLogging: 2 alerts per file of 4 records
    assert doc["alerts"] == 6 and doc["alerts_per_1000"] == 500.0
    assert all(f["alerts_per_1000"] == 500.0 for f in doc["files"])


def test_backtest_skips_lambda_event_records(tmp_path):
    """A Kinesis/S3-notification event also has Records with eventVersion: not CloudTrail."""
    f = tmp_path / "kinesis.json"
    f.write_text(json.dumps({"Records": [{"eventSource": "aws:kinesis", "eventVersion": "1.0",
                                          "eventID": "shardId-0:1"}, REC_STOP]}))
    doc = json.loads(run("backtest", str(f), "--output", "json")[1])
    assert doc["records"] == 1 and doc["files"][0]["not_cloudtrail"] == 1


def test_backtest_text_output_and_bad_lines(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(REC_STOP) + "\nnot json\n" + json.dumps({"foo": 1}) + "\n\n")
    code, out = run("backtest", str(f))
    assert code == 0
    assert "tw-cloudtrail-stopped-or-deleted" in out
    assert "1 records, 2 alerts (2000.00 per 1,000 records)" in out
    assert out.splitlines()[-3].split()[-1] == "2"                        # skipped lines


def test_backtest_applies_thresholds_per_batch(tmp_path):
    recs = []
    for i in range(25):
        recs.append(dict(REC_LIST, eventID=f"d{i}", errorCode="AccessDenied"))
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs))
    doc = json.loads(run("backtest", str(f), "--output", "json", "--source", "pack")[1])
    (burst,) = [r for r in doc["rules"] if r["id"] == "tw-denied-api-calls-burst"]
    assert burst["matches"] == 25 and burst["alerts"] == 1
    # issue 20: the pack rule counts within 10 minutes across batches (as the processor does
    # across invocations), so the batch size no longer decides whether it fires
    doc = json.loads(run("backtest", str(f), "--output", "json", "--source", "pack",
                         "--batch-size", "10")[1])
    (burst,) = [r for r in doc["rules"] if r["id"] == "tw-denied-api-calls-burst"]
    assert burst["alerts"] == 1
    # a threshold rule without a window still counts per batch
    rules = write_rules(tmp_path / "r.json", [{"id": "per-batch", "threshold": 20,
                                               "pattern": '{ $.errorCode = "AccessDenied" }'}])
    doc = json.loads(run("backtest", str(f), "--output", "json", "--rules-file", rules,
                         "--only-rules-file", "--batch-size", "10")[1])
    assert [(r["id"], r["alerts"]) for r in doc["rules"]] == [("per-batch", 0)]


def test_backtest_with_a_rules_file_only(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _records()))
    rules = write_rules(tmp_path / "r.json", [{"id": "lb", "pattern": "{ $.eventName = ListBuckets }"}])
    doc = json.loads(run("backtest", str(f), "--rules-file", rules, "--only-rules-file",
                         "--output", "json")[1])
    assert [(r["id"], r["alerts"]) for r in doc["rules"]] == [("lb", 3)]


def test_backtest_progress_goes_to_stderr(tmp_path, capsys):
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _records()))
    code, out = run("backtest", str(f), "--progress", "always")
    err = capsys.readouterr().err
    assert code == 0 and "backtest [" in err and "100.0%" in err and "backtest [" not in out
    run("backtest", str(f))                         # auto: small input, no progress
    assert "backtest [" not in capsys.readouterr().err


def test_backtest_reports_a_broken_gzip_and_goes_on(tmp_path, capsys):
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(b'{"Records": []}')[:15])
    (tmp_path / "b.jsonl").write_text(json.dumps(REC_STOP))
    code, out = run("backtest", str(tmp_path), "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["records"] == 1
    assert "gzip" in doc["files"][0]["error"] and doc["files"][1]["error"] is None
    assert run("backtest", str(tmp_path))[0] == 0
    assert "skipped" in capsys.readouterr().err


def test_backtest_missing_file_is_a_usage_error(tmp_path, capsys):
    assert run("backtest", str(tmp_path / "nope.jsonl"))[0] == 2
    assert "no such file" in capsys.readouterr().err


def test_backtest_runs_the_tamper_rules(tmp_path):
    """Issue 20: the backtest ran builtin_rules(None), so no tamper rule ever fired. It runs them
    for the template's default names, or the names given."""
    stop = dict(REC_STOP, requestParameters={"name": "org-trail"})
    role = {"eventVersion": "1.08", "eventSource": "iam.amazonaws.com", "eventID": "e-3",
            "eventName": "DeleteRolePolicy", "userIdentity": REC_STOP["userIdentity"],
            "requestParameters": {"roleName": "trailwatch-cwl-org-trail", "policyName": "p"}}
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (stop, role)))
    doc = json.loads(run("backtest", str(f), "--output", "json", "--source", "tamper")[1])
    assert {(r["id"], r["source"], r["alerts"]) for r in doc["rules"]} == {
        ("trailwatch-tamper-trail", "tamper", 1), ("trailwatch-tamper-delivery-role", "tamper", 1)}
    doc = json.loads(run("backtest", str(f), "--output", "json", "--source", "tamper",
                         "--trail", "other-trail", "--delivery-role", "other-role")[1])
    assert doc["rules"] == [] and doc["alerts"] == 0
    assert run("backtest", str(f), "--trail", "bad name!")[0] == 2


def test_backtest_replays_windows_and_suppressions_like_the_processor(tmp_path):
    """Issue 20: the same dedup windows and suppressions as the processor, records in eventTime
    order, alerts per 1,000 records per rule and per rule set."""
    def login(n, user, minute):
        return {"eventVersion": "1.08", "eventID": f"l{n}", "eventName": "ConsoleLogin",
                "eventSource": "signin.amazonaws.com", "eventType": "AwsConsoleSignIn",
                "eventTime": f"2026-12-07T10:{minute:02d}:00Z", "recipientAccountId": "111122223333",
                "userIdentity": {"type": "IAMUser", "accountId": "111122223333",
                                 "arn": f"arn:aws:iam::111122223333:user/{user}"},
                "additionalEventData": {"MFAUsed": "No"},
                "responseElements": {"ConsoleLogin": "Success"}}
    f = tmp_path / "logins.jsonl"     # out of order on purpose
    f.write_text("\n".join(json.dumps(login(n, u, m)) for n, (u, m) in
                           enumerate([("bob", 30), ("ann", 5), ("cy", 50), ("ann", 10)])))
    doc = json.loads(run("backtest", str(f), "--output", "json", "--source", "cis")[1])
    # one CIS signal per control, user and day: ann's second sign-in is counted, not alerted
    assert doc["records"] == 4 and doc["alerts"] == 3
    assert doc["by_source"] == {"cis": {"alerts": 3, "alerts_per_1000": 750.0}}
    (cis,) = doc["rules"]
    assert cis["id"] == "cis-4.2" and cis["matches"] == 4 and cis["alerts_per_1000"] == 750.0
    rules = tmp_path / "r.json"
    rules.write_text(json.dumps({"rules": [], "suppressions": [{
        "rules": "*", "recipient_account": "111122223333", "expires": "2099-01-01",
        "reason": "r"}]}))
    assert run("backtest", str(f), "--rules-file", str(rules))[0] == 2    # > 366 days: refused
    rules.write_text(json.dumps({"rules": [], "suppressions": [{
        "rules": "*", "recipient_account": "111122223333",
        "expires": (__import__("datetime").date.today().replace(day=1) +
                    __import__("datetime").timedelta(days=60)).isoformat(), "reason": "r"}]}))
    doc = json.loads(run("backtest", str(f), "--output", "json", "--rules-file", str(rules))[1])
    assert doc["alerts"] == 0 and doc["windowed"] >= 4


def test_backtest_by_day(tmp_path):
    recs = [dict(REC_STOP, eventID=f"s{d}{i}", eventTime=f"2026-12-0{d}T10:0{i}:00Z",
                 recipientAccountId="111122223333")
            for d in (6, 7) for i in range(2)] + [dict(REC_LIST, eventTime="2026-12-07T11:00:00Z")]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs))
    doc = json.loads(run("backtest", str(f), "--output", "json", "--by-day")[1])
    # per day: the pack rule once per principal-hour, the CIS signal once per account-day
    assert doc["days"] == [
        {"day": "2026-12-06", "records": 2, "alerts": 2, "alerts_per_1000": 1000.0},
        {"day": "2026-12-07", "records": 3, "alerts": 2, "alerts_per_1000": 666.67}]
    assert "days" not in json.loads(run("backtest", str(f), "--output", "json")[1])
    code, out = run("backtest", str(f), "--by-day")
    assert code == 0 and "DAY" in out and "2026-12-07  3" in out


def test_rules_errors_go_through_the_clis_one_error_handler(tmp_path):
    """`rules` printed its own errors: with --output json there was no JSON error object."""
    import contextlib
    import io
    import json as _json
    out = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["--output", "json", "rules", "test", str(tmp_path / "missing.json")], out=out)
    assert code == 1
    assert _json.loads(out.getvalue())["error"]["code"] == "RulesFileInvalid"
    out = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["--output", "json", "rules", "backtest", "--batch-size", "0",
                     str(tmp_path)], out=out)
    assert code == 2 and _json.loads(out.getvalue())["error"]["code"] == "UsageError"
