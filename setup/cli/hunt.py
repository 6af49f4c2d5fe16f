"""``trailwatch hunt``: run a detection rule over a trail's log group history.

Its ``--help`` text is :data:`DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from handlers.detection.builtin import builtin_rules
from handlers.detection.rules import Rule, RuleLoadError, load_rules_file
from setup.errors import EXIT_OK, SetupError, UsageError
from setup.hunt import HuntStats, hunt, parse_time, server_pattern
from setup.wiring.state import find_trail

DESCRIPTION = """\
Runs a detection rule over the trail's CloudWatch Logs history, server-side: the rule's filter
pattern goes to FilterLogEvents, so only candidate events leave CloudWatch Logs, and each one is
then checked with the processor's own engine (a rule with processor-only syntax is sent as the
coarser pattern its eventNames imply). Matches are JSON lines on stdout, one per event with the
whole record; progress goes to stderr when it is a terminal, and a summary line always.
Thresholds and dedup windows are not applied: every matching event is listed. Read-only.

examples:
  trailwatch hunt --trail org-trail --rule tw-cloudtrail-stopped-or-deleted
  trailwatch hunt --trail org-trail --rule cis-4.3 --since 30d --region us-east-1
  trailwatch hunt --trail org-trail --rule my-rule --rules-file rules.json --since 2026-12-01T00:00:00Z
"""


def _rules(args: argparse.Namespace, trail: Any, log_group: str) -> list[Rule]:
    env = {"TRAIL_NAME": trail.name, "TRAIL_LOG_GROUP_NAME": log_group}
    if trail.role_arn:
        env["DELIVERY_ROLE_NAME"] = trail.role_arn.rsplit("/", 1)[-1]
    rules = builtin_rules(env)
    if args.rules_file:
        try:
            rules += load_rules_file(args.rules_file, taken={r.id for r in rules})
        except RuleLoadError as e:
            raise UsageError(str(e), "check the rules file with `trailwatch rules lint FILE`",
                             code="RulesFileInvalid") from None
    return rules


def _log_group(args: argparse.Namespace, trail: Any) -> tuple[str, str]:
    """(log group name, its region): --log-group, else the one the trail delivers to."""
    if args.log_group:
        return args.log_group, trail.home_region
    if not trail.log_group_arn:
        raise SetupError(f"trail {trail.name} does not deliver to CloudWatch Logs",
                         f"run `trailwatch apply --trail {trail.arn}` first, or pass "
                         "--log-group NAME", code="NoLogGroup")
    parts = trail.log_group_arn.split(":")
    return parts[6], parts[3]


def cmd_hunt(clients: Any, args: argparse.Namespace, out: TextIO,
             err: TextIO | None = None, clock: Callable[[], float] = time.time) -> int:
    err = err or sys.stderr
    if not args.trail:
        raise UsageError("--trail is required", "pass --trail NAME|ARN (the trail whose log "
                         "group to search)")
    now = clock()
    start = parse_time(args.since, now)
    end = parse_time(args.until, now) if args.until else now
    if start >= end:
        raise UsageError(f"--since ({args.since}) is not before --until "
                         f"({args.until or 'now'})", "pass an earlier --since", code="BadTime")
    trail = find_trail(clients, args.trail)
    group, region = _log_group(args, trail)
    by_id = {r.id: r for r in _rules(args, trail, group)}
    wanted = []
    for rid in args.rule:
        if rid not in by_id:
            close = difflib.get_close_matches(rid, list(by_id), n=3)
            raise UsageError(f"no rule {rid!r}" + (f" (did you mean {', '.join(close)}?)"
                                                   if close else ""),
                             "list the rules with `trailwatch rules list`", code="UnknownRule")
        wanted.append(by_id[rid])
    logs = clients.client("logs", region)
    live = hasattr(err, "isatty") and err.isatty() and not getattr(args, "no_progress", False)
    for rule in wanted:
        pattern, exact = server_pattern(rule)
        stats = HuntStats()

        def progress(s: HuntStats, rid: str = rule.id) -> None:
            if live:
                print(f"\r{rid}: {s.pages} page(s), {s.scanned} event(s) read, "
                      f"{s.matched} match(es)", end="", file=err, flush=True)
        for doc in hunt(logs, group, rule, start, end, stats, progress):
            out.write(orjson.dumps(doc).decode() + "\n")
        if live:
            print("", file=err)
        how = "the rule's own pattern" if exact else \
            (f"the coarser pattern {pattern}" if pattern else "no pattern (every event)")
        print(f"{rule.id}: {stats.matched} match(es) in {stats.scanned} event(s) of {group} "
              f"({region}), filtered server-side with {how}"
              + (f"; {stats.unreadable} event(s) were not JSON records" if stats.unreadable
                 else ""), file=err)
    return EXIT_OK


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("hunt", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="run a detection rule over the trail's log group history "
                            "(server-side, JSON lines)", description=DESCRIPTION)
    p.add_argument("--rule", action="append", required=True, metavar="ID",
                   help="rule id (see `trailwatch rules list`); repeat for several rules")
    p.add_argument("--since", default="7d", metavar="WHEN",
                   help="start: 7d, 12h, 30m ago, or an ISO 8601 time (default 7d)")
    p.add_argument("--until", metavar="WHEN", help="end, same forms (default: now)")
    p.add_argument("--rules-file", metavar="PATH",
                   help="also load your own rules (the processor's RULES_FILE format)")
    p.add_argument("--log-group", metavar="NAME",
                   help="the log group to search (default: the one the trail delivers to)")
    return p
