"""``trailwatch rules``: list, test, backtest, lint and export detection rules; import Sigma.

Its ``--help`` text is :data:`DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from handlers.alert_state import MemoryStore, Windows
from handlers.detection.builtin import builtin_rules
from handlers.detection.patterns import lint_pattern
from handlers.detection.rules import Rule, RuleLoadError, build_index, load_rules_file
from handlers.detection.thresholds import apply_thresholds, key_of, thresholds_of
from handlers.detection.tuning import TuningError, load_tuning
from setup.errors import SetupError, UsageError

DESCRIPTION = """\
Works offline, on the same built-in rules the processor loads (the CIS controls and the
detection pack) or on a RULES_FILE. No AWS calls.

    trailwatch rules list [RULES_FILE]
    trailwatch rules test [RULES_FILE]            # every rule's match / no_match samples
    trailwatch rules backtest FILE|DIR...         # JSONL or CloudTrail S3 files (.json, .json.gz)
    trailwatch rules lint [RULES_FILE]            # metric-filter grammar check
    trailwatch rules export --metric-filters [RULES_FILE] --log-group NAME
    trailwatch rules import-sigma DIR|FILE... [-o rules.json]
"""

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_BATCH = 1000
PROGRESS_MIN_BYTES = 8 * 1024 * 1024     # show progress for inputs at least this large
DEFAULT_NAMESPACE = "TrailWatch"


def register(sub: Any) -> None:
    """Add ``rules`` and its subcommands to the CLI's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    rp = sub.add_parser("rules", formatter_class=fmt, help="list, test, backtest, lint and "
                        "export detection rules; import Sigma",
                        description=DESCRIPTION)
    rs = rp.add_subparsers(dest="rules_command", metavar="ACTION", required=True)

    def rules_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("rules_file", nargs="?", metavar="RULES_FILE",
                       help="a rules JSON file ({\"rules\": [...]}); default: the built-in "
                            "rules (CIS controls and the detection pack)")

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output", choices=("text", "json"), default="text",
                       help="output format")

    p = rs.add_parser("list", formatter_class=fmt, help="id, severity, ATT&CK and source of "
                      "every rule")
    rules_file(p)
    output(p)
    p.add_argument("--source", choices=("cis", "pack", "tamper", "user"),
                   help="only rules from this source")

    p = rs.add_parser("test", formatter_class=fmt, help="run every rule's sample events "
                      "(exit 1 on a failure)",
                      description="Each rule's tests.match records must match and its "
                                  "tests.no_match records must not. Exit 1 when any sample "
                                  "fails (or, with --require-samples, a rule has none).")
    rules_file(p)
    output(p)
    p.add_argument("--require-samples", action="store_true",
                   help="fail rules without at least one match and one no_match sample")

    p = rs.add_parser("backtest", formatter_class=fmt,
                      help="run the rules over CloudTrail files you already have",
                      description="Read CloudTrail records from JSONL files (one record per "
                                  "line) or CloudTrail S3 log files ({\"Records\": [...]}, plain "
                                  "or .gz), directories included, and print matches and alerts "
                                  "per rule and alerts per 1,000 records. Threshold rules count "
                                  "per principal within batches of --batch-size records, as the "
                                  "processor does per delivery batch. The tamper rules run for "
                                  "the names given by --trail, --log-group, --delivery-role and "
                                  "--function-name (the template's defaults unless given).")
    p.add_argument("files", nargs="+", metavar="FILE|DIR")
    p.add_argument("--rules-file", metavar="RULES_FILE",
                   help="add these rules to the built-in ones")
    p.add_argument("--only-rules-file", action="store_true",
                   help="with --rules-file: backtest only that file's rules")
    p.add_argument("--source", choices=("cis", "pack", "tamper", "user"),
                   help="only rules from this source")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N",
                   help=f"records per batch for threshold rules (default {DEFAULT_BATCH})")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress on stderr (auto: for inputs of 8 MB or more)")
    p.add_argument("--by-day", action="store_true",
                   help="also report records, alerts and alerts per 1,000 records per UTC day "
                        "(of eventTime)")
    tamper_names(p)
    output(p)

    p = rs.add_parser("lint", formatter_class=fmt,
                      help="flag patterns a CloudWatch Logs metric filter would not accept",
                      description="Check every pattern against AWS's documented filter-pattern "
                                  "grammar. Processor-only extensions (EXISTS, '@' in names, "
                                  "'\\*', unquoted special characters, exponents, > 1024 "
                                  "characters) are reported; a rule that uses them without "
                                  "declaring \"processor_only\": true fails (exit 1).")
    rules_file(p)
    output(p)

    p = rs.add_parser("export", formatter_class=fmt,
                      help="write rules as CloudWatch Logs metric filters and alarms",
                      description="Print PutMetricFilter and PutMetricAlarm parameters (JSON) "
                                  "for lint-clean rules, one metric per rule. Processor-only "
                                  "rules are never exported.")
    rules_file(p)
    p.add_argument("--metric-filters", action="store_true", required=True,
                   help="export as metric filters (the only export format)")
    p.add_argument("--log-group", required=True, metavar="NAME",
                   help="the CloudTrail log group the filters go on")
    p.add_argument("--rule", action="append", metavar="ID", dest="rule_ids",
                   help="export only this rule (repeatable); default: every exportable rule")
    p.add_argument("--source", choices=("cis", "pack", "tamper", "user"),
                   help="only rules from this source (default: all but cis, which "
                        "'apply --cis-alarms' deploys)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                   help=f"metric namespace (default {DEFAULT_NAMESPACE})")
    p.add_argument("--alarm-topic", metavar="ARN", help="SNS topic for the alarms' actions")

    p = rs.add_parser("import-sigma", formatter_class=fmt,
                      help="convert Sigma rules (AWS CloudTrail) into a rules file",
                      description="Convert Sigma rules whose logsource is AWS CloudTrail into "
                                  "trailwatch rules with pySigma. Every rule or condition that "
                                  "cannot be converted is reported with the reason (stderr); "
                                  "exit 1 when any was refused.")
    p.add_argument("paths", nargs="+", metavar="DIR|FILE")
    p.add_argument("-o", "--out", metavar="FILE", help="write the rules file here "
                   "(default: stdout)")


# ----------------------------------------------------------------------------------- helpers

# The names the template's processor watches by default (template.yaml TrailName,
# TrailLogGroupName, DeliveryRoleName): the tamper rules a backtest runs.
TAMPER_DEFAULTS = {"TRAIL_NAME": "org-trail", "TRAIL_LOG_GROUP_NAME": "CloudTrail/org-trail",
                   "DELIVERY_ROLE_NAME": "trailwatch-cwl-org-trail"}


def tamper_names(p: argparse.ArgumentParser) -> None:
    """Options naming what the tamper rules watch (handlers/detection/tamper.py)."""
    p.add_argument("--trail", default=TAMPER_DEFAULTS["TRAIL_NAME"], metavar="NAME",
                   help="tamper rules: the trail (default: the template's org-trail)")
    p.add_argument("--log-group", default=TAMPER_DEFAULTS["TRAIL_LOG_GROUP_NAME"],
                   metavar="NAME", help="tamper rules: the trail's log group")
    p.add_argument("--delivery-role", default=TAMPER_DEFAULTS["DELIVERY_ROLE_NAME"],
                   metavar="NAME", help="tamper rules: the CloudTrail delivery role")
    p.add_argument("--function-name", default="", metavar="NAME",
                   help="tamper rules: the processor function (default: not watched)")


def tamper_env(args: argparse.Namespace) -> dict[str, str]:
    """The processor environment the tamper rules are built from (empty names: not watched)."""
    env = {"TRAIL_NAME": getattr(args, "trail", ""), "TRAIL_LOG_GROUP_NAME":
           getattr(args, "log_group", ""), "DELIVERY_ROLE_NAME": getattr(args, "delivery_role", ""),
           "AWS_LAMBDA_FUNCTION_NAME": getattr(args, "function_name", "")}
    return {k: v for k, v in env.items() if v}


def _load(path: str | None) -> list[Rule]:
    return load_rules_file(path) if path else builtin_rules(None)


def _attack(r: Rule) -> str:
    return ",".join(r.tactics + r.techniques) or "-"


def _dump(doc: Any, out: TextIO) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False), file=out)


