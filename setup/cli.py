"""The ``trailwatch`` command line: plan, apply, verify, remove (and demo).

    trailwatch plan   --trail NAME|ARN [options] [--output text|json]    # no writes
    trailwatch apply  --trail NAME|ARN [options] [--yes]                  # executes the plan
    trailwatch verify --trail NAME|ARN [--output text|json]              # read-only checks
    trailwatch remove --trail NAME|ARN [--yes] [--delete-log-group] [--delete-role]

Exit codes: 0 success, 1 verify found a FAIL or apply failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from setup import __version__
from setup.aws import AwsClients
from setup.cis_alarms import default_topic_arn, plan_cis, read_cis_state
from setup.cis_alarms import removal_steps as cis_removal_steps
from setup.executor import Executor, StepFailure
from setup.models import (RETENTION_DAYS, STREAM_SCOPES, TAG_KEY, TAG_VALUE, ModelError, Target,
                          default_log_group, default_role_name, validate_retention)
from setup.planner import Plan, Step, build_plan
from setup.state import (SetupError, caller, error_code, error_message, find_trail,
                         organization_id, read_log_group, read_role, read_state)
from setup.verify import FAIL, Context, run_checks, summary

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Wire an AWS CloudTrail trail into CloudWatch Logs the way AWS documents it, and prove it works.

For a single-account or an AWS Organizations trail, trailwatch creates (or adopts) the log group,
the IAM role CloudTrail assumes and its stream policy ({account}_CloudTrail_{region}* plus
o-{orgid}_* for organization trails), then calls UpdateTrail in the trail's home region, retrying
only while IAM propagates, and checks GetTrailStatus for delivery errors.

Start with `trailwatch plan --trail NAME`: it shows every API call apply would make."""

EPILOG = """\
examples:
  trailwatch plan   --trail management-events
  trailwatch plan   --trail arn:aws:cloudtrail:us-east-1:111122223333:trail/org --output json
  trailwatch apply  --trail org-trail --retention-days 400 --kms-key arn:aws:kms:...:key/...
  trailwatch verify --trail org-trail --output json
  trailwatch remove --trail org-trail --yes --delete-role

Credentials and endpoints come from the usual AWS chain (--profile, AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL for a local emulator). Every call carries the user agent trailwatch/VERSION so
trailwatch's own changes are recognisable in CloudTrail."""


def _retention(value: str) -> int:
    try:
        return validate_retention(int(value))
    except (ValueError, ModelError) as e:
        raise argparse.ArgumentTypeError(
            str(e) if isinstance(e, ModelError) else f"not a number: {value!r}") from None


