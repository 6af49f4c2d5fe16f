"""The ``trailwatch`` command line: plan, apply, verify, remove (and demo).

    trailwatch plan   --trail NAME|ARN [options] [--out plan.json]       # no writes
    trailwatch apply  --trail NAME|ARN [options] [--yes]                  # executes the plan
    trailwatch apply  --plan plan.json [--yes]                            # executes a saved plan
    trailwatch verify --trail NAME|ARN                                    # read-only checks
    trailwatch remove --trail NAME|ARN [--yes] [--delete-log-group [--confirm-log-group NAME]]
                      [--delete-role]

Global options (--region, --profile, --output text|json) go before or after the subcommand.
Exit codes: 0 success, 1 verify found a FAIL (also apply's own post-apply verify), apply failed or
a saved plan is stale, 2 usage error (also: no region), 130 interrupted (Ctrl-C).
With --output json, an error is ``{"error": {"code", "message", "remediation"}}`` on stdout (the
text goes to stderr as well).

Other modules add subcommands through :data:`REGISTRARS`: each is ``register(subparsers,
parents)``; it sets ``handler=fn`` with ``parser.set_defaults``, and ``fn(inv)`` gets an
:class:`Invocation` (args, out, stdin, lazily created clients) and returns the exit code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from setup import __version__, rules_cmd, subscribe
from setup import canary as canary_mod
from setup.aws import AwsClients
from setup.cis_alarms import (default_topic_arn, legacy_alarms, plan_cis, read_cis_state,
                              topic_name, validate_alarm_topic)
from setup.executor import Executor, StepFailure, StepInterrupted
from setup.models import (RETENTION_DAYS, STREAM_SCOPES, TAG_KEY, TAG_VALUE, ModelError, Target,
                          default_log_group, default_role_name, validate_log_group_name,
                          validate_retention, validate_role_name)
from setup.planner import Plan, Step, build_plan
from setup.removal import removal_plan
from setup.state import (SetupError, UsageError, caller, error_code, error_message, find_trail,
                         organization_id, read_state, resolve_kms_key)
from setup.verify import FAIL, Context, run_checks, summary

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PLAN_FORMAT = "trailwatch-plan/1"


DESCRIPTION = """\
Wire an AWS CloudTrail trail into CloudWatch Logs the way AWS documents it, and prove it works.

For a single-account or an AWS Organizations trail, trailwatch creates (or adopts) the log group,
the IAM role CloudTrail assumes and its stream policy ({account}_CloudTrail_{region}* plus
o-{orgid}_* for organization trails), then calls UpdateTrail in the trail's home region, retrying
only while IAM propagates, and checks GetTrailStatus for delivery errors.

Safe in a shared account: everything it writes is tagged with the trail it serves and merged
(never blindly replaced), nothing is deleted unless no other trail uses it, nothing is shortened or
widened implicitly, and Control Tower resources are never touched.

Start with `trailwatch plan --trail NAME`: it shows every API call apply would make."""

EPILOG = """\
examples:
  trailwatch plan   --trail management-events
  trailwatch plan   --trail arn:aws:cloudtrail:us-east-1:111122223333:trail/org --output json
  trailwatch apply  --trail org-trail --retention-days 400 --kms-key alias/audit-logs
  trailwatch plan   --trail org-trail --cis-alarms --out plan.json
  trailwatch apply  --plan plan.json --yes
  trailwatch --region eu-west-1 verify --trail org-trail --output json
  trailwatch remove --trail org-trail --yes --delete-role

exit codes: 0 success; 1 a verify FAIL (apply's too), a failed apply, a refusal or a stale plan;
2 usage error (also: no region); 130 interrupted. With --output json an error is
{"error": {"code", "message", "remediation"}} on stdout.

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


def _name(validate: Callable[[str], str]) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            return validate(value)
        except ModelError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return check


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78)


