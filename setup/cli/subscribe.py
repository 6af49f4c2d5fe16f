"""``trailwatch subscribe``: send the trail's log group to a CloudWatch Logs destination.

Its ``--help`` text is :data:`DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO

from setup.cli.commands import show_and_confirm
from setup.errors import EXIT_OK, SetupError, UsageError
from setup.wiring.planner import Plan
from setup.wiring.state import read_log_group
from setup.wiring.subscription import plan_subscription, read_filters
from setup.wiring.target import resolve_target

DESCRIPTION = """\
Run in the account that owns the trail's log group (for an organization trail, the management
account). It adds one subscription filter to the log group, in the trail's home region, pointing
at the destination ARN the audit account's stack printed (output DestinationArn), or at a
same-account Lambda function, Kinesis stream or Firehose stream. `trailwatch apply --destination
ARN` does the same as part of the wiring, and `trailwatch remove` takes trailwatch's filter away.

Rules it follows:

- A log group has at most 2 subscription filters (a hard limit). When both are taken by
  others, it refuses and lists them; it never replaces someone else's filter.
- The filter is trailwatch's by name (trailwatch-subscribe-<trail>; subscription filters
  cannot be tagged). Re-running converges: a filter that already sends everything to the same
  destination (whatever its name) means nothing to do; trailwatch's own filter pointing elsewhere
  is updated, and the plan says which destination it replaces.
- The destination must be in the log group's Region. Cross-account, only a CloudWatch Logs
  destination works (Lambda, Kinesis and Firehose must be in the same account as the filter).
  Kinesis and Firehose targets need --subscription-role (the role CloudWatch Logs assumes).
  So does a destination whose access policy grants a whole organization (the audit stack's
  SourceOrganizationId): a role in this account trusted by logs.amazonaws.com and allowed
  logs:PutLogEvents on the log group, which CloudWatch Logs assumes to check the sender.
"""


def add_arguments(group: Any, required: bool = False) -> None:
    """--destination / --subscription-role for plan, apply and remove (the wiring options);
    ``required`` for ``subscribe`` itself."""
    group.add_argument("--destination", metavar="ARN", required=required,
                       help="also subscribe the log group to this destination: the audit "
                            "stack's DestinationArn (cross-account), or a same-account Lambda, "
                            "Kinesis or Firehose ARN (see `trailwatch subscribe --help`)")
    group.add_argument("--subscription-role", metavar="ARN",
                       help="role CloudWatch Logs assumes: for a same-account Kinesis/Firehose "
                            "destination, or for a destination that grants an organization")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("subscribe", parents=parents,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="subscribe the trail's log group to a (cross-account) destination",
                       description=DESCRIPTION)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return p


def cmd_subscribe(clients: Any, args: argparse.Namespace, out: TextIO, stdin: TextIO,
                  executor_factory: Callable[[Any, float], Any]) -> int:
    if not args.destination:
        raise UsageError("subscribe needs --destination ARN (the DestinationArn output of the "
                         "audit account's stack)", "trailwatch subscribe --destination "
                         "arn:aws:logs:REGION:AUDIT_ACCOUNT:destination:NAME")
    target, who, notes = resolve_target(clients, args)
    current = read_filters(clients, target)
    if not current and read_log_group(clients, target) is None:
        raise SetupError(f"log group {target.log_group} does not exist in {target.account}/"
                         f"{target.region}", "run `trailwatch apply` first (or pass "
                         "--destination to apply)")
    steps, more = plan_subscription(target, args.destination, current, args.subscription_role)
    plan = Plan(target=target, steps=steps, notes=notes + more)
    stop = show_and_confirm(plan, target, who, args, "subscribe", out, stdin)
    if stop is not None:
        return stop
    done = executor_factory(clients, 0).run(plan)
    after = read_filters(clients, target)
    if args.output == "json":
        print(json.dumps({"plan": [s.to_json() for s in plan.steps], "notes": plan.notes,
                          "applied": [s.api for s in done], "filters": after}, indent=2,
                         default=str), file=out)
    else:
        print(f"\nApplied {len(done)} change(s). Subscription filters on {target.log_group}:",
              file=out)
        for f in after:
            print(f"  {f.get('filterName')} -> {f.get('destinationArn')}", file=out)
    return EXIT_OK