def _org_id(value: str) -> str:
    if not value.startswith("o-") or len(value) < 12:
        raise argparse.ArgumentTypeError(f"an organization id looks like o-a1b2c3d4e5, not {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trailwatch", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trailwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("trail and AWS")
    g.add_argument("--trail", required=True, metavar="NAME|ARN",
                   help="the trail, by name or ARN (an ARN finds it from any region)")
    g.add_argument("--region", help="where to look the trail up; calls go to its home region")
    g.add_argument("--profile", help="AWS profile to use")
    g.add_argument("--org-id", type=_org_id, metavar="o-...",
                   help="organization id for org trails (default: organizations:DescribeOrganization)")

    wiring = argparse.ArgumentParser(add_help=False)
    w = wiring.add_argument_group("what to create or adopt")
    w.add_argument("--log-group", metavar="NAME",
                   help="log group (default: the trail's current one, else CloudTrail/<trail>)")
    w.add_argument("--role-name", metavar="NAME",
                   help="IAM role CloudTrail assumes (default: the trail's current one, else "
                        "trailwatch-cwl-<trail>, at most 64 characters)")
    w.add_argument("--retention-days", type=_retention, default=365, metavar="N",
                   help=f"log retention (default 365; one of {', '.join(map(str, RETENTION_DAYS))})")
    w.add_argument("--kms-key", metavar="ARN",
                   help="KMS key for the log group; its policy must allow "
                        "logs.<region>.amazonaws.com (checked; the statement to add is printed)")
    w.add_argument("--stream-scope", choices=STREAM_SCOPES, default="documented",
                   help="documented: only the stream prefixes CloudTrail uses (default); "
                        "group: every stream of the log group")
    w.add_argument("--cis-alarms", action="store_true",
                   help="also deploy the 15 CIS monitoring controls as metric filters (exact "
                        "Security Hub strings, namespace CISBenchmark) and alarms")
    w.add_argument("--alarm-topic", metavar="ARN",
                   help="SNS topic for the CIS alarms (default: create trailwatch-cis-alarms)")

    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--output", choices=("text", "json"), default="text", help="output format")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("plan", parents=[common, wiring, out], formatter_class=fmt,
                       help="show what apply would do (no writes)",
                       description="Read the account and print the ordered API calls apply would "
                                   "make, the exact policy documents and the IAM actions needed.")
    p.add_argument("--check-permissions", action="store_true",
                   help="ask IAM (SimulatePrincipalPolicy) whether your principal may make them")

    a = sub.add_parser("apply", parents=[common, wiring, out], formatter_class=fmt,
                       help="execute the plan, then verify",
                       description="Execute the plan. Without --yes it asks on a terminal and "
                                   "refuses (exit 2) when input is not a terminal. A re-run "
                                   "converges: it only does what is still missing.")
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a.add_argument("--propagation-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to retry UpdateTrail while IAM propagates (default 120)")

    v = sub.add_parser("verify", parents=[common, wiring, out], formatter_class=fmt,
                       help="read-only checks: PASS / WARN / FAIL with remediation",
                       description="Check the trail, log group, role, trust and stream policy "
                                   "(evaluated locally against the exact stream names) and "
                                   "GetTrailStatus delivery. Exit 1 when any check FAILs.")
    del v

    r = sub.add_parser("remove", parents=[common, wiring, out], formatter_class=fmt,
                       help="detach the trail from CloudWatch Logs",
                       description="Detach the trail (both CloudWatch Logs fields set to empty). "
                                   "Deletes the role and log group only when asked, and only "
                                   f"when tagged {TAG_KEY}={TAG_VALUE}.")
    r.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    r.add_argument("--delete-log-group", action="store_true",
                   help="also delete the log group (and its data!) if trailwatch created it")
    r.add_argument("--delete-role", action="store_true",
                   help="also delete the role if trailwatch created it")

    d = sub.add_parser("demo", formatter_class=fmt,
                       help="run the whole path on an embedded local AWS (no account needed)",
                       description="Start a local moto server, create an organization trail, "
                                   "run plan/apply/verify, simulate CloudTrail delivery, process "
                                   "the events and read the alerts back.")
    d.add_argument("--output", choices=("text", "json"), default="text")
    d.add_argument("--broken-policy", action="store_true",
                   help="scenario: a single-account stream policy on an org trail; verify "
                        "catches the member-account delivery failure")
    from setup.replay import register as register_replay   # issue 11: `trailwatch replay`
    register_replay(sub)
    return parser


# ----------------------------------------------------------------------------------- resolve

def resolve_target(clients: AwsClients, args: argparse.Namespace) -> tuple[Target, dict, list[str]]:
    trail = find_trail(clients, args.trail)
    who = caller(clients, trail.home_region)
    notes: list[str] = []
    org_id = getattr(args, "org_id", None)
    if trail.is_org and not org_id:
        org_id = organization_id(clients, trail.home_region)
    log_group, role_name = args.log_group, args.role_name
    current_group = trail.log_group_arn.split(":")[6] if trail.log_group_arn and \
        trail.log_group_arn.count(":") >= 6 else None
    same_place = bool(trail.log_group_arn) and \
        trail.log_group_arn.split(":")[3:5] == [trail.home_region, who["account"]]
    if not log_group:
        log_group = current_group if same_place and current_group else default_log_group(trail.name)
        if same_place and current_group:
            notes.append(f"the trail already delivers to {current_group}: adopting it")
    if not role_name:
        if trail.role_arn and f":{who['account']}:role/" in trail.role_arn:
            role_name = trail.role_arn.rsplit("/", 1)[1]
            notes.append(f"the trail already uses role {role_name}: adopting it")
        else:
            role_name = default_role_name(trail.name)
    target = Target(trail=trail, account=who["account"], log_group=log_group, role_name=role_name,
                    retention_days=args.retention_days, kms_key=args.kms_key,
                    stream_scope=args.stream_scope, org_id=org_id)
    return target, who, notes


