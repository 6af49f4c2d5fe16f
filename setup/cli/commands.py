"""``trailwatch plan | apply | verify | remove``: print the plan, ask for consent, run it, print
the checks.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from setup.aws import AwsClients
from setup.errors import EXIT_FAIL, EXIT_OK, UsageError
from setup.cli.failures import runnable
from setup.verify import FAIL, CheckResult, Context, run_checks, summary
from setup.verify import canary as canary_mod
from setup.wiring.executor import Executor
from setup.wiring.models import Target
from setup.wiring.planner import Plan
from setup.wiring.plans import (
    check_permissions,
    load_saved_plan,
    make_plan,
    permission_requests,
    plan_json,
    refresh_target,
    save_plan,
)
from setup.wiring.removal import removal_plan
from setup.wiring.target import resolve_target


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
    return ask_consent(plan, args, verb, out, stdin)


def ask_consent(plan: Any, args: argparse.Namespace, verb: str, out: TextIO,
                stdin: TextIO) -> int | None:
    """Consent for a plan already shown: None to go on (nothing to do, --yes, or "y"); an exit
    code to stop (a declined prompt is not success); no terminal and no --yes is a usage error
    whose fix is the same command line with --yes."""
    if not plan.steps or args.yes:
        return None
    answer = confirm(f"{verb.capitalize()} these {len(plan.steps)} change(s)?", stdin, out)
    if answer is None:
        refusal = UsageError(f"refusing to {verb} without confirmation: input is not a "
                             "terminal", "review the plan, then pass --yes", code="NotConfirmed")
        refusal.retry_with = {"--yes": None}     # fix: this command line with --yes
        raise refusal
    if not answer:   # a declined prompt is not success (exit 1)
        print(f"Nothing to {verb}: not confirmed.", file=out)
        return EXIT_FAIL
    return None


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
        doc = plan_json(plan)
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
    waited = [canary_mod.wait_for_delivery(clients, fresh, applied_at, args.wait_timeout,
                                           progress=canary_mod.progress_for(args))] \
        if getattr(args, "wait", False) else []
    results = checks(clients, fresh, args, waited)
    if text:
        print(f"\nApplied {len(done)} change(s) with {writes} write call(s).", file=out)
        print_checks(results, out)
    else:
        print(json.dumps({"plan": plan_json(plan), "applied": [s.api for s in done],
                          "write_calls": writes,
                          "verify": {"checks": [r.to_json() for r in results],
                                     "summary": summary(results)}}, indent=2), file=out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def checks(clients: AwsClients, target: Target, args: argparse.Namespace,
           first: list[CheckResult] | None = None) -> list[CheckResult]:
    """verify's checks (after ``first``), the canary's when asked, each remediation made a
    command for this run (its --trail, --region, --profile filled in)."""
    results = (first or []) + run_checks(Context(clients, target,
                                                 **canary_mod.context_options(args)))
    results += canary_mod.extra_checks(clients, target, args)
    if getattr(args, "chat_topic", None):
        from setup.verify.chat import chat_topic
        results.append(chat_topic(clients, args.chat_topic))
    return [replace(r, remediation=runnable(r.remediation, args)) for r in results]


def cmd_verify(clients: AwsClients, args: argparse.Namespace, out: TextIO) -> int:
    target, who, _ = resolve_target(clients, args)
    results = checks(clients, target, args)
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
    return print_removed(executor_factory(clients, 0).run(plan), plan, args, out)


def print_removed(done: list[Any], plan: Any, args: argparse.Namespace, out: TextIO) -> int:
    """What a remove did: the steps run and the plan's notes (JSON), or a count (text)."""
    if args.output == "json":
        print(json.dumps({"removed": [s.to_json() for s in done], "notes": plan.notes},
                         indent=2), file=out)
    else:
        print(f"\nRemoved: {len(done)} change(s).", file=out)
    return EXIT_OK
