"""Alert noise on ordinary CloudTrail traffic (issue 20): ``make noise``.

Replays ``../shared/corpus/benign/`` (or ``--corpus DIR``) through the real processor
(``App.from_env`` + ``App.handle``) with the default configuration: the template's default
environment (tamper rules for org-trail, aggregation threshold 20) and the alert state table
(``ALERT_STATE_TABLE_NAME``) on a moto DynamoDB created as template.yaml creates it. Records go
in eventTime order, in subscription payloads of at most 500 events spanning at most 5 minutes.
Prints alerts per 1,000 records per rule set, with the figure before issue 20 beside it.
Not a test: no assertion, the numbers are for the README and the closing note.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Measured on d589b4f (before issue 20) with the same replay: 44 alerts on 4,691 records.
BEFORE = {"cis": (33, 7.03), "pack": (11, 2.34), "tamper": (0, 0.0), "all": (44, 9.38)}
ENV = {"TRAIL_NAME": "org-trail", "TRAIL_LOG_GROUP_NAME": "CloudTrail/org-trail",
       "DELIVERY_ROLE_NAME": "trailwatch-cwl-org-trail",
       "AWS_LAMBDA_FUNCTION_NAME": "trailwatch-ProcessorFunction",
       "ALERT_AGGREGATION_THRESHOLD": "20"}
TABLE = "trailwatch-alert-state"
MAX_EVENTS, MAX_SPAN = 500, 300.0


def payloads(lines: list[bytes]) -> list[list[tuple[float, int, bytes]]]:
    rows = []
    for i, line in enumerate(lines):
        t = json.loads(line).get("eventTime")
        ts = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() if t else 0.0
        rows.append((ts, i, line))
    rows.sort()
    out: list[list[tuple[float, int, bytes]]] = []
    for row in rows:
        if not out or len(out[-1]) >= MAX_EVENTS or row[0] - out[-1][0][0] > MAX_SPAN:
            out.append([])
        out[-1].append(row)
    return out


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.alerts: list[dict] = []

    def publish(self, alerts: list[dict]) -> list:
        self.alerts += alerts
        return []


class Quiet:
    def add_metric(self, **kw: object) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *a, **k: None


def run(corpus: Path, table: bool = True) -> tuple[int, Counter, Counter]:
    import boto3
    from moto import mock_aws

    from handlers.alert_state import ENV_TABLE, KEY, TTL_ATTRIBUTE
    from handlers.processor import App

    lines = [ln.rstrip(b"\n") for p in sorted(corpus.glob("*.jsonl"))
             for ln in p.read_bytes().splitlines() if ln.strip()]
    with mock_aws():
        env = dict(ENV)
        if table:
            ddb = boto3.client("dynamodb", region_name="us-east-1")
            ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
            ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
            env[ENV_TABLE] = TABLE
        now = [0.0]
        app = App.from_env(env, client_factory=lambda s: boto3.client(s, region_name="us-east-1"),
                           clock=lambda: now[0], metrics_sink=Quiet(), log=Quiet(),
                           emit=lambda b: None)
        sink = Collect()
        app.sinks = [sink]
        for p in payloads(lines):
            now[0] = p[-1][0] + 120
            doc = {"messageType": "DATA_MESSAGE", "owner": "111122223333",
                   "logGroup": ENV["TRAIL_LOG_GROUP_NAME"], "logStream": "stream",
                   "subscriptionFilters": ["trailwatch"],
                   "logEvents": [{"id": str(i), "timestamp": int((ts + 60) * 1000),
                                  "message": ln.decode()} for ts, i, ln in p]}
            data = base64.b64encode(gzip.compress(json.dumps(doc).encode())).decode()
            app.handle({"awslogs": {"data": data}})
        source = {r.id: r.source for r in app.pipeline.rules}
    by_set: Counter = Counter()
    by_rule: Counter = Counter()
    for a in sink.alerts:
        rid = (a.get("rule") or {}).get("id")
        by_set[source.get(rid, a.get("kind"))] += 1
        by_rule[rid or a.get("kind")] += 1
    return len(lines), by_set, by_rule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "benign")
    ap.add_argument("--no-table", action="store_true", help="without ALERT_STATE_TABLE_NAME")
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"noise: {args.corpus} not found", file=sys.stderr)
        return 2
    n, by_set, by_rule = run(args.corpus, table=not args.no_table)
    print(f"{n:,} records from {args.corpus}, state table: {'no' if args.no_table else 'moto'}")
    print(f"{'rule set':<10}{'alerts':>8}{'per 1,000':>11}   before issue 20")
    for name in ("cis", "pack", "tamper", "all"):
        count = sum(by_set.values()) if name == "all" else by_set.get(name, 0)
        b_count, b_rate = BEFORE[name]
        print(f"{name:<10}{count:>8}{count * 1000 / n:>11.2f}   {b_count:>4} = {b_rate:.2f}")
    other = {k: v for k, v in by_set.items() if k not in ("cis", "pack", "tamper")}
    if other:
        print(f"other kinds: {dict(other)}")
    print("\nper rule:")
    for rid, count in by_rule.most_common():
        print(f"  {rid:<48}{count:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
