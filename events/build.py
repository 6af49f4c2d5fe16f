#!/usr/bin/env python3
"""Regenerate the invocation events in events/*.json from the readable sources in events/sources/.

Each source describes one CloudWatch Logs subscription delivery (or a Kinesis batch of them) as
plain JSON: CloudTrail records as objects, each with the delay CloudTrail took to deliver it.
This script turns them into exactly what Lambda receives: ``{"awslogs": {"data": base64(gzip(..))}}``
or Kinesis ``Records``. Output is deterministic (fixed gzip mtime), so re-running changes nothing.

    python events/build.py          # rewrite events/*.json
    python events/build.py --check  # exit 1 if any file is stale
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"


def epoch_ms(event_time: str, delay: float) -> int:
    return int(round((datetime.fromisoformat(event_time).timestamp() + delay) * 1000))


def render_message(item: dict) -> str:
    if "message" in item:
        return item["message"]
    record = dict(item["record"])
    pad = item.get("pad_to_bytes")
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    if pad:
        filler = item.get("pad_char", "A")
        record["requestParameters"] = {"blob": ""}
        base = len(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode())
        need = pad - base
        unit = len(filler.encode())
        record["requestParameters"]["blob"] = filler * (need // unit) + "a" * (need % unit)
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        assert len(text.encode()) == pad, (len(text.encode()), pad)
    return text


def envelope(src: dict) -> dict:
    env = {k: v for k, v in src["envelope"].items() if k != "logEvents"}
    events = []
    for n, item in enumerate(src["envelope"].get("logEvents", [])):
        if "timestamp" in item:
            ts = item["timestamp"]
        else:
            anchor = item.get("record", {}).get("eventTime") or item.get("anchor_time")
            ts = epoch_ms(anchor, item.get("delay_seconds", 300))
        events.append({"id": item.get("id") or f"3792{n:052d}", "timestamp": ts,
                       "message": render_message(item)})
    env["logEvents"] = events
    return env


def encode(doc: dict | str, how: str = "gzip") -> str:
    raw = doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    data = raw.encode()
    if how == "gzip":
        # zlib's own gzip wrapper (mtime 0, OS byte from zlib): the same bytes on Python 3.11-3.13
        # (3.13's gzip.compress writes OS byte 255 where earlier versions let zlib write it).
        data = zlib.compress(data, 9, wbits=31)
    elif how == "zlib":
        data = zlib.compress(data, 9)
    elif how != "none":
        raise ValueError(how)
    return base64.b64encode(data).decode()


def build(src: dict) -> dict:
    kind = src.get("kind", "awslogs")
    if kind == "awslogs":
        return {"awslogs": {"data": encode(envelope(src), src.get("compression", "gzip"))}}
    if kind == "raw_data":  # deliberately broken data, to exercise error paths
        return {"awslogs": {"data": src["data"] if "data" in src else encode(src["plain"], "none")}}
    if kind == "kinesis":
        records = []
        for n, part in enumerate(src["records"]):
            records.append({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": f"pk-{n}",
                            "sequenceNumber": f"4963505228952972555329140552150487023321948971533231{n:04d}",
                            "data": encode(envelope(part), part.get("compression", "gzip")),
                            "approximateArrivalTimestamp": 1763632800.0 + n},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{n}", "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::111122223333:role/trailwatch-processor",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:111122223333:stream/trailwatch"})
        return {"Records": records}
    raise ValueError(f"unknown kind {kind!r}")


def main(argv: list[str]) -> int:
    stale = []
    for path in sorted(SOURCES.glob("*.json")):
        src = json.loads(path.read_text())
        out = HERE / path.name
        text = json.dumps(build(src), indent=1) + "\n"
        if not out.exists() or out.read_text() != text:
            stale.append(out.name)
            if "--check" not in argv:
                out.write_text(text)
    if "--check" in argv and stale:
        print("stale:", ", ".join(stale))
        return 1
    print(("rewrote " if stale else "up to date: ") + ", ".join(stale or ["all"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
