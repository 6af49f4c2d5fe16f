"""Turn on VPC flow logs to S3 or CloudWatch Logs, safely in a shared account.

    trailwatch flow-logs plan   (--vpc ID ... | --subnet ID ... | --eni ID ... | --all-vpcs)
                                --to s3://BUCKET[/PREFIX] | --to log-group:NAME [options]
                                [--out plan.json] [--check-permissions]
    trailwatch flow-logs apply  ... [--yes] | --plan plan.json [--yes]
    trailwatch flow-logs verify ...                      # exit 1 when a check FAILs
    trailwatch flow-logs remove ... [--yes]

S3: the bucket policy statements AWSLogDeliveryWrite / AWSLogDeliveryAclCheck for
delivery.logs.amazonaws.com, scoped to AWSLogs/<account>/* under the prefix and conditioned on
aws:SourceAccount and aws:SourceArn, are MERGED into the bucket's existing policy (other statements
kept, compared without Sids, the 20 KB limit checked first) BEFORE the flow log is created, so
AWS's automatic attachment, which replaces the whole bucket policy, never runs. An SSE-KMS bucket
gets the key-policy statement printed (or merged with --kms-key-policy apply); an AWS managed key
is refused. CloudWatch Logs: the log group and a role that only vpc-flow-logs.amazonaws.com can
assume (aws:SourceAccount, aws:SourceArn), allowed to write that one group.

Flow logs are tagged managed-by=trailwatch; remove deletes only those, and takes the statements
out of the bucket policy only when no other flow log of the account and Region delivers there.
A re-run makes no call that writes. Exit codes as for the trail commands: 0 ok, 1 a verify FAIL,
a failed apply, a refusal or a stale plan, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from typing import Any, TextIO

from setup import __version__
from setup.cli.commands import ask_consent, print_checks, print_removed
from setup.errors import EXIT_FAIL, EXIT_OK, SetupError, UsageError
from setup.verify import summary
from setup.verify.checks import FAIL
from setup.verify.flowlogs import MAX_DELIVERY_AGE, run_flowlog_checks
from setup.wiring import flowlogs as fw
from setup.wiring import flowlogs_aws as fa
from setup.wiring.models import RETENTION_DAYS, partition_for_region
from setup.wiring.plans import (
    PlanFileKind,
    check_permissions,
    check_recomputed,
    plan_file_digest,
    read_plan_file,
)
from setup.wiring.state import resolve_kms_key

PLAN_FORMAT = "trailwatch-flowlogs-plan/1"
_SAVED = ("vpc", "subnet", "eni", "all_vpcs", "to", "fields", "file_format",
          "hive_compatible_prefixes", "per_hour_partition", "traffic_type",
          "max_aggregation_interval", "kms_key_policy", "retention_days", "role_name", "kms_key")
_STR, _OPT_STR = (str,), (str, type(None))
# A saved plan's options, checked as the parser checks them (plus the Region it was made in).
SAVED_PLANS = PlanFileKind(
    PLAN_FORMAT,
    {"vpc": (list,), "subnet": (list,), "eni": (list,), "all_vpcs": (bool,), "to": _STR,
     "fields": _OPT_STR, "file_format": _STR, "hive_compatible_prefixes": (bool,),
     "per_hour_partition": (bool,), "traffic_type": _STR, "max_aggregation_interval": (int,),
     "kms_key_policy": _STR, "retention_days": (int, type(None)), "role_name": _OPT_STR,
     "kms_key": _OPT_STR, "region": _STR},
    ("to", "region"), "trailwatch flow-logs plan",
    item_types={"vpc": _STR, "subnet": _STR, "eni": _STR},
    choices={"file_format": ("plain-text", "parquet"), "traffic_type": ("ALL", "ACCEPT", "REJECT"),
             "max_aggregation_interval": (60, 600), "kms_key_policy": ("print", "apply"),
             "retention_days": RETENTION_DAYS})


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to log")
    g.add_argument("--vpc", action="append", default=[], metavar="ID", help="a VPC (repeatable)")
    g.add_argument("--subnet", action="append", default=[], metavar="ID",
                   help="a subnet (repeatable)")
    g.add_argument("--eni", action="append", default=[], metavar="ID",
                   help="a network interface (repeatable)")
    g.add_argument("--all-vpcs", action="store_true", help="every VPC of the Region")
    d = p.add_argument_group("where to")
    d.add_argument("--to", metavar="DEST",
                   help="s3://BUCKET[/PREFIX] (an existing bucket; AWSLogs is reserved) or "
                        "log-group:NAME (created if missing)")
    d.add_argument("--fields", metavar="F,F,...",
                   help="record fields (versions 2-5), e.g. version,account-id,interface-id,"
                        "srcaddr,dstaddr,srcport,dstport,protocol,packets,bytes,start,end,action,"
                        "log-status,vpc-id,flow-direction (default: the version 2 fields)")
    d.add_argument("--traffic-type", choices=("ALL", "ACCEPT", "REJECT"), default="ALL")
    d.add_argument("--max-aggregation-interval", type=int, choices=(60, 600), default=600,
                   metavar="60|600", help="seconds (default 600)")
    d.add_argument("--file-format", choices=("plain-text", "parquet"), default="plain-text",
                   help="S3 only (default plain-text)")
    d.add_argument("--hive-compatible-prefixes", action="store_true",
                   help="S3 only: Hive-compatible key prefixes (aws-account-id=..., year=...)")
    d.add_argument("--per-hour-partition", action="store_true",
                   help="S3 only: partition files per hour instead of per day")
    d.add_argument("--kms-key-policy", choices=("print", "apply"), default="print",
                   help="SSE-KMS bucket: print the key-policy statement delivery needs "
                        "(default), or merge it into the key policy")
    d.add_argument("--retention-days", type=int, choices=RETENTION_DAYS, metavar="N",
                   help="log group only: retention (new groups: 365)")
    d.add_argument("--kms-key", metavar="KEY",
                   help="log group only: KMS key for a new log group (key id, ARN, alias/NAME), "
                        "resolved with DescribeKey; its policy must let logs.<region>.amazonaws.com "
                        "use it for this group (the statement to add is printed)")
    d.add_argument("--role-name", metavar="NAME",
                   help="log group only: the role flow logs assume (default "
                        "trailwatch-flowlogs-<region>-<id>)")


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    top = sub.add_parser("flow-logs", help="VPC flow logs to S3 or CloudWatch Logs, merged safely",
                         description=__doc__, formatter_class=fmt)
    acts = top.add_subparsers(dest="flow_action", metavar="ACTION", required=True)
    glob = parents["globals"]
    p = acts.add_parser("plan", parents=[glob], help="show what apply would do (no writes)")
    add_arguments(p)
    p.add_argument("--out", metavar="FILE", help="save the plan; `apply --plan FILE` runs it")
    p.add_argument("--check-permissions", action="store_true",
                   help="simulate every call of plan, apply and verify with "
                        "iam:SimulatePrincipalPolicy, with the documented caller permissions "
                        "(S3: logs:CreateLogDelivery, s3:GetBucketPolicy, s3:PutBucketPolicy; "
                        "log group: iam:PassRole to vpc-flow-logs.amazonaws.com)")
    p.set_defaults(handler=cmd_plan)
    a = acts.add_parser("apply", parents=[glob], help="make it so, then verify")
    add_arguments(a)
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a.add_argument("--plan", dest="plan_file", metavar="FILE", help="apply a saved plan")
    a.set_defaults(handler=cmd_apply)
    v = acts.add_parser("verify", parents=[glob], help="read-only checks (exit 1 on FAIL)")
    add_arguments(v)
    v.add_argument("--max-delivery-age", type=int, default=int(MAX_DELIVERY_AGE.total_seconds()
                                                               // 60), metavar="MINUTES")
    v.set_defaults(handler=cmd_verify)
    r = acts.add_parser("remove", parents=[glob], help="delete trailwatch's flow logs; the "
                        "bucket statements go only when nothing else delivers there")
    add_arguments(r)
    r.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    r.set_defaults(handler=cmd_remove)


# ----------------------------------------------------------------------------------- resolve

def resolve(clients: Any, args: argparse.Namespace) -> fw.FlowTarget:
    if not args.to:
        raise UsageError("--to is required", "pass --to s3://BUCKET[/PREFIX] or "
                         "--to log-group:NAME")
    dest = fw.parse_destination(args.to)
    if dest.kind != "s3" and (args.hive_compatible_prefixes or args.per_hour_partition or
                              args.file_format != "plain-text"):
        raise UsageError("--file-format, --hive-compatible-prefixes and --per-hour-partition "
                         "are for S3 destinations", "drop them, or use --to s3://...")
    if dest.kind == "s3" and (args.retention_days or args.role_name or args.kms_key):
        raise UsageError("--retention-days, --kms-key and --role-name are for "
                         "--to log-group:NAME", "drop them (an S3 bucket's encryption is its own)")
    region = clients.default_region
    if not region:
        raise UsageError("no AWS region", "pass --region or set AWS_REGION", code="NoRegion")
    if args.all_vpcs and (args.vpc or args.subnet or args.eni):
        raise UsageError("--all-vpcs cannot be combined with --vpc/--subnet/--eni",
                         "pass one or the other")
    resources: list[tuple[str, str]] = []
    for flag, kind in (("vpc", "VPC"), ("subnet", "Subnet"), ("eni", "NetworkInterface")):
        for rid in getattr(args, flag) or []:
            if not fw.valid_id(flag, rid):
                raise UsageError(f"--{flag} {rid!r} is not a {kind} id", f"pass --{flag} "
                                 f"{ {'vpc': 'vpc-', 'subnet': 'subnet-', 'eni': 'eni-'}[flag]}...")
            if (kind, rid) not in resources:
                resources.append((kind, rid))
    if args.all_vpcs:
        resources = [("VPC", v) for v in fa.all_vpcs(clients, region)]
        if not resources:
            raise SetupError(f"no VPCs in {region}", "nothing to log", code="NoVpcs")
    if not resources:
        raise UsageError("no VPC, subnet or network interface to log",
                         "pass --vpc ID, --subnet ID, --eni ID (repeatable) or --all-vpcs")
    account = clients.client("sts", region).get_caller_identity()["Account"]
    kms_key = resolve_kms_key(clients, args.kms_key, region) if args.kms_key else None
    return fw.FlowTarget(account=account, region=region, partition=partition_for_region(region),
                         resources=tuple(resources), destination=dest,
                         fields=fw.parse_fields(args.fields), file_format=args.file_format,
                         hive=args.hive_compatible_prefixes, per_hour=args.per_hour_partition,
                         traffic_type=args.traffic_type,
                         max_aggregation=args.max_aggregation_interval,
                         kms_key_policy=args.kms_key_policy,
                         retention_days=args.retention_days, role_name=args.role_name,
                         log_group_kms_key=kms_key)


def state_digest(target: fw.FlowTarget, state: fw.FlowState) -> str:
    raw = json.dumps({"target": [target.account, target.region, target.resources,
                                 target.destination_arn], "state": state.digest_facts()},
                     sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def make_plan(clients: Any, args: argparse.Namespace, remove: bool = False
              ) -> tuple[fw.FlowPlan, fw.FlowTarget]:
    target = resolve(clients, args)
    state = fa.read_state(clients, target, removing=remove)
    if state.role is not None and target.destination.kind != "s3":
        target = replace(target, role_name=state.role.name)
    plan = fw.removal_plan(target, state) if remove else fw.build_plan(target, state)
    plan.state_digest = state_digest(target, state)
    return plan, target


# ----------------------------------------------------------------------------------- printing

_DOCS = ("Policy", "PolicyDocument", "AssumeRolePolicyDocument")


def print_plan(plan: fw.FlowPlan, out: TextIO) -> None:
    t = plan.target
    print(f"Flow logs  {', '.join(f'{k} {i}' for k, i in t.resources)}", file=out)
    print(f"           -> {t.destination.spec}  ({t.destination_arn})", file=out)
    print(f"           account {t.account}, {t.region}, record version "
          f"{fw.record_version(t.log_format)}, traffic {t.traffic_type}", file=out)
    if not plan.steps:
        print("\nNothing to do: the setup has converged (0 changes).", file=out)
    else:
        n = sum(1 for s in plan.steps if s.destructive)
        print(f"\nPlan: {len(plan.steps)} change(s)" + (f", {n} DESTRUCTIVE" if n else "")
              + ", in this order:", file=out)
        for i, s in enumerate(plan.steps, 1):
            mark = "[DESTRUCTIVE] " if s.destructive else ""
            print(f"  {i}. {s.api:<24} {mark}{s.message}", file=out)
            for line in (s.diff or "").splitlines():
                print(f"       {line}", file=out)
            for key in _DOCS:
                if key in s.params and not s.diff:
                    print(f"       full new {key}:", file=out)
                    for line in json.dumps(json.loads(s.params[key]), indent=2).splitlines():
                        print(f"         {line}", file=out)
    for note in plan.notes:
        print(f"  note: {note}", file=out)


def _confirm(plan: fw.FlowPlan, args: argparse.Namespace, verb: str, out: TextIO,
             stdin: TextIO) -> int | None:
    if args.output == "text":
        print_plan(plan, out)
    return ask_consent(plan, args, verb, out, stdin)


def _executor(inv: Any) -> fa.FlowExecutor:
    base = inv.executor_factory(inv.clients, 0)
    return fa.FlowExecutor(base.clients, sleep=base.sleep, monotonic=base.monotonic,
                           progress=base.progress)


# ----------------------------------------------------------------------------------- commands

# Simulated without a resource ARN: log delivery is not resource-scoped, and the tags go on the
# flow log being created, which has no ARN yet.
_NO_RESOURCE = ("logs:CreateLogDelivery", "logs:DeleteLogDelivery", "ec2:CreateTags")


def permission_requests(plan: fw.FlowPlan) -> list[tuple[str, str]]:
    """Reads plan, apply and verify make, then each step's actions on its resource. The seeds'
    caller permissions come in through the steps: S3 CreateFlowLogs needs
    logs:CreateLogDelivery (and the bucket's s3:GetBucketPolicy / s3:PutBucketPolicy); a log
    group destination needs iam:PassRole on the flow logs role."""
    t = plan.target
    reqs: list[tuple[str, str]] = [("sts:GetCallerIdentity", "*"), ("ec2:DescribeFlowLogs", "*")]
    if t.destination.kind == "s3":
        reqs += [(a, t.bucket_arn) for a in ("s3:GetBucketLocation", "s3:GetBucketPolicy",
                                             "s3:GetBucketTagging",
                                             "s3:GetEncryptionConfiguration", "s3:ListBucket")]
    else:
        reqs += [("logs:DescribeLogGroups", "*"), ("logs:DescribeLogStreams", t.log_group_arn),
                 ("logs:ListTagsForResource", t.log_group_arn), ("iam:GetRole", t.role_arn),
                 ("iam:ListRolePolicies", t.role_arn), ("iam:GetRolePolicy", t.role_arn)]
    for s in plan.steps:
        for a in s.iam_actions:
            reqs.append((a, t.role_arn if a == "iam:PassRole" else
                         "*" if a in _NO_RESOURCE else s.resource))
    seen: list[tuple[str, str]] = []
    for r in reqs:
        if r not in seen:
            seen.append(r)
    return seen


def cmd_plan(inv: Any) -> int:
    args, out = inv.args, inv.out
    plan, target = make_plan(inv.clients, args)
    missing = None
    if args.check_permissions:
        missing, warnings = check_permissions(inv.clients, target.region,
                                              permission_requests(plan),
                                              passed_to=fw.FLOW_LOGS_SERVICE)
        plan.notes += warnings
    if args.out:
        save_plan(plan, args, args.out)
    if args.output == "json":
        doc = plan.to_json()
        if missing is not None:
            doc["missing_permissions"] = missing
        if args.out:
            doc["saved_to"] = args.out
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    print_plan(plan, out)
    print(f"\nIAM actions apply needs: {', '.join(plan.iam_actions)}", file=out)
    if missing is not None:
        print("Permission check (iam:SimulatePrincipalPolicy): " +
              (f"MISSING {', '.join(missing)}" if missing else "all allowed"), file=out)
    if args.out:
        print(f"Plan saved to {args.out} (state {plan.state_digest}); run `trailwatch flow-logs "
              f"apply --plan {args.out}`", file=out)
    return EXIT_OK


def save_plan(plan: fw.FlowPlan, args: argparse.Namespace, path: str) -> None:
    options = {k: getattr(args, k, None) for k in _SAVED}
    options["region"] = plan.target.region
    options["all_vpcs"] = False
    options["vpc"] = [i for k, i in plan.target.resources if k == "VPC"]
    options["subnet"] = [i for k, i in plan.target.resources if k == "Subnet"]
    options["eni"] = [i for k, i in plan.target.resources if k == "NetworkInterface"]
    doc = {"format": PLAN_FORMAT, "trailwatch": __version__, "options": options,
           "state_digest": plan.state_digest, "plan": plan.to_json()}
    doc["plan_digest"] = plan_file_digest(doc)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def load_plan(inv: Any) -> tuple[fw.FlowPlan, fw.FlowTarget]:
    """The plan a saved file describes, recomputed for the account as it is now, as for the
    trail commands (setup.wiring.plans): a malformed file is ``PlanFileInvalid`` (exit 2); one
    that does not match its plan_digest, or whose steps are not the ones trailwatch plans now
    for its options, is ``PlanEdited``; a changed account is ``PlanStale`` (exit 1). What runs
    are the recomputed steps, never the file's."""
    args = inv.args
    saved = read_plan_file(args.plan_file, SAVED_PLANS)
    region = saved["options"]["region"]
    if inv.clients.default_region != region:
        raise UsageError(f"the plan is for {region}", f"pass --region {region}")
    merged = argparse.Namespace(**vars(args))
    for k, v in saved["options"].items():
        if k != "region":
            setattr(merged, k, v)
    plan, target = make_plan(inv.clients, merged)
    check_recomputed(args.plan_file, saved, plan.state_digest, plan.steps, SAVED_PLANS)
    return plan, target


def cmd_apply(inv: Any) -> int:
    args, out = inv.args, inv.out
    plan, target = load_plan(inv) if args.plan_file else make_plan(inv.clients, args)
    stop = _confirm(plan, args, "apply", out, inv.stdin)
    if stop is not None:
        return stop
    before = len(inv.clients.mutating_calls())
    done = _executor(inv).run(plan)
    writes = len(inv.clients.mutating_calls()) - before
    results = run_flowlog_checks(inv.clients, target)
    if args.output == "json":
        print(json.dumps({"plan": plan.to_json(), "applied": [s.api for s in done],
                          "write_calls": writes,
                          "verify": {"checks": [r.to_json() for r in results],
                                     "summary": summary(results)}}, indent=2), file=out)
    else:
        print(f"\nApplied {len(done)} change(s) with {writes} write call(s).", file=out)
        print_checks(results, out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def cmd_verify(inv: Any) -> int:
    import datetime as dt
    args, out = inv.args, inv.out
    target = resolve(inv.clients, args)
    results = run_flowlog_checks(inv.clients, target,
                                 max_age=dt.timedelta(minutes=args.max_delivery_age))
    if args.output == "json":
        print(json.dumps({"destination": target.destination.spec,
                          "resources": [i for _, i in target.resources],
                          "checks": [r.to_json() for r in results], "summary": summary(results)},
                         indent=2), file=out)
    else:
        print(f"Flow logs  {', '.join(i for _, i in target.resources)} -> "
              f"{target.destination.spec} ({target.region})", file=out)
        print_checks(results, out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK


def cmd_remove(inv: Any) -> int:
    args, out = inv.args, inv.out
    plan, _ = make_plan(inv.clients, args, remove=True)
    stop = _confirm(plan, args, "remove", out, inv.stdin)
    if stop is not None:
        return stop
    return print_removed(_executor(inv).run(plan), plan, args, out)