def _table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


# ----------------------------------------------------------------------------------- list/test

def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    rules = [r for r in _load(args.rules_file) if not args.source or r.source == args.source]
    if args.output == "json":
        _dump([{"id": r.id, "title": r.title, "severity": r.severity, "source": r.source,
                "attack": {"tactics": list(r.tactics), "techniques": list(r.techniques)},
                "threshold": r.threshold, "processor_only": r.processor_only,
                "cis": r.cis, "securityhub": r.securityhub,
                "window_minutes": r.window_minutes, "dedup_key": list(r.dedup_key),
                "window_group": r.window_group or None} for r in rules], out)
        return EXIT_OK
    rows = [["ID", "SEVERITY", "SOURCE", "ATT&CK", "NOTES"]]
    for r in rules:
        notes = []
        if r.cis:
            notes.append(f"CIS {r.cis}" + (f" / {r.securityhub}" if r.securityhub else ""))
        key = "+".join(r.dedup_key)
        if r.threshold:
            notes.append(f">= {r.threshold} per {key} in {r.window_minutes} min"
                         if r.window_minutes else f">= {r.threshold} per principal per batch")
        elif r.window_minutes:
            notes.append(f"1 per {key} per {r.window_minutes} min"
                         + (f" ({r.window_group})" if r.window_group else ""))
        if r.processor_only:
            notes.append("processor-only")
        rows.append([r.id, r.severity, r.source, _attack(r), "; ".join(notes)])
    _table(rows, out)
    print(f"\n{len(rules)} rule(s)", file=out)
    return EXIT_OK