# ----------------------------------------------------------------------------------- printing

def describe_target(target: Target, who: dict, out: TextIO) -> None:
    t = target.trail
    kind = f"organization trail ({target.org_id})" if t.is_org else "single-account trail"
    region = "multi-region" if t.is_multi_region else "single-region"
    print(f"Trail      {t.name}  {t.arn}", file=out)
    print(f"           {kind}, {region}, home region {t.home_region}", file=out)
    print(f"Caller     {who['arn']} (account {target.account})", file=out)
    print(f"Log group  {target.log_group}  ->  {target.log_group_arn}", file=out)
    print(f"Role       {target.role_name}  ->  {target.role_arn}", file=out)


def print_plan(plan: Plan, out: TextIO) -> None:
    if not plan.steps:
        print("\nNothing to do: the setup has converged (0 changes).", file=out)
    else:
        print(f"\nPlan: {len(plan.steps)} change(s), in this order:", file=out)
        for n, step in enumerate(plan.steps, 1):
            print(f"  {n}. {step.api:<28} {step.message}", file=out)
            if step.diff:
                for line in step.diff.splitlines():
                    print(f"       {line}", file=out)
    for note in plan.notes:
        print(f"  note: {note}", file=out)


def print_checks(results: list, out: TextIO) -> None:
    print("", file=out)
    for r in results:
        print(f"  {r.status:<4}  {r.id:<22} {r.message}", file=out)
        if r.status != "PASS" and r.remediation:
            print(f"        {'':<22} fix: {r.remediation}", file=out)
    s = summary(results)
    print(f"\n{s['pass']} passed, {s['warn']} warnings, {s['fail']} failed", file=out)