class Parser(argparse.ArgumentParser):
    """Usage errors raise :class:`UsageError` so ``--output json`` can report them as JSON."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


# Subcommands contributed by other modules: ``register(subparsers, parents)`` where ``parents``
# maps "globals", "trail", "wiring" to parent parsers. Append here (one line per module).
REGISTRARS: list[Callable[[Any, dict[str, argparse.ArgumentParser]], None]] = []


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """--region/--profile/--output, accepted before and after the subcommand (the subcommand's
    copies default to SUPPRESS so they never overwrite a value given before it)."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = Parser(add_help=False)
    grp = g.add_argument_group("global options (before or after the subcommand)")
    grp.add_argument("--region", default=d(None),
                     help="where to look the trail up (default: AWS_REGION, AWS_DEFAULT_REGION, "
                          "the profile's region); calls go to the trail's home region")
    grp.add_argument("--profile", default=d(None), help="AWS profile to use")
    grp.add_argument("--output", choices=("text", "json"), default=d("text"),
                     help="output format (errors too: a JSON object on stdout)")
    return g


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trailwatch", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    parents=[_global_options(False)])
    parser.add_argument("--version", action="version", version=f"trailwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    glob = _global_options(True)

    common = Parser(add_help=False)
    g = common.add_argument_group("trail")
    g.add_argument("--trail", metavar="NAME|ARN",
                   help="the trail, by name or ARN (an ARN finds it from any region; the "
                        "partition comes from it)")
    org = Parser(add_help=False)
    org.add_argument("--org-id", type=_org_id, metavar="o-...",
                     help="organization id for org trails (default: "
                          "organizations:DescribeOrganization)")

    names = Parser(add_help=False)
    n = names.add_argument_group("which log group and role")
    n.add_argument("--log-group", metavar="NAME", type=_name(validate_log_group_name),
                   help="log group (default: the trail's current one, else CloudTrail/<trail>)")
    n.add_argument("--role-name", metavar="NAME", type=_name(validate_role_name),
                   help="IAM role CloudTrail assumes (default: the trail's current one, with its "
                        "path, else trailwatch-cwl-<trail>-<home region>, at most 64 characters)")

    trust = Parser(add_help=False)
    trust.add_argument("--accept-trusted-service", action="append", default=[], metavar="SERVICE",
                       help="knowingly accept another AWS service (e.g. ec2.amazonaws.com) in "
                            "the role's trust policy; reported as WARN. '*' and other accounts "
                            "are never accepted")

    wiring = Parser(add_help=False)
    w = wiring.add_argument_group("what to create or adopt")
    w.add_argument("--retention-days", type=_retention, default=None, metavar="N",
                   help="log retention. Default: new groups 365 days, an adopted group keeps "
                        "its own (never-expire included); a shorter value is a destructive "
                        f"step. One of {', '.join(map(str, RETENTION_DAYS))}")
    w.add_argument("--kms-key", metavar="KEY",
                   help="KMS key for the log group: key id, key ARN, alias/NAME or alias ARN, "
                        "resolved with DescribeKey (enabled, SYMMETRIC_DEFAULT, home region); "
                        "its policy must allow logs.<region>.amazonaws.com (the statement to "
                        "add is printed)")
    w.add_argument("--stream-scope", choices=STREAM_SCOPES, default="documented",
                   help="documented: only the stream prefixes CloudTrail uses (default); "
                        "group: every stream of the log group")
    w.add_argument("--cis-alarms", action="store_true",
                   help="also deploy the 15 CIS monitoring controls as metric filters (exact "
                        "Security Hub strings, namespace CISBenchmark) and alarms, named per "
                        "log group")
    w.add_argument("--alarm-topic", metavar="ARN",
                   help="SNS topic for the CIS alarms: must exist in this account and the "
                        "trail's home region (default: create trailwatch-cis-<log group id>)")
    w.add_argument("--take-over-delivery", action="store_true",
                   help="from a delegated administrator: re-point an organization trail that "
                        "delivers to a log group in another account (the management account's "
                        "filters and subscriptions stop receiving events)")
    subscribe.add_arguments(w)   # --destination, --subscription-role (issue 14)

    parents = {"globals": glob, "trail": common, "org": org, "names": names, "wiring": wiring,
               "trust": trust}
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("plan", parents=[glob, common, org, names, trust, wiring], formatter_class=fmt,
                       help="show what apply would do (no writes)",
                       description=_wrap("Read the account and print the ordered API calls apply would "
                                   "make, the full policy documents and the IAM actions needed. "
                                   "Destructive steps are marked."))
    p.add_argument("--check-permissions", action="store_true",
                   help="ask IAM (SimulatePrincipalPolicy, with resource ARNs and "
                        "iam:PassedToService) whether your principal may make every call of "
                        "plan, apply and its verify")
    p.add_argument("--out", metavar="FILE",
                   help="save the plan with a digest of the state it was computed from; "
                        "`apply --plan FILE` executes exactly it, or refuses if the state changed")
    p.set_defaults(handler=lambda inv: cmd_plan(inv.clients, inv.args, inv.out))

    a = sub.add_parser("apply", parents=[glob, common, org, names, trust, wiring], formatter_class=fmt,
                       help="execute the plan, then verify (exit 1 on a verify FAIL)",
                       description=_wrap("Execute the plan. Without --yes it asks on a terminal and "
                                   "refuses (exit 2) when input is not a terminal. A re-run "
                                   "converges: it only does what is still missing. Ctrl-C "
                                   "prints what was done and exits 130."))
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a.add_argument("--propagation-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to retry UpdateTrail while IAM propagates (default 120)")
    a.add_argument("--plan", metavar="FILE", dest="plan_file",
                   help="execute a plan saved by `plan --out` (exit 1 if the account changed "
                        "since; the other wiring options come from the file)")
    canary_mod.add_arguments(a, apply=True)   # --canary, --wait, ... (issue 10)
    a.set_defaults(handler=lambda inv: cmd_apply(inv.clients, inv.args, inv.out, inv.stdin,
                                                 inv.executor_factory))

    v = sub.add_parser("verify", parents=[glob, common, org, names, trust], formatter_class=fmt,
                       help="read-only checks: PASS / WARN / FAIL with remediation",
                       description=_wrap("Check the trail, log group, role, trust and stream policy "
                                   "(evaluated locally against the exact stream names) and "
                                   "GetTrailStatus delivery. Exit 1 when any check FAILs."))
    canary_mod.add_arguments(v)   # --canary, --canary-timeout, --max-delivery-age (issue 10)
    v.set_defaults(handler=lambda inv: cmd_verify(inv.clients, inv.args, inv.out))

    r = sub.add_parser("remove", parents=[glob, common, names], formatter_class=fmt,
                       help="detach the trail; delete only what is provably unused",
                       description=_wrap("Detach the trail (both CloudWatch Logs fields set to empty) "
                                   "and its CIS filters/alarms/topic. Deletes the role and the "
                                   "log group only when asked, only when tagged "
                                   f"{TAG_KEY}={TAG_VALUE}, and only when no other trail in any "
                                   "region uses them (DescribeTrails); whatever is kept is "
                                   "listed with the reason. Control Tower resources are refused."))
    r.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    r.add_argument("--delete-log-group", action="store_true",
                   help="also delete the log group if trailwatch created it and no other trail "
                        "uses it; one that still holds events also needs --confirm-log-group")
    r.add_argument("--confirm-log-group", metavar="NAME",
                   help="name the log group to confirm deleting it with all its events")
    r.add_argument("--delete-role", action="store_true",
                   help="also delete the role if trailwatch created it and no other trail uses it")
    r.set_defaults(handler=lambda inv: cmd_remove(inv.clients, inv.args, inv.out, inv.stdin,
                                                  inv.executor_factory))

    d = sub.add_parser("demo", parents=[glob], formatter_class=fmt,
                       help="run the whole path on an embedded local AWS (needs trailwatch[demo])",
                       description=_wrap("Start a local moto server, create an organization trail, "
                                   "run plan/apply/verify, simulate CloudTrail delivery, process "
                                   "the events and read the alerts back. Needs the demo extra: "
                                   "pip install 'trailwatch[demo]'."))
    d.add_argument("--broken-policy", action="store_true",
                   help="scenario: a single-account stream policy on an org trail; verify "
                        "catches the member-account delivery failure")
    d.set_defaults(handler=_run_demo, needs_aws=False)

    for register in REGISTRARS:
        register(sub, parents)
    return parser


def _register_subscribe(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch subscribe` (issue 14)."""
    wiring = Parser(add_help=False)
    subscribe.add_arguments(wiring.add_argument_group("subscription"))
    s = subscribe.register(sub, [parents["globals"], parents["trail"], parents["names"], wiring])
    s.set_defaults(handler=lambda inv: subscribe.cmd_subscribe(
        inv.clients, inv.args, inv.out, inv.stdin, inv.executor_factory))


def _register_rules(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch rules list|test|backtest|lint|export|import-sigma` (issue 13): no AWS calls."""
    rules_cmd.register(sub)
    sub.choices["rules"].set_defaults(handler=lambda inv: rules_cmd.run(inv.args, inv.out),
                                      needs_aws=False)


def _register_replay(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch replay` (issue 11): re-drive failure records into the processor."""
    from setup import replay
    replay.register(sub, [parents["globals"]])
    sub.choices["replay"].set_defaults(handler=lambda inv: replay.cmd_replay(inv.args, inv.out))


REGISTRARS += [_register_subscribe, _register_rules, _register_replay]


def _run_demo(inv: Invocation) -> int:
    """The demo sits beside the product: imported only here, and it drives the CLI through the
    function it is handed (it never imports this module)."""
    try:
        import moto.server  # noqa: F401
        from setup.demo import run_demo
    except ImportError as e:
        raise UsageError(f"`trailwatch demo` needs the demo dependencies ({e.name} is missing)",
                         "pip install 'trailwatch[demo]'", code="DemoDependenciesMissing") from None
    return run_demo(output=inv.args.output, broken_policy=inv.args.broken_policy, out=inv.out,
                    cli=main)


# ----------------------------------------------------------------------------------- resolve

def resolve_target(clients: AwsClients, args: argparse.Namespace, *, need_org_id: bool = True
                   ) -> tuple[Target, dict, list[str]]:
    if not getattr(args, "trail", None):
        raise UsageError("--trail is required", "pass --trail NAME|ARN")
    trail = find_trail(clients, args.trail)
    who = caller(clients, trail.home_region)
    notes: list[str] = []
    org_id = getattr(args, "org_id", None)
    if trail.is_org and not org_id and need_org_id:
        org_id = organization_id(clients, trail.home_region)
    log_group, role_name = args.log_group, args.role_name
    parts = trail.log_group_arn.split(":") if trail.log_group_arn else []
    current_group = parts[6] if len(parts) >= 7 else None
    same_place = bool(parts) and parts[3:5] == [trail.home_region, who["account"]]
    if parts and parts[4] != who["account"] and getattr(args, "command", "") in ("plan", "apply"):
        if not getattr(args, "take_over_delivery", False):
            raise SetupError(
                f"CHANGE OF OWNER: organization trail {trail.name} already delivers to log group "
                f"{current_group} in account {parts[4]} (the management account); applying "
                f"would re-point it to a group in this account ({who['account']}), and the "
                f"filters and subscriptions on {current_group} would stop receiving events",
                "run trailwatch from the account that owns the log group, or pass "
                "--take-over-delivery to move delivery here knowingly",
                code="DeliveryOwnedElsewhere")
        notes.append(f"CHANGE OF OWNER: delivery moves from {trail.log_group_arn} (account "
                     f"{parts[4]}) to this account (--take-over-delivery)")
    if not log_group:
        log_group = current_group if same_place and current_group else default_log_group(trail.name)
        if same_place and current_group:
            notes.append(f"the trail already delivers to {current_group}: adopting it")
    role_path = "/"
    if not role_name:
        if trail.role_arn and f":{who['account']}:role/" in trail.role_arn:
            path_name = trail.role_arn.split(":role", 1)[1]          # "/path/name"
            role_name = path_name.rsplit("/", 1)[1]
            role_path = path_name.rsplit("/", 1)[0] + "/"
            notes.append(f"the trail already uses role {trail.role_arn}: adopting it")
        else:
            role_name = default_role_name(trail.name, trail.home_region)
    kms_key = getattr(args, "kms_key", None)
    if kms_key:
        kms_key = resolve_kms_key(clients, kms_key, trail.home_region)
    target = Target(trail=trail, account=who["account"], log_group=log_group, role_name=role_name,
                    retention_days=getattr(args, "retention_days", None), kms_key=kms_key,
                    stream_scope=getattr(args, "stream_scope", "documented"), org_id=org_id,
                    role_path=role_path,
                    accepted_services=tuple(getattr(args, "accept_trusted_service", []) or ()),
                    take_over_delivery=bool(getattr(args, "take_over_delivery", False)))
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


_DOC_PARAMS = ("PolicyDocument", "AssumeRolePolicyDocument")


def print_plan(plan: Plan, out: TextIO) -> None:
    if not plan.steps:
        print("\nNothing to do: the setup has converged (0 changes).", file=out)
    else:
        n_destr = sum(1 for s in plan.steps if s.destructive)
        print(f"\nPlan: {len(plan.steps)} change(s)"
              + (f", {n_destr} DESTRUCTIVE" if n_destr else "") + ", in this order:", file=out)
        for n, step in enumerate(plan.steps, 1):
            mark = "[DESTRUCTIVE] " if step.destructive else ""
            print(f"  {n}. {step.api:<28} {mark}{step.message}", file=out)
            if step.diff:
                for line in step.diff.splitlines():
                    print(f"       {line}", file=out)
            for key in _DOC_PARAMS:
                if key in step.params:
                    print(f"       full new {key}:", file=out)
                    doc = json.dumps(json.loads(step.params[key]), indent=2)
                    for line in doc.splitlines():
                        print(f"         {line}", file=out)
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
        raise UsageError(f"refusing to {verb} without confirmation: input is not a terminal",
                         f"review `trailwatch plan` and pass --yes", code="NotConfirmed")
    if not answer:
        print(f"Nothing to {verb}: not confirmed.", file=out)
        return EXIT_OK
    return None


# ----------------------------------------------------------------------------------- permissions

# Reads plan, apply and apply's verify make, with what they act on ("*" = no resource-level ARN).
def permission_requests(plan: Plan, cis: bool = False) -> list[tuple[str, str]]:
    t = plan.target
    lg, role = t.log_group_arn_bare, t.role_arn
    reqs: list[tuple[str, str]] = [
        ("sts:GetCallerIdentity", "*"), ("cloudtrail:DescribeTrails", "*"),
        ("cloudtrail:GetTrailStatus", t.trail.arn), ("logs:DescribeLogGroups", "*"),
        ("logs:ListTagsForResource", lg), ("logs:DescribeMetricFilters", lg),
        ("logs:DescribeSubscriptionFilters", lg), ("iam:GetRole", role),
        ("iam:ListRolePolicies", role), ("iam:GetRolePolicy", role),
        ("iam:ListAttachedRolePolicies", role), ("cloudwatch:DescribeAlarms", "*"),
        ("lambda:GetPolicy", "*")]
    if t.trail.is_org:
        reqs += [("organizations:DescribeOrganization", "*"), ("organizations:ListAccounts", "*")]
    if t.kms_key:
        reqs += [("kms:DescribeKey", t.kms_key), ("kms:GetKeyPolicy", t.kms_key)]
    if cis:
        topic = default_topic_arn(t)
        reqs += [("sns:GetTopicAttributes", topic), ("sns:ListSubscriptionsByTopic", topic)]
    for s in plan.steps:
        for action in s.iam_actions:
            res = role if action == "iam:PassRole" else s.resource
            reqs.append((action, res))
    seen: list[tuple[str, str]] = []
    for r in reqs:
        if r not in seen:
            seen.append(r)
    return seen


def check_permissions(clients: AwsClients, region: str, actions: list[Any]
                      ) -> tuple[list[str], list[str]]:
    """(denied "action on resource" list, warnings) per iam:SimulatePrincipalPolicy, with
    resource ARNs and the iam:PassedToService context for iam:PassRole. A simulation that is
    itself denied is a warning, not an abort."""
    reqs = [(a, "*") if isinstance(a, str) else a for a in actions]
    arn = caller(clients, region)["arn"]
    iam = clients.client("iam", region)
    if arn.endswith(":root"):
        return [], []
    warnings: list[str] = []
    try:
        if ":assumed-role/" in arn:
            role_name = arn.split(":assumed-role/")[1].split("/")[0]
            source = iam.get_role(RoleName=role_name)["Role"]["Arn"]   # resolves the role's path
        else:
            source = arn
        by_resource: dict[str, list[str]] = {}
        for action, res in reqs:
            by_resource.setdefault(res, []).append(action)
        missing: list[str] = []
        for res, acts in by_resource.items():
            kw: dict[str, Any] = {"PolicySourceArn": source, "ActionNames": acts}
            if res != "*":
                kw["ResourceArns"] = [res]
            if "iam:PassRole" in acts:
                kw["ContextEntries"] = [{"ContextKeyName": "iam:PassedToService",
                                         "ContextKeyValues": ["cloudtrail.amazonaws.com"],
                                         "ContextKeyType": "string"}]
            for page in iam.get_paginator("simulate_principal_policy").paginate(**kw):
                missing += [r["EvalActionName"] + ("" if res == "*" else f" on {res}")
                            for r in page["EvaluationResults"] if r["EvalDecision"] != "allowed"]
    except ClientError as e:
        warnings.append(f"WARN: could not simulate permissions ({error_code(e)}: "
                        f"{error_message(e)}); allow iam:SimulatePrincipalPolicy to check them")
        return [], warnings
    return missing, warnings


# ----------------------------------------------------------------------------------- commands

def _cis_plan(clients: AwsClients, args: argparse.Namespace, target: Target
              ) -> tuple[list[Step], Any, str | None]:
    if not getattr(args, "cis_alarms", False):
        if getattr(args, "alarm_topic", None):
            raise UsageError("--alarm-topic needs --cis-alarms", "add --cis-alarms")
        return [], None, None
    if args.alarm_topic:
        topic = validate_alarm_topic(clients, target, args.alarm_topic)
    else:
        topic = default_topic_arn(target)
    cis_state = read_cis_state(clients, target, topic)
    return plan_cis(target, cis_state, topic, create_topic=not args.alarm_topic), cis_state, topic


def state_digest(target: Target, state: Any, cis_state: Any) -> str:
    """sha256 of the facts a plan was computed from (config only: no clocks, no byte counts)."""
    t = target.trail
    facts: dict[str, Any] = {"trail": [t.arn, t.log_group_arn, t.role_arn, t.is_org],
                             "account": target.account, "org_id": target.org_id}
    lg = state.log_group
    facts["log_group"] = None if lg is None else [lg.name, lg.log_group_class, lg.retention,
                                                  lg.kms_key, sorted(lg.tags.items())]
    r = state.role
    facts["role"] = None if r is None else [r.arn, r.trust, sorted(r.tags.items()), r.inline,
                                            sorted(r.attached)]
    facts["kms_policy"] = state.kms_policy
    if cis_state is not None:
        facts["cis"] = {
            "filters": {n: [f.get("filterPattern"), f.get("metricTransformations")]
                        for n, f in sorted(cis_state.filters.items())},
            "alarms": {n: {k: a.get(k) for k in ("MetricName", "Namespace", "Threshold",
                                                 "AlarmActions", "Period", "Statistic")}
                       for n, a in sorted(cis_state.alarms.items())},
            "topic": cis_state.topic_exists}
    raw = json.dumps(facts, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def make_plan(clients: AwsClients, args: argparse.Namespace) -> tuple[Plan, Target, dict]:
    target, who, notes = resolve_target(clients, args)
    state = read_state(clients, target)
    if state.role is not None and state.role.path != target.role_path:
        target = replace(target, role_path=state.role.path)     # role ARNs keep their path
    plan = build_plan(target, state)
    plan.notes[:0] = notes
    cis_steps, cis_state, topic = _cis_plan(clients, args, target)
    plan.steps += cis_steps
    if cis_state is not None:
        legacy = legacy_alarms(clients, target)
        if legacy:
            plan.notes.append(f"{len(legacy)} CIS alarm(s) with region-wide names from an earlier "
                              f"trailwatch ({legacy[0]}, ...) are left as they are: delete them "
                              "once no trail relies on them (the new set is per log group)")
    subscribe.extend_plan(clients, plan, args)   # --destination (issue 14)
    plan.state_digest = state_digest(target, state, cis_state)
    plan.cis_topic = topic
    return plan, target, who


def _plan_json(plan: Plan) -> dict[str, Any]:
    doc = plan.to_json()
    doc["state_digest"] = getattr(plan, "state_digest", None)
    if getattr(plan, "cis_topic", None):
        doc["cis"] = {"topic": plan.cis_topic, "topic_name": topic_name(plan.target)}
    return doc


_SAVED_OPTIONS = ("log_group", "role_name", "retention_days", "kms_key", "stream_scope", "org_id",
                  "cis_alarms", "alarm_topic", "accept_trusted_service", "take_over_delivery",
                  "destination", "subscription_role")


def save_plan(plan: Plan, args: argparse.Namespace, path: str) -> None:
    options = {k: getattr(args, k, None) for k in _SAVED_OPTIONS}
    options["trail"] = plan.target.trail.arn
    options["kms_key"] = plan.target.kms_key
    doc = {"format": PLAN_FORMAT, "trailwatch": __version__, "options": options,
           "state_digest": getattr(plan, "state_digest", None), "plan": _plan_json(plan)}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def load_saved_plan(clients: AwsClients, args: argparse.Namespace
                    ) -> tuple[Plan, Target, dict]:
    try:
        with open(args.plan_file, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read plan file {args.plan_file}: {e}",
                         "pass a file written by `trailwatch plan --out`", code="PlanFileInvalid")
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        raise UsageError(f"{args.plan_file} is not a trailwatch plan ({PLAN_FORMAT})",
                         "pass a file written by `trailwatch plan --out`", code="PlanFileInvalid")
    if args.trail and args.trail not in (saved["options"]["trail"],
                                         saved["options"]["trail"].rsplit("/", 1)[-1]):
        raise UsageError(f"--trail {args.trail} is not the plan's trail "
                         f"{saved['options']['trail']}", "omit --trail with --plan")
    merged = argparse.Namespace(**vars(args))
    for k, v in saved["options"].items():
        setattr(merged, k, v)
    plan, target, who = make_plan(clients, merged)
    if plan.state_digest != saved.get("state_digest"):
        raise SetupError(
            f"the account changed since {args.plan_file} was made (state digest "
            f"{saved.get('state_digest')} -> {plan.state_digest}); refusing to apply a stale "
            "plan", "run `trailwatch plan --out FILE` again, review it, then apply it",
            code="PlanStale")
    plan.steps = [Step.from_json(s) for s in saved["plan"]["steps"]]
    return plan, target, who


def cmd_plan(clients: AwsClients, args: argparse.Namespace, out: TextIO) -> int:
    plan, target, who = make_plan(clients, args)
    missing = warnings = None
    if getattr(args, "check_permissions", False):
        missing, warnings = check_permissions(
            clients, target.region, permission_requests(plan, bool(getattr(args, "cis_alarms",
                                                                           False))))
        plan.notes += warnings
    if getattr(args, "out", None):
        save_plan(plan, args, args.out)
    if args.output == "json":
        doc = _plan_json(plan)
        if missing is not None:
            doc["missing_permissions"] = missing
        if getattr(args, "out", None):
            doc["saved_to"] = args.out
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    describe_target(target, who, out)
    print_plan(plan, out)
    print(f"\nIAM actions apply needs: {', '.join(plan.iam_actions)}", file=out)
    if missing is not None and not warnings:
        print("Permission check (iam:SimulatePrincipalPolicy): " +
              (f"MISSING {', '.join(missing)}" if missing else "all allowed"), file=out)
    if getattr(args, "out", None):
        print(f"Plan saved to {args.out} (state {plan.state_digest}); "
              f"run `trailwatch apply --plan {args.out}`", file=out)
    return EXIT_OK


def cmd_apply(clients: AwsClients, args: argparse.Namespace, out: TextIO, stdin: TextIO,
              executor_factory: Callable[[AwsClients, float], Executor]) -> int:
    if getattr(args, "plan_file", None):
        plan, target, who = load_saved_plan(clients, args)
    else:
        plan, target, who = make_plan(clients, args)
    text = args.output == "text"
    stop = show_and_confirm(plan, target, who, args, "apply", out, stdin)
    if stop is not None:
        return stop
    applied_at = time.time()
    done = executor_factory(clients, args.propagation_timeout).run(plan)
    writes = len(clients.mutating_calls())
    fresh = refresh_target(clients, target)
    waited = [canary_mod.wait_for_delivery(clients, fresh, applied_at, args.wait_timeout)] \
        if getattr(args, "wait", False) else []
    results = waited + run_checks(Context(clients, fresh, **canary_mod.context_options(args)))
    results += canary_mod.extra_checks(clients, fresh, args)
    if text:
        print(f"\nApplied {len(done)} change(s) with {writes} write call(s).", file=out)
        print_checks(results, out)
    else:
        print(json.dumps({"plan": _plan_json(plan), "applied": [s.api for s in done],
                          "write_calls": writes,
                          "verify": {"checks": [r.to_json() for r in results],
                                     "summary": summary(results)}}, indent=2), file=out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def refresh_target(clients: AwsClients, target: Target) -> Target:
    return replace(target, trail=find_trail(clients, target.trail.arn))


def cmd_verify(clients: AwsClients, args: argparse.Namespace, out: TextIO) -> int:
    target, who, _ = resolve_target(clients, args)
    results = run_checks(Context(clients, target, **canary_mod.context_options(args)))
    results += canary_mod.extra_checks(clients, target, args)
    if args.output == "json":
        print(json.dumps({"trail": target.trail.arn, "checks": [r.to_json() for r in results],
                          "summary": summary(results)}, indent=2), file=out)
    else:
        describe_target(target, who, out)
        print_checks(results, out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def cmd_remove(clients: AwsClients, args: argparse.Namespace, out: TextIO, stdin: TextIO,
               executor_factory: Callable[[AwsClients, float], Executor]) -> int:
    if getattr(args, "confirm_log_group", None) and not args.delete_log_group:
        raise UsageError("--confirm-log-group needs --delete-log-group",
                         "add --delete-log-group")
    target, who, _ = resolve_target(clients, args, need_org_id=False)
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


# ----------------------------------------------------------------------------------- main

@dataclass
class Invocation:
    """What a subcommand handler gets: parsed args, streams, and AWS clients created on use."""

    args: argparse.Namespace
    out: TextIO
    stdin: TextIO
    executor_factory: Callable[[AwsClients, float], Executor]
    _clients: AwsClients | None = None

    @property
    def clients(self) -> AwsClients:
        if self._clients is None:
            self._clients = AwsClients(profile=self.args.profile, region=self.args.region)
        return self._clients


def _wants_json(argv: list[str]) -> bool:
    for i, a in enumerate(argv):
        if a == "--output=json" or (a == "--output" and argv[i + 1:i + 2] == ["json"]):
            return True
    return False


def _error(out: TextIO, as_json: bool, code: str, message: str, remediation: str = "",
           extra: dict[str, Any] | None = None, text: str | None = None) -> None:
    print(text if text is not None else f"trailwatch: {message}", file=sys.stderr)
    if remediation and text is None:
        print(f"fix: {remediation}", file=sys.stderr)
    if as_json:
        err: dict[str, Any] = {"code": code, "message": message, "remediation": remediation}
        err.update(extra or {})
        print(json.dumps({"error": err}, indent=2), file=out)


def _step_report(e: StepFailure) -> dict[str, Any]:
    return {"done": [s.api for s in e.done], "failed": e.step.api,
            "not_run": [s.api for s in e.remaining]}


def main(argv: list[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None,
         clients: AwsClients | None = None,
         executor_factory: Callable[[AwsClients, float], Executor] | None = None) -> int:
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help / --version
        return EXIT_USAGE if e.code not in (0, None) else EXIT_OK
    except UsageError as e:
        parser.print_usage(sys.stderr)
        _error(out, as_json, e.code, e.message, e.remediation)
        return EXIT_USAGE
    as_json = args.output == "json"
    if executor_factory is None:
        def executor_factory(c: AwsClients, timeout: float) -> Executor:
            return Executor(c, sleep=time.sleep, propagation_timeout=timeout)
    inv = Invocation(args, out, stdin, executor_factory, clients)
    try:
        return args.handler(inv)
    except StepInterrupted as e:
        _error(out, as_json, "Interrupted", "apply interrupted (Ctrl-C)",
               "run the same command again: it does only what is still missing",
               _step_report(e), text=e.report())
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _error(out, as_json, "Interrupted", "interrupted (Ctrl-C) before any change was made",
               "run the command again")
        return EXIT_INTERRUPTED
    except StepFailure as e:
        _error(out, as_json, e.code, str(e), e.explanation, _step_report(e), text=e.report())
        return EXIT_FAIL
    except SetupError as e:
        _error(out, as_json, e.code, e.message, e.remediation)
        return e.exit_code
    except ClientError as e:
        _error(out, as_json, error_code(e), f"{error_code(e)}: {error_message(e)}",
               "check the permissions of these credentials (`plan --check-permissions`)")
        return EXIT_FAIL
    except (NoCredentialsError, NoRegionError) as e:
        _error(out, as_json, type(e).__name__, str(e),
               "configure credentials and region (--profile, --region, AWS_REGION)")
        return EXIT_USAGE
    except BotoCoreError as e:
        _error(out, as_json, type(e).__name__, str(e))
        return EXIT_FAIL


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
