"""Demo step: where each alert went.

Runs the demo's invocations through a processor with every routing option on (SNS with the
documented filter policies, EventBridge with the documented rule patterns (docs/processor.md), Security Hub, the chat
topic, DynamoDB idempotency), replays them once more as a redelivery, reads everything back and
prints one finding as Security Hub stores it. ``run_isolated`` runs it on moto in-process (after the
demo's embedded server has stopped: in-memory calls keep the demo fast); ``run`` takes any client
factory; ``print_section`` renders the result.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from setup.demo.world import drain_queue

# The filter policies and rule patterns of docs/processor.md, shipped with the package so an
# installed demo routes exactly as the checkout's (a test keeps the two equal).
EXAMPLES = Path(__file__).resolve().parent / "data" / "routing-examples.json"


def _examples(tag: str) -> dict[str, dict[str, Any]]:
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))[tag]


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def run(invocations: list[dict[str, Any]], client: Callable[[str], Any]) -> dict[str, Any]:
    from handlers.processor import App

    sns, sqs, events, hub, ddb = (client(s) for s in ("sns", "sqs", "events", "securityhub",
                                                       "dynamodb"))
    topic = sns.create_topic(Name="trailwatch-routing-alerts")["TopicArn"]
    routes: dict[str, str] = {}
    account = client("sts").get_caller_identity()["Account"]
    for name, policy in _examples("filter-policy").items():
        if "account" in policy:   # the docs' example account -> the demo's account
            policy = dict(policy, account=[account])
            name = f"{name}: {account}"
        url, arn = _queue(sqs, f"routing-sns-{name.split(':')[0]}")
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
            "RawMessageDelivery": "true", "FilterPolicy": json.dumps(policy)})
        routes[f"SNS filter policy '{name}'"] = url
    url, arn = _queue(sqs, "routing-sns-all")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    routes["SNS alert topic (no filter)"] = url
    bus = "trailwatch-routing"
    events.create_event_bus(Name=bus)
    for name, pattern in _examples("event-pattern").items():
        url, arn = _queue(sqs, f"routing-eb-{name}")
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
        routes[f"EventBridge rule '{name}'"] = url
    chat = sns.create_topic(Name="trailwatch-routing-chat")["TopicArn"]
    url, arn = _queue(sqs, "routing-chat")
    sns.subscribe(TopicArn=chat, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    routes["chat topic (Amazon Q Developer)"] = url
    hub.enable_security_hub()
    table = "trailwatch-routing-idempotency"
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    env = {"ALERT_TOPIC_ARN": topic, "ALERT_BUS_NAME": bus, "CHAT_TOPIC_ARN": chat,
           "SECURITY_HUB_FINDINGS": "enabled", "IDEMPOTENCY_TABLE_NAME": table}

    class Quiet:
        def __getattr__(self, _: str) -> Callable[..., None]:
            return lambda *a, **k: None

    def handle_all() -> int:
        app = App.from_env(env, client_factory=client, metrics_sink=Quiet(), log=Quiet(),
                           emit=lambda line: None)
        return sum(app.handle(e).get("alerts", 0) for e in invocations)

    raised = handle_all()
    delivered = {name: len(drain_queue(sqs, url)) for name, url in routes.items()}
    findings = hub.get_findings(MaxResults=100)["Findings"]
    handle_all()    # the same invocations again: a redelivery
    redelivered = {name: len(drain_queue(sqs, url)) for name, url in routes.items()}
    example = next((f for f in findings if "CIS" in " ".join(f.get("Types", []))), None) or \
        (findings[0] if findings else None)
    return {"alerts_raised": raised, "delivered": delivered,
            "security_hub_findings": len(findings),
            "redelivery_published": sum(redelivered.values()),
            "finding_example": example}


@contextlib.contextmanager
def _in_process_aws():
    from moto import mock_aws

    keys = [k for k in os.environ if k.startswith("AWS_")]
    saved = {k: os.environ.pop(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        with mock_aws():
            yield
    finally:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ.pop(k, None)
        os.environ.update(saved)


def run_isolated(invocations: list[dict[str, Any]]) -> dict[str, Any]:
    import time

    import boto3

    started = time.monotonic()
    with _in_process_aws():
        result = run(invocations, lambda s: boto3.client(s, region_name="us-east-1"))
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def print_section(result: dict[str, Any] | None, out: TextIO) -> None:
    if not result:
        return
    print("\n=== where each alert went (all routing options on) " + "=" * 19, file=out)
    print(f"{result['alerts_raised']} alert(s) raised (before aggregation); in-process moto, "
          f"{result.get('seconds', '?')} s", file=out)
    for name, n in result["delivered"].items():
        print(f"  {name:<48} {n}", file=out)
    print(f"  {'Security Hub findings (get_findings)':<48} {result['security_hub_findings']}",
          file=out)
    print(f"same invocations redelivered: {result['redelivery_published']} new message(s) "
          "(DynamoDB idempotency)", file=out)
    if result["finding_example"]:
        print("\none finding as Security Hub stores it:", file=out)
        print(json.dumps(result["finding_example"], indent=2, default=str), file=out)