def run_samples(rules: list[Rule], require_samples: bool = False) -> list[dict[str, Any]]:
    """One entry per rule: counts of passed samples and the failures (kind, index, eventName)."""
    report = []
    for r in rules:
        failures = []
        counts = {"match": 0, "no_match": 0}
        for kind in ("match", "no_match"):
            for i, rec in enumerate(r.tests.get(kind, ()) if isinstance(r.tests, dict) else ()):
                counts[kind] += 1
                try:
                    got = bool(r.pattern.match(rec)) if isinstance(rec, dict) else None
                except Exception as e:  # a sample that crashes the engine is a failure too
                    got = f"error: {e}"
                if got is not (kind == "match"):
                    failures.append({"kind": kind, "index": i, "got": got,
                                     "eventName": rec.get("eventName")
                                     if isinstance(rec, dict) else None})
        missing = [k for k in ("match", "no_match") if not counts[k]]
        report.append({"id": r.id, "source": r.source, "samples": counts, "failures": failures,
                       "missing": missing,
                       "ok": not failures and not (require_samples and missing)})
    return report


def cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    rules = _load(args.rules_file)
    report = run_samples(rules, args.require_samples)
    bad = [r for r in report if not r["ok"]]
    if args.output == "json":
        _dump({"rules": report, "failed": len(bad)}, out)
        return EXIT_FAIL if bad else EXIT_OK
    total = sum(r["samples"]["match"] + r["samples"]["no_match"] for r in report)
    for r in report:
        for f in r["failures"]:
            want = "match" if f["kind"] == "match" else "not match"
            print(f"FAIL {r['id']}: {f['kind']}[{f['index']}] ({f['eventName']}) should "
                  f"{want}", file=out)
        if r["missing"]:
            word = "FAIL" if args.require_samples else "warn"
            print(f"{word} {r['id']}: no {' / '.join(r['missing'])} sample", file=out)
    print(f"{len(report) - len(bad)}/{len(report)} rules passed, {total} samples", file=out)
    return EXIT_FAIL if bad else EXIT_OK


# ----------------------------------------------------------------------------------- backtest

