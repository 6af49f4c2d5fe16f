"""``trailwatch demo``: the whole path on an embedded local AWS (moto), no account needed.

1. Start moto's ThreadedMotoServer on 127.0.0.1 (free port) and point every client at it.
2. Create an organization with two member accounts, a CloudTrail bucket with its bucket policy and a
   multi-region organization trail.
3. Run ``plan``, ``apply`` and ``verify`` through the very code path of the CLI.
4. Play CloudTrail: before writing a stream, check that the role's trust policy lets
   cloudtrail.amazonaws.com assume it and that its policy allows CreateLogStream/PutLogEvents on
   that exact stream ARN (Deny wins, ``*``/``?`` wildcards). A denied stream is not written and its
   error is reported through GetTrailStatus, as CloudTrail does.
5. Read the log group back as a subscription delivers it (per stream, batched, gzip + base64),
   invoke the event processor, and read the alerts back from SNS through an SQS subscription.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from setup.demo import canary as demo_canary
from setup.demo import flowlogs as demo_flowlogs
from setup.demo import routing as routing_demo
from setup.demo.cloudtrail import deliver, subscription_invocations
from setup.demo.topology import print_topology, run_topology
from setup.demo.world import (
    REGION,
    TRAIL,
    CliMain,
    CountingMetrics,
    QuietLog,
    client,
    create_world,
    drain_queue,
    embedded_aws,
    run_cli,
)
from setup.wiring.models import Target, Trail, stream_policy


def alert_channel(cis_topic_name: str) -> tuple[str, str, str]:
    """The processor's alert topic with an SQS inbox, the failure queue, and an on-call queue
    subscribed to the CIS alarm topic that `apply --cis-alarms` created."""
    sns, sqs = client("sns"), client("sqs")
    topic = sns.create_topic(Name="trailwatch-alerts")["TopicArn"]
    read_q = sqs.create_queue(QueueName="trailwatch-demo-inbox")["QueueUrl"]
    fail_q = sqs.create_queue(QueueName="trailwatch-failures")["QueueUrl"]
    oncall = sqs.create_queue(QueueName="trailwatch-demo-oncall")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=read_q, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    cis_topic = sns.create_topic(Name=cis_topic_name)["TopicArn"]   # exists: returns its ARN
    oncall_arn = sqs.get_queue_attributes(QueueUrl=oncall, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=cis_topic, Protocol="sqs", Endpoint=oncall_arn["Attributes"]["QueueArn"])
    return topic, read_q, fail_q


def process(invocations: list[dict[str, Any]], topic: str, fail_q: str) -> dict[str, Any]:
    from handlers.processor import App
    metrics = CountingMetrics()
    lags: list[float] = []
    acct = topic.split(":")[4]
    # the demo's operator (user secops) is the principal that runs trailwatch
    app = App.from_env({"ALERT_TOPIC_ARN": topic, "FAILURE_QUEUE_URL": fail_q,
                        "EXPECTED_CHANGE_PRINCIPALS": f"arn:aws:iam::{acct}:user/secops"},
                       metrics_sink=metrics, log=QuietLog(),
                       emit=lambda line: lags.extend(json.loads(line).get("DeliveryLag", [])))
    totals: dict[str, int] = {}
    for event in invocations:
        result = app.handle(event)
        for k, v in result.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return {"totals": totals, "lags": lags}


def lag_summary(lags: list[float]) -> dict[str, float] | None:
    """Nearest-rank p50/p95 and max of the DeliveryLag samples the handler wrote as EMF
    (what CloudWatch computes from them)."""
    if not lags:
        return None
    s = sorted(lags)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))], 3)

    return {"p50": pct(0.50), "p95": pct(0.95), "max": round(s[-1], 3), "count": len(s)}


# ----------------------------------------------------------------------------------- main

def run_demo(output: str = "text", broken_policy: bool = False, out: TextIO = sys.stdout,
             cli: CliMain | None = None) -> int:
    """``cli(argv, out=, stdin=) -> exit code`` runs a trailwatch command; the CLI passes its own
    ``main`` (the same command functions a user runs)."""
    if cli is None:
        raise TypeError("run_demo needs the CLI entry function (cli=setup.cli.main)")
    started = time.monotonic()
    report: dict[str, Any] = {"scenario": "broken-policy" if broken_policy else "healthy"}
    with embedded_aws() as endpoint:
        report["endpoint"] = endpoint
        world = create_world()
        report["organization"] = {"id": world["org_id"], "management": world["account"],
                                  "members": world["members"]}
        args = ["--trail", TRAIL]
        report["plan"] = run_cli(cli, ["plan", *args, "--cis-alarms"])
        report["apply"] = run_cli(cli, ["apply", *args, "--cis-alarms", "--yes"])
        if report["apply"][0] != 0:
            print(report["apply"][1] + report["apply"][2], file=sys.stderr)
            return 1
        plan = json.loads(run_cli(cli, ["plan", *args, "--cis-alarms", "--output", "json"])[1])
        log_group, role = plan["log_group"]["name"], plan["role"]["name"]
        if broken_policy:
            break_policy(world, log_group, role, plan["role"]["policy_name"])
        topic, read_q, fail_q = alert_channel(plan["cis"]["topic_name"])
        now = time.time()
        delivery = deliver(world, log_group, role, now)
        code, verify_json, _ = run_cli(cli, ["verify", *args, "--output", "json"])
        report["verify"] = json.loads(verify_json)
        report["verify_text"] = run_cli(cli, ["verify", *args])[1]
        report["delivery"] = delivery
        invocations = subscription_invocations(log_group, world["account"])
        processed = process(invocations, topic, fail_q)
        alerts = drain_queue(client("sqs"), read_q)
        failures = drain_queue(client("sqs"), fail_q)
        report["canary"] = demo_canary.run(world, log_group, role, topic, read_q, fail_q, TRAIL, cli)
        report["topology"] = run_topology(world, log_group, cli)
        report["log_sources"] = demo_flowlogs.run(cli)
    report["routing"] = routing_demo.run_isolated(invocations)
    totals = processed["totals"]
    lags = processed["lags"]
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a["rule"]["id"]] = by_rule.get(a["rule"]["id"], 0) + 1
    accounted = totals.get("records", 0) + totals.get("oversize", 0) + totals.get("malformed", 0)
    report["processing"] = {
        "invocations": len(invocations),
        "log_events_written": delivery["written"],
        "log_events_processed": totals.get("log_events", 0),
        "records": totals.get("records", 0),
        "oversize": totals.get("oversize", 0),
        "malformed": totals.get("malformed", 0),
        "control_messages": totals.get("control_messages", 0),
        "failure_queue_messages": len(failures),
        "lost_events": delivery["written"] - accounted,
        "delivery_lag_seconds": lag_summary(lags) or {"p50": None, "p95": None, "max": None,
                                                      "count": 0},
    }
    report["alerts"] = {"count": len(alerts), "by_rule": dict(sorted(by_rule.items())),
                        "expected_changes": sum(1 for a in alerts if a.get("expected_change")),
                        "example": next((a for a in alerts if a["kind"] == "rule_match"
                                         and not a["expected_change"]), None)}
    report["verify_exit_code"] = code
    report["seconds"] = round(time.monotonic() - started, 1)
    if output == "json":
        doc = {k: v for k, v in report.items() if k not in ("plan", "apply", "verify_text")}
        doc["plan_exit_code"], doc["apply_exit_code"] = report["plan"][0], report["apply"][0]
        print(json.dumps(doc, indent=2), file=out)
    else:
        print_report(report, out)
    return 0


def break_policy(world: dict[str, Any], log_group: str, role: str, policy_name: str) -> None:
    """Scenario: the role keeps a single-account policy although the trail is an org trail."""
    t = Trail(TRAIL, f"arn:aws:cloudtrail:{REGION}:{world['account']}:trail/{TRAIL}", REGION,
              world["account"], False, True)
    single = Target(trail=t, account=world["account"], log_group=log_group, role_name=role)
    client("iam").put_role_policy(RoleName=role, PolicyName=policy_name,
                                   PolicyDocument=json.dumps(stream_policy(single)))


def print_report(r: dict[str, Any], out: TextIO) -> None:
    def section(title: str) -> None:
        print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), file=out)

    org = r["organization"]
    print(f"trailwatch demo ({r['scenario']}) on an embedded AWS at {r['endpoint']}", file=out)
    print(f"organization {org['id']}: management {org['management']}, members "
          f"{', '.join(org['members'])}", file=out)
    section("trailwatch plan --trail org-trail --cis-alarms")
    print(r["plan"][1].rstrip(), file=out)
    section("trailwatch apply --trail org-trail --cis-alarms --yes")
    print(r["apply"][2].rstrip(), file=out)   # progress, one line per step
    print(r["apply"][1].rstrip().split("\n\nApplied", 1)[-1].join(["Applied", ""]), file=out)
    section("CloudTrail delivery (simulated)")
    d = r["delivery"]
    print(f"log events written: {d['written']}", file=out)
    for denied in d["denied"]:
        print(f"NOT DELIVERED: {denied['events']} event(s) for {denied['stream']}: "
              f"{denied['error']}", file=out)
    section("trailwatch verify --trail org-trail (after delivery)")
    print(r["verify_text"].rstrip().split("\n\n", 1)[-1], file=out)
    section("event processor")
    p = r["processing"]
    lag = p["delivery_lag_seconds"]
    print(f"invocations {p['invocations']}  log events {p['log_events_processed']}/"
          f"{p['log_events_written']}  CloudTrail records {p['records']}", file=out)
    print(f"oversize {p['oversize']}  malformed {p['malformed']}  control messages "
          f"{p['control_messages']}  -> failure queue {p['failure_queue_messages']}  "
          f"lost {p['lost_events']}", file=out)
    print(f"delivery lag p50 {lag['p50']} s  p95 {lag['p95']} s  max {lag['max']} s "
          f"({lag['count']} records)", file=out)
    section("alerts read back from SNS -> SQS")
    a = r["alerts"]
    print(f"{a['count']} alert(s), {a['expected_changes']} marked expected_change "
          "(trailwatch's own UpdateTrail)", file=out)
    for rule, n in a["by_rule"].items():
        print(f"  {rule:<30} {n}", file=out)
    if a["example"]:
        print("\none alert in full:", file=out)
        print(json.dumps(a["example"], indent=2), file=out)
    if r.get("canary"):
        demo_canary.print_section(r["canary"], out)
    if "topology" in r:
        section("topology (ii): management log group -> destination -> audit processor")
        print_topology(r["topology"], out)
    routing_demo.print_section(r.get("routing"), out)
    demo_flowlogs.print_section(r.get("log_sources"), out)
    print(f"\ndone in {r['seconds']} s", file=out)
