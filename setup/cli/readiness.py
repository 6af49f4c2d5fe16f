"""Are the log sources an incident responder needs switched on? Read-only.

    trailwatch readiness [--regions all|R,...] [--output json]

Checks, per account and Region, the sources incident response relies on: CloudTrail (a multi-Region
trail logging, management events, log file validation, CloudWatch Logs delivery), AWS Config
(recorder on, all resources, delivery channel), S3 server access logging (buckets without it), VPC
flow logs (VPCs without them, record version, failing delivery) and WAF web ACL logging. Each is
PASS / WARN / FAIL with the command that fixes it. Exit 0 when nothing FAILs, 1 otherwise, as
`trailwatch verify`. Calls run concurrently and paginated; a source these credentials cannot read
is a WARN naming the permission.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from setup.errors import EXIT_FAIL, EXIT_OK
from setup.verify import summary
from setup.verify.checks import FAIL
from setup.verify.readiness import resolve_regions, run_readiness


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("readiness", parents=[parents["globals"]],
                       help="incident-response log sources: PASS / WARN / FAIL (read-only)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regions", metavar="all|R,...",
                   help="Regions to check: all (every enabled Region) or a comma-separated list "
                        "(default: --region / AWS_REGION)")
    p.set_defaults(handler=cmd_readiness)


def cmd_readiness(inv: Any) -> int:
    args, out, clients = inv.args, inv.out, inv.clients
    regions = resolve_regions(clients, args.regions)
    account = clients.client("sts", regions[0]).get_caller_identity()["Account"]
    results = run_readiness(clients, regions)
    if args.output == "json":
        print(json.dumps({"account": account, "regions": regions,
                          "checks": [r.to_json() for r in results],
                          "summary": summary(results)}, indent=2), file=out)
    else:
        print(f"Readiness of account {account} in {', '.join(regions)}", file=out)
        for r in results:
            where = (r.details or {}).get("region", "global")
            print(f"  {r.status:<4}  {r.id:<30} {where:<14} {r.message}", file=out)
            if r.status != "PASS" and r.remediation:
                print(f"        {'':<30} {'':<14} fix: {r.remediation}", file=out)
        s = summary(results)
        print(f"\n{s['pass']} passed, {s['warn']} warnings, {s['fail']} failed", file=out)
    return EXIT_FAIL if any(r.status == FAIL for r in results) else EXIT_OK