def _open(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise OSError(f"not a valid gzip file: {e}") from None
    return data


def iter_input_files(paths: list[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file() and (q.name.endswith((".json", ".jsonl", ".gz"))):
                    yield q
        else:
            yield p


def iter_records(data: bytes) -> Iterator[tuple[Any, bool]]:
    """(record, parsed) from a CloudTrail S3 file, a JSON array/object or JSONL. A line that is
    not JSON yields (line, False)."""
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        else:
            if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
                yield from ((r, True) for r in doc["Records"])
                return
            if isinstance(doc, list):
                yield from ((r, True) for r in doc)
                return
            yield doc, True
            return
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line, False
            continue
        if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
            yield from ((r, True) for r in doc["Records"])
        else:
            yield doc, True


def _event_time(rec: dict[str, Any]) -> str:
    t = rec.get("eventTime")
    return t if isinstance(t, str) else ""


def _is_cloudtrail(rec: Any) -> bool:
    """The processor's test, plus: Lambda event records (S3 notifications, Kinesis, SQS: an
    ``eventSource`` like ``aws:s3``) found in a ``Records`` list are not CloudTrail."""
    if not isinstance(rec, dict):
        return False
    src = rec.get("eventSource")
    if isinstance(src, str) and src.startswith("aws:"):
        return False
    return "eventVersion" in rec or "eventID" in rec or "eventType" in rec or "eventSource" in rec


@dataclass
class FileStats:
    path: str
    records: int = 0
    invalid: int = 0
    not_cloudtrail: int = 0
    alerts: int = 0
    error: str | None = None
    matches: Counter = field(default_factory=Counter)
    alerts_by_rule: Counter = field(default_factory=Counter)
    windowed: int = 0          # matches suppressed, deduplicated or below a windowed threshold

    def per_1000(self) -> float:
        return round(self.alerts * 1000 / self.records, 2) if self.records else 0.0


class Progress:
    def __init__(self, total_bytes: int, mode: str, err: TextIO) -> None:
        self.on = mode == "always" or (mode == "auto" and total_bytes >= PROGRESS_MIN_BYTES)
        self.total = max(total_bytes, 1)
        self.err = err
        self.last = 0.0

    def update(self, done_bytes: int, records: int, force: bool = False) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        frac = min(done_bytes / self.total, 1.0)
        bar = "#" * int(frac * 30)
        print(f"\rbacktest [{bar:<30}] {frac:6.1%} {records:,} records", end="",
              file=self.err, flush=True)

    def close(self, records: int) -> None:
        if self.on:
            self.update(self.total, records, force=True)
            print(file=self.err, flush=True)


def _windowed_groups(batch: list[dict[str, Any]], by_id: dict[str, Rule]
                     ) -> list[dict[str, Any]]:
    """A batch's matches of threshold rules with a window as the pipeline hands them on: one
    alert per (rule, key) carrying the batch's count (handlers.pipeline._collapse)."""
    out: list[Any] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alert in batch:
        rule = by_id.get(alert["rule"]["id"])
        if rule is None or not (rule.threshold and rule.window_minutes):
            out.append(alert)
            continue
        gkey = (rule.id, key_of(rule, alert["event"]))
        if gkey not in groups:
            groups[gkey] = []
            out.append(gkey)
        groups[gkey].append(alert)
    result = []
    for item in out:
        if isinstance(item, tuple):
            group = groups[item]
            result.append(dict(group[0], threshold={"count": len(group)}))
        else:
            result.append(item)
    return result


def backtest(rules: list[Rule], paths: list[str], batch_size: int = DEFAULT_BATCH,
             progress: str = "never", err: TextIO | None = None,
             suppressions: list[Any] | None = None) -> dict[str, Any]:
    """Run ``rules`` over the files: per-file and per-rule matches/alerts (JSON-ready).

    Records are replayed in eventTime order (within each file) through what the processor
    applies: thresholds per batch of ``batch_size`` records, then the suppressions, dedup windows
    and cross-invocation thresholds of handlers/alert_state.py, with the state table simulated
    in memory for the whole replay."""
    index = build_index(rules)
    by_id = {r.id: r for r in rules}
    limits = {rid: n for rid, n in thresholds_of(rules).items() if not by_id[rid].window_minutes}
    windows = Windows(rules, MemoryStore(), suppressions or ())
    day_records: Counter = Counter()
    day_alerts: Counter = Counter()
    files = list(iter_input_files(paths))
    sizes = {f: f.stat().st_size for f in files}
    bar = Progress(sum(sizes.values()), progress, err or sys.stderr)
    stats: list[FileStats] = []
    done = total_records = 0
    for path in files:
        fs = FileStats(str(path))
        stats.append(fs)
        batch: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        in_batch = 0

        def flush(fs: FileStats = fs) -> None:
            nonlocal batch, seen, in_batch
            kept = apply_thresholds(batch, limits)
            if windows.active:
                kept = windows.apply(_windowed_groups(kept, by_id))
                fs.windowed += sum(windows.stats.values()) - windows.stats["state_errors"]
            for alert in kept:
                fs.alerts += 1
                fs.alerts_by_rule[alert["rule"]["id"]] += 1
                day_alerts[_event_time(alert["event"])[:10] or "unknown"] += 1
            batch, seen, in_batch = [], set(), 0

        try:
            data = _open(path)
        except OSError as e:          # one unreadable file does not end a long backtest
            fs.error = str(e)
            done += sizes[path]
            continue
        records: list[Any] = []
        for rec, parsed in iter_records(data):
            if not parsed:
                fs.invalid += 1
                continue
            if not _is_cloudtrail(rec):
                fs.not_cloudtrail += 1
                continue
            records.append(rec)
        records.sort(key=_event_time)          # replayed in eventTime order (stable)
        for rec in records:
            fs.records += 1
            day_records[_event_time(rec)[:10] or "unknown"] += 1
            in_batch += 1
            for rule in index.matches(rec):
                fs.matches[rule.id] += 1
                eid = rec.get("eventID")
                key = (rule.id, eid if isinstance(eid, str) else f"n{fs.records}")
                if key in seen:            # the processor dedups alert ids within a batch
                    continue
                seen.add(key)
                batch.append({"kind": "rule_match", "rule": {"id": rule.id},
                              "alert_id": f"{key[0]}|{key[1]}", "event": rec})
            if in_batch >= batch_size:
                flush()
            if fs.records % 2000 == 0:
                bar.update(done, total_records + fs.records)
        flush()
        done += sizes[path]
        total_records += fs.records
        bar.update(done, total_records)
    bar.close(total_records)
    matches: Counter = Counter()
    alerts: Counter = Counter()
    for fs in stats:
        matches.update(fs.matches)
        alerts.update(fs.alerts_by_rule)
    n_alerts = sum(alerts.values())

    def per_1000(n: int) -> float:
        return round(n * 1000 / total_records, 2) if total_records else 0.0

    by_source: dict[str, dict[str, Any]] = {}
    for rid, n in alerts.items():
        src = by_source.setdefault(by_id[rid].source, {"alerts": 0})
        src["alerts"] += n
    for src in by_source.values():
        src["alerts_per_1000"] = per_1000(src["alerts"])
    return {
        "records": total_records,
        "alerts": n_alerts,
        "alerts_per_1000": per_1000(n_alerts),
        "by_source": by_source,
        "windowed": sum(fs.windowed for fs in stats),
        "days": [{"day": day, "records": n, "alerts": day_alerts[day],
                  "alerts_per_1000": round(day_alerts[day] * 1000 / n, 2)}
                 for day, n in sorted(day_records.items())],
        "batch_size": batch_size,
        "files": [{"path": fs.path, "records": fs.records, "invalid": fs.invalid,
                   "not_cloudtrail": fs.not_cloudtrail, "alerts": fs.alerts, "error": fs.error,
                   "alerts_per_1000": fs.per_1000(),
                   "alerts_by_rule": dict(fs.alerts_by_rule.most_common())} for fs in stats],
        "rules": [{"id": rid, "severity": by_id[rid].severity, "source": by_id[rid].source,
                   "threshold": by_id[rid].threshold, "matches": matches[rid],
                   "alerts": alerts[rid], "alerts_per_1000": per_1000(alerts[rid])}
                  for rid in sorted(matches, key=lambda k: (-alerts[k], -matches[k], k))],
    }


def cmd_backtest(args: argparse.Namespace, out: TextIO) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    missing = [f for f in args.files if not Path(f).exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    try:
        rules = [] if args.only_rules_file else builtin_rules(tamper_env(args))
    except ValueError as e:            # a name the tamper rules refuse
        raise UsageError(f"{e}")
    suppressions: list[Any] = []
    if args.rules_file:
        tuning: dict[str, Any] = {}
        rules = rules + load_rules_file(args.rules_file, tuning=tuning)
        try:
            rules, suppressions = load_tuning(rules, tuning)
        except TuningError as e:
            raise UsageError(f"{e}")
    elif args.only_rules_file:
        raise UsageError("--only-rules-file needs --rules-file")
    if args.source:
        rules = [r for r in rules if r.source == args.source]
    report = backtest(rules, args.files, args.batch_size, args.progress,
                      suppressions=suppressions)
    if not args.by_day:
        report.pop("days")
    if args.output == "json":
        _dump(report, out)
        return EXIT_OK
    rows = [["RULE", "SEVERITY", "SOURCE", "MATCHES", "ALERTS"]]
    rows += [[r["id"], r["severity"], r["source"], str(r["matches"]), str(r["alerts"])]
             for r in report["rules"]]
    if len(rows) > 1:
        _table(rows, out)
        print(file=out)
    frows = [["FILE", "RECORDS", "ALERTS", "PER 1,000", "SKIPPED"]]
    for f in report["files"]:
        if f["error"]:
            print(f"trailwatch: skipped {f['path']}: {f['error']}", file=sys.stderr)
        skipped = f["invalid"] + f["not_cloudtrail"]
        frows.append([f["path"], f"{f['records']:,}", f"{f['alerts']:,}",
                      f"{f['alerts_per_1000']:.2f}", str(skipped) if skipped else ""])
    _table(frows, out)
    if args.by_day:
        print(file=out)
        _table([["DAY", "RECORDS", "ALERTS", "PER 1,000"]] +
               [[d["day"], f"{d['records']:,}", f"{d['alerts']:,}", f"{d['alerts_per_1000']:.2f}"]
                for d in report["days"]], out)
    print(f"\n{report['records']:,} records, {report['alerts']:,} alerts "
          f"({report['alerts_per_1000']:.2f} per 1,000 records), "
          f"{sum(1 for r in report['rules'] if r['matches'])} rule(s) matched", file=out)
    return EXIT_OK


# ----------------------------------------------------------------------------------- lint/export

def lint_rules(rules: list[Rule]) -> list[dict[str, Any]]:
    report = []
    for r in rules:
        findings = lint_pattern(r.pattern.text)
        report.append({"id": r.id, "source": r.source, "processor_only": r.processor_only,
                       "findings": [f._asdict() for f in findings],
                       "ok": not findings or r.processor_only})
    return report


def cmd_lint(args: argparse.Namespace, out: TextIO) -> int:
    report = lint_rules(_load(args.rules_file))
    bad = [r for r in report if not r["ok"]]
    if args.output == "json":
        _dump({"rules": report, "failed": len(bad)}, out)
        return EXIT_FAIL if bad else EXIT_OK
    for r in report:
        for f in r["findings"]:
            tag = "processor-only" if r["processor_only"] else "error"
            print(f"{r['id']}: {tag} {f['code']} at {f['position']}: {f['message']}", file=out)
    clean = sum(1 for r in report if not r["findings"])
    flagged = sum(1 for r in report if r["findings"] and r["processor_only"])
    print(f"{clean} lint-clean (exportable), {flagged} declared processor-only, "
          f"{len(bad)} failing", file=out)
    return EXIT_FAIL if bad else EXIT_OK


def _metric_name(rule_id: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", rule_id) if p)


def export_metric_filters(rules: list[Rule], log_group: str, namespace: str,
                          topic: str | None = None) -> list[dict[str, Any]]:
    out = []
    for r in rules:
        metric = _metric_name(r.id)
        name = f"trailwatch-{r.id}"[:512]
        alarm: dict[str, Any] = {
            "AlarmName": name, "AlarmDescription": f"{r.title} ({r.severity}; trailwatch rule "
                                                  f"{r.id})"[:1024],
            "Namespace": namespace, "MetricName": metric, "Statistic": "Sum", "Period": 300,
            "EvaluationPeriods": 1, "Threshold": float(max(r.threshold, 1)),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        }
        if topic:
            alarm["AlarmActions"] = [topic]
        out.append({"rule": r.id, "severity": r.severity,
                    "metric_filter": {"logGroupName": log_group, "filterName": name,
                                      "filterPattern": r.pattern.text,
                                      "metricTransformations": [{
                                          "metricName": metric, "metricNamespace": namespace,
                                          "metricValue": "1", "defaultValue": 0.0}]},
                    "alarm": alarm})
    return out


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    rules = _load(args.rules_file)
    if args.rule_ids:
        known = {r.id for r in rules}
        unknown = [i for i in args.rule_ids if i not in known]
        if unknown:
            raise UsageError(f"unknown rule id(s): {', '.join(unknown)}")
        rules = [r for r in rules if r.id in set(args.rule_ids)]
    elif args.source:
        rules = [r for r in rules if r.source == args.source]
    else:
        rules = [r for r in rules if r.source != "cis"]
    refused = [(r, lint_pattern(r.pattern.text)) for r in rules]
    refused = [(r, f) for r, f in refused if f or r.processor_only]
    for r, findings in refused:
        why = findings[0].message if findings else "declared processor-only"
        print(f"trailwatch: not exported: {r.id}: {why}", file=sys.stderr)
    bad_ids = {r.id for r, _ in refused}
    ok = [r for r in rules if r.id not in bad_ids]
    _dump(export_metric_filters(ok, args.log_group, args.namespace, args.alarm_topic), out)
    # Asking for a specific rule that cannot be exported is an error; a bulk export skips them.
    return EXIT_FAIL if (args.rule_ids and refused) else EXIT_OK


# ----------------------------------------------------------------------------------- sigma

def cmd_import_sigma(args: argparse.Namespace, out: TextIO) -> int:
    from setup.sigma import convert_paths
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    try:
        results = convert_paths(args.paths)
    except RuntimeError as e:
        print(f"trailwatch: {e}", file=sys.stderr)
        return EXIT_FAIL
    converted = [r for r in results if r.rule]
    refused = [r for r in results if not r.rule]
    ids: Counter = Counter(r.rule["id"] for r in converted)
    for r in converted:
        note = f" ({'; '.join(r.notes)})" if r.notes else ""
        print(f"converted: {r.source}: {r.title} -> {r.rule['id']}{note}", file=sys.stderr)
    for r in refused:
        print(f"not converted: {r.source}: {r.title}: {r.reason}", file=sys.stderr)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        print(f"trailwatch: duplicate rule ids after conversion: {', '.join(dup)}",
              file=sys.stderr)
        return EXIT_FAIL
    doc = {"rules": [r.rule for r in converted]}
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text, file=out)
    print(f"{len(converted)} converted, {len(refused)} not converted", file=sys.stderr)
    return EXIT_FAIL if refused or not converted else EXIT_OK


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    handler = {"list": cmd_list, "test": cmd_test, "backtest": cmd_backtest, "lint": cmd_lint,
               "export": cmd_export, "import-sigma": cmd_import_sigma}[args.rules_command]
    try:
        return handler(args, out)
    except RuleLoadError as e:   # the CLI's one error handler prints it (JSON with --output json)
        raise SetupError(str(e), "check the file with `trailwatch rules lint FILE`",
                         code="RulesFileInvalid") from None
    except BrokenPipeError:   # the reader went away (`| head`): the CLI ends quietly
        raise
    except OSError as e:
        raise SetupError(str(e), code="CannotRead") from None


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="trailwatch")
    register(parser.add_subparsers(dest="command"))
    sys.exit(run(parser.parse_args(["rules", *sys.argv[1:]])))
