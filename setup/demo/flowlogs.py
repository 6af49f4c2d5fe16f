"""The demo's other log sources: VPC flow logs to S3 and to CloudWatch Logs, and the readiness
report before and after, on the embedded AWS made strict by :mod:`.logdelivery`.

A shared bucket already holds another team's statement. ``trailwatch flow-logs apply`` sends two
VPCs to it and one VPC to a log group; a re-run writes nothing; one delivery round
(:func:`.logdelivery.deliver`) writes files under the documented key layout and log events, or
marks a flow log FAILED; ``flow-logs verify`` reads it back. ``readiness`` runs before and after.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from setup.demo.logdelivery import deliver, strict_log_delivery
from setup.demo.world import CliMain, client, run_cli

FLOW_BUCKET = "trailwatch-demo-shared-logs"
FLOW_GROUP = "trailwatch-demo-vpc-flow"
OTHER_TEAM = {"Sid": "DataTeamRead", "Effect": "Allow",
              "Principal": {"AWS": "arn:aws:iam::111122223333:role/data-team"},
              "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{FLOW_BUCKET}/exports/*"}


def _readiness(cli: CliMain) -> dict[str, Any]:
    code, out, err = run_cli(cli, ["readiness", "--output", "json"])
    doc = json.loads(out) if out.strip() else {"error": err}
    return {"exit_code": code, "summary": doc.get("summary"),
            "checks": {c["id"]: {"status": c["status"], "message": c["message"]}
                       for c in doc.get("checks", [])}}


def _json(result: tuple[int, str, str]) -> dict[str, Any]:
    code, out, err = result
    try:
        doc = json.loads(out)
    except ValueError:
        doc = {"error": (out + err).strip()[-400:]}
    doc["exit_code"] = code
    return doc


def run(cli: CliMain) -> dict[str, Any]:
    with strict_log_delivery() as strict:
        s3, ec2 = client("s3"), client("ec2")
        s3.create_bucket(Bucket=FLOW_BUCKET)
        s3.put_bucket_policy(Bucket=FLOW_BUCKET, Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [OTHER_TEAM]}))
        default = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]
        app = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
        data = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        to_s3 = [a for v in (*default, app) for a in ("--vpc", v)]
        s3_args = ["flow-logs", "apply", *to_s3, "--to", f"s3://{FLOW_BUCKET}/flow-logs", "--yes",
                   "--output", "json"]
        fields = ("version,account-id,interface-id,srcaddr,dstaddr,srcport,dstport,protocol,"
                  "packets,bytes,start,end,action,log-status,vpc-id,flow-direction")   # v5
        cwl_args = ["flow-logs", "apply", "--vpc", data, "--to", f"log-group:{FLOW_GROUP}",
                    "--fields", fields, "--yes", "--output", "json"]
        report: dict[str, Any] = {"bucket": FLOW_BUCKET, "log_group": FLOW_GROUP,
                                  "vpcs": {"s3": [*default, app], "log_group": [data]}}
        ct = client("cloudtrail")
        for t in ct.describe_trails().get("trailList", []):
            if not ct.get_event_selectors(TrailName=t["TrailARN"]).get("EventSelectors"):
                # AWS gives a new trail this default selector (all management events); moto
                # gives none, which readiness would rightly report as FAIL
                ct.put_event_selectors(TrailName=t["TrailARN"], EventSelectors=[
                    {"ReadWriteType": "All", "IncludeManagementEvents": True}])
        report["readiness_before"] = _readiness(cli)
        s3_apply, cwl_apply = _json(run_cli(cli, s3_args)), _json(run_cli(cli, cwl_args))
        report["apply_s3"] = {"exit_code": s3_apply["exit_code"],
                              "applied": s3_apply.get("applied"),
                              "write_calls": s3_apply.get("write_calls")}
        report["apply_log_group"] = {"exit_code": cwl_apply["exit_code"],
                                     "applied": cwl_apply.get("applied"),
                                     "write_calls": cwl_apply.get("write_calls")}
        rerun = _json(run_cli(cli, s3_args))
        report["rerun_write_calls"] = rerun.get("write_calls")
        report["automatic_attachments"] = len(strict.attachments)
        policy = json.loads(s3.get_bucket_policy(Bucket=FLOW_BUCKET)["Policy"])
        report["bucket_policy_sids"] = [st.get("Sid") for st in policy["Statement"]]
        report["delivery"] = {fid: problem or "delivered" for fid, problem in deliver().items()}
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=FLOW_BUCKET).get("Contents", [])]
        report["files"] = {"count": len(keys), "example": keys[0] if keys else None}
        report["verify"] = {}
        for name, dest, vpcs in (("s3", f"s3://{FLOW_BUCKET}/flow-logs", [*default, app]),
                                 ("log_group", f"log-group:{FLOW_GROUP}", [data])):
            v = _json(run_cli(cli, ["flow-logs", "verify", *[a for x in vpcs for a in ("--vpc", x)],
                                    "--to", dest, "--output", "json"]))
            report["verify"][name] = {"exit_code": v["exit_code"],
                                      "checks": {c["id"]: c["status"] for c in v.get("checks", [])}}
        report["readiness_after"] = _readiness(cli)
    return report


def print_section(r: dict[str, Any] | None, out: TextIO) -> None:
    if not r:
        return
    print("\n=== other log sources: VPC flow logs and the readiness report " + "=" * 8, file=out)
    before, after = r["readiness_before"], r["readiness_after"]
    vpc_before = before["checks"].get("vpc.flow_logs", {})
    print(f"readiness before: {before['summary']}  (exit {before['exit_code']})", file=out)
    print(f"  vpc.flow_logs {vpc_before.get('status')}: {vpc_before.get('message')}", file=out)
    a, c = r["apply_s3"], r["apply_log_group"]
    print(f"flow-logs apply --to s3://{r['bucket']}/flow-logs: {', '.join(a['applied'] or [])} "
          f"({a['write_calls']} writes, exit {a['exit_code']})", file=out)
    print(f"flow-logs apply --to log-group:{r['log_group']}: {', '.join(c['applied'] or [])} "
          f"({c['write_calls']} writes, exit {c['exit_code']})", file=out)
    print(f"re-run: {r['rerun_write_calls']} writes; AWS automatic policy attachments: "
          f"{r['automatic_attachments']}", file=out)
    print(f"bucket policy statements: {', '.join(r['bucket_policy_sids'])} (the data team's kept)",
          file=out)
    for fid, outcome in r["delivery"].items():
        print(f"  {fid}: {outcome}", file=out)
    print(f"files delivered: {r['files']['count']}, e.g. {r['files']['example']}", file=out)
    for name, v in r["verify"].items():
        print(f"flow-logs verify ({name}): exit {v['exit_code']}  "
              + "  ".join(f"{k} {s}" for k, s in v["checks"].items()), file=out)
    vpc_after = after["checks"].get("vpc.flow_logs", {})
    print(f"readiness after: {after['summary']}  (exit {after['exit_code']})", file=out)
    print(f"  vpc.flow_logs {vpc_after.get('status')}: {vpc_after.get('message')}", file=out)
    still = [k for k, c in after["checks"].items() if c["status"] == "FAIL"]
    if still:
        print(f"  still FAIL (not trailwatch's to fix here): {', '.join(still)}", file=out)