def confirm(question: str, stdin: TextIO, out: TextIO) -> bool | None:
    """True/False from a terminal; None when input is not a terminal (caller refuses)."""
    if not stdin.isatty():
        return None
    print(f"{question} [y/N] ", end="", file=out, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def show_and_confirm(plan: Plan, target: Target, who: dict, args: argparse.Namespace, verb: str,
                     out: TextIO, stdin: TextIO) -> int | None:
    """Print the plan (text output) and get consent; an exit code means: stop here."""
    if args.output == "text":
        describe_target(target, who, out)
        print_plan(plan, out)
    if not plan.steps or args.yes:
        return None
    answer = confirm(f"{verb.capitalize()} these {len(plan.steps)} change(s)?", stdin, out)
    if answer is None:
        print(f"trailwatch: refusing to {verb} without confirmation: input is not a terminal. "
              "Review `trailwatch plan` and pass --yes.", file=sys.stderr)
        return EXIT_USAGE
    if not answer:
        print(f"Nothing to {verb}: not confirmed.", file=out)
        return EXIT_OK
    return None


# ----------------------------------------------------------------------------------- permissions

def check_permissions(clients: AwsClients, region: str, actions: list[str]) -> list[str]:
    """Actions the caller is not allowed, per iam:SimulatePrincipalPolicy."""
    arn = caller(clients, region)["arn"]
    iam = clients.client("iam", region)
    if arn.endswith(":root"):
        return []
    if ":assumed-role/" in arn:
        role_name = arn.split(":assumed-role/")[1].split("/")[0]
        source = iam.get_role(RoleName=role_name)["Role"]["Arn"]   # resolves the role's path
    else:
        source = arn
    missing: list[str] = []
    pages = iam.get_paginator("simulate_principal_policy").paginate(PolicySourceArn=source,
                                                                     ActionNames=actions)
    for page in pages:
        missing += [r["EvalActionName"] for r in page["EvaluationResults"]
                    if r["EvalDecision"] != "allowed"]
    return missing


# ----------------------------------------------------------------------------------- commands

def make_plan(clients: AwsClients, args: argparse.Namespace) -> tuple[Plan, Target, dict]:
    target, who, notes = resolve_target(clients, args)
    plan = build_plan(target, read_state(clients, target))
    plan.notes[:0] = notes
    if getattr(args, "cis_alarms", False):
        topic = args.alarm_topic or default_topic_arn(target)
        plan.steps += plan_cis(target, read_cis_state(clients, target, topic), topic,
                               create_topic=not args.alarm_topic)
    return plan, target, who


def cmd_plan(clients: AwsClients, args: argparse.Namespace, out: TextIO) -> int:
    plan, target, who = make_plan(clients, args)
    missing = check_permissions(clients, target.region, plan.iam_actions) \
        if args.check_permissions else None
    if args.output == "json":
        doc = plan.to_json()
        if missing is not None:
            doc["missing_permissions"] = missing
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    describe_target(target, who, out)
    print_plan(plan, out)
    print(f"\nIAM actions apply needs: {', '.join(plan.iam_actions)}", file=out)
    if missing is not None:
        print("Permission check (iam:SimulatePrincipalPolicy): " +
              (f"MISSING {', '.join(missing)}" if missing else "all allowed"), file=out)
    return EXIT_OK


def cmd_apply(clients: AwsClients, args: argparse.Namespace, out: TextIO, stdin: TextIO,
              executor_factory: Callable[[AwsClients, float], Executor]) -> int:
    plan, target, who = make_plan(clients, args)
    text = args.output == "text"
    stop = show_and_confirm(plan, target, who, args, "apply", out, stdin)
    if stop is not None:
        return stop
    done = executor_factory(clients, args.propagation_timeout).run(plan)
    writes = len(clients.mutating_calls())
    fresh = refresh_target(clients, target)
    results = run_checks(Context(clients, fresh))
    if text:
        print(f"\nApplied {len(done)} change(s) with {writes} write call(s).", file=out)
        print_checks(results, out)
    else:
        print(json.dumps({"plan": plan.to_json(), "applied": [s.api for s in done],
                          "write_calls": writes,
                          "verify": {"checks": [r.to_json() for r in results],
                                     "summary": summary(results)}}, indent=2), file=out)
    return EXIT_OK


def refresh_target(clients: AwsClients, target: Target) -> Target:
    from dataclasses import replace
    return replace(target, trail=find_trail(clients, target.trail.arn))


def cmd_verify(clients: AwsClients, args: argparse.Namespace, out: TextIO) -> int:
    target, who, _ = resolve_target(clients, args)
    results = run_checks(Context(clients, target))
    if args.output == "json":
        print(json.dumps({"trail": target.trail.arn, "checks": [r.to_json() for r in results],
                          "summary": summary(results)}, indent=2), file=out)
    else:
        describe_target(target, who, out)
        print_checks(results, out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def removal_plan(clients: AwsClients, target: Target, args: argparse.Namespace) -> Plan:
    region = target.region
    steps, notes = cis_removal_steps(clients, target)
    t = target.trail
    if t.log_group_arn or t.role_arn:
        steps.append(Step("cloudtrail", "UpdateTrail",
                          {"Name": t.arn, "CloudWatchLogsLogGroupArn": "",
                           "CloudWatchLogsRoleArn": ""},
                          f"detach trail {t.name} from CloudWatch Logs", ("cloudtrail:UpdateTrail",),
                          region))
    else:
        notes.append(f"trail {t.name} is not attached to CloudWatch Logs")
    if args.delete_role:
        role = read_role(clients, target.role_name_in_use, region)
        if role is None:
            notes.append(f"role {target.role_name_in_use} does not exist")
        elif role.tags.get(TAG_KEY) != TAG_VALUE:
            notes.append(f"role {role.name} was not created by trailwatch (no {TAG_KEY}="
                         f"{TAG_VALUE} tag): left in place")
        else:
            for pname in role.inline:
                steps.append(Step("iam", "DeleteRolePolicy", {"RoleName": role.name,
                                                              "PolicyName": pname},
                                  f"delete inline policy {pname}", ("iam:DeleteRolePolicy",), region))
            for parn in role.attached:
                steps.append(Step("iam", "DetachRolePolicy", {"RoleName": role.name,
                                                              "PolicyArn": parn},
                                  f"detach {parn}", ("iam:DetachRolePolicy",), region))
            steps.append(Step("iam", "DeleteRole", {"RoleName": role.name},
                              f"delete role {role.name}", ("iam:DeleteRole",), region))
    if args.delete_log_group:
        lg = read_log_group(clients, target)
        if lg is None:
            notes.append(f"log group {target.log_group} does not exist")
        elif lg.tags.get(TAG_KEY) != TAG_VALUE:
            notes.append(f"log group {lg.name} was not created by trailwatch: left in place")
        else:
            steps.append(Step("logs", "DeleteLogGroup", {"logGroupName": lg.name},
                              f"delete log group {lg.name} and all its events",
                              ("logs:DeleteLogGroup",), region))
    return Plan(target=target, steps=steps, notes=notes)


def cmd_remove(clients: AwsClients, args: argparse.Namespace, out: TextIO, stdin: TextIO,
               executor_factory: Callable[[AwsClients, float], Executor]) -> int:
    target, who, _ = resolve_target(clients, args)
    plan = removal_plan(clients, target, args)
    stop = show_and_confirm(plan, target, who, args, "remove", out, stdin)
    if stop is not None:
        return stop
    done = executor_factory(clients, 0).run(plan)
    if args.output == "json":
        print(json.dumps({"removed": [s.to_json() for s in done], "notes": plan.notes},
                         indent=2), file=out)
    else:
        print(f"\nRemoved: {len(done)} change(s).", file=out)
    return EXIT_OK


def main(argv: list[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None,
         clients: AwsClients | None = None,
         executor_factory: Callable[[AwsClients, float], Executor] | None = None) -> int:
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code not in (0, None) else EXIT_OK
    if getattr(args, "handler", None) is not None:   # subcommands with a register() hook
        return args.handler(args, out)
    if args.command == "demo":
        from setup.demo import run_demo
        return run_demo(output=args.output, broken_policy=args.broken_policy, out=out)
    if executor_factory is None:
        def executor_factory(c: AwsClients, timeout: float) -> Executor:
            return Executor(c, sleep=time.sleep, propagation_timeout=timeout)
    try:
        clients = clients or AwsClients(profile=args.profile, region=args.region)
        if args.command == "plan":
            return cmd_plan(clients, args, out)
        if args.command == "apply":
            return cmd_apply(clients, args, out, stdin, executor_factory)
        if args.command == "verify":
            return cmd_verify(clients, args, out)
        if args.command == "remove":
            return cmd_remove(clients, args, out, stdin, executor_factory)
    except StepFailure as e:
        print(e.report(), file=sys.stderr)
        return EXIT_FAIL
    except SetupError as e:
        print(f"trailwatch: {e.message}", file=sys.stderr)
        if e.remediation:
            print(f"fix: {e.remediation}", file=sys.stderr)
        return EXIT_FAIL
    except ClientError as e:
        print(f"trailwatch: {error_code(e)}: {error_message(e)}", file=sys.stderr)
        return EXIT_FAIL
    except (NoCredentialsError, NoRegionError) as e:
        print(f"trailwatch: {e}; configure credentials/region (--profile, --region)",
              file=sys.stderr)
        return EXIT_USAGE
    except BotoCoreError as e:
        print(f"trailwatch: {e}", file=sys.stderr)
        return EXIT_FAIL
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
