"""``trailwatch replay``: re-drive failure records into the event processor after a fix.

Its ``--help`` text is :data:`DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

DESCRIPTION = """\
The processor routes what it cannot process to the failure queue, whole: a payload failure keeps
``data`` (the subscription data, or the whole bad Kinesis entry / invocation event), a log-event
failure keeps ``message``, ``log_event_id``, ``timestamp`` and the stream it came from. A record too
large for the queue is in the S3 failure archive and its queue message carries
``archive: {"bucket", "key"}``. This command turns each record back into the invocation event the
processor receives and runs it, through the deployed function (``--function``) or in this process
(``--local``, with the processor's environment variables). A queue message is deleted only after
its event ran without a function error; what still cannot be processed is routed again as a new
failure record, so nothing is lost either way.

Lambda's own failure records are re-driven too (--queue-url of the on-failure queue): an
asynchronous invocation record (direct mode) replays its ``requestPayload``, the whole event; a
Kinesis event source mapping's record carries only ``KinesisBatchInfo`` (shard and sequence
range), so that range is read again from the stream, which keeps records for its retention
period only (24 hours by default). A range no longer in the stream is reported and kept.
"""

REPLAY_FILTER = "trailwatch-replay"


def to_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The invocation event that re-drives one failure record (None: nothing replayable)."""
    payload = record.get("requestPayload")     # Lambda's asynchronous invocation record
    if isinstance(payload, dict):
        return payload if isinstance(payload.get("awslogs"), dict) or \
            isinstance(payload.get("Records"), list) else None
    if "data" in record:
        data = record["data"]
        if isinstance(data, str):
            return {"awslogs": {"data": data}}
        if isinstance(data, dict):
            kin = data.get("kinesis")
            if isinstance(kin, dict) and isinstance(kin.get("data"), str):   # a bad Kinesis entry
                return {"awslogs": {"data": kin["data"]}}
            if isinstance(data.get("awslogs"), dict) or isinstance(data.get("Records"), list):
                return data                                                 # a whole event
        return None
    ev = record.get("log_event")
    if ev is None and "message" in record:
        ev = {"id": record.get("log_event_id"), "timestamp": record.get("timestamp"),
              "message": record.get("message")}
    if ev is None:
        return None
    env = {"messageType": "DATA_MESSAGE", "owner": record.get("owner"),
           "logGroup": record.get("log_group"), "logStream": record.get("log_stream"),
           "subscriptionFilters": [REPLAY_FILTER], "logEvents": [ev]}
    body = json.dumps(env, ensure_ascii=True).encode()
    return {"awslogs": {"data": base64.b64encode(gzip.compress(body, mtime=0)).decode()}}


MAX_GET_RECORDS_CALLS = 100


def kinesis_batch(doc: dict[str, Any], kinesis: Any) -> dict[str, Any]:
    """A Kinesis event source mapping's failure record (``KinesisBatchInfo``) as a failure record
    whose ``data`` is the Kinesis event of that batch, read again from the stream; without
    ``data`` (kept, reported) when the stream no longer has the range."""
    info = doc["KinesisBatchInfo"]
    shard, start, end = info.get("shardId"), info.get("startSequenceNumber"), \
        info.get("endSequenceNumber")
    arn = str(info.get("streamArn") or "")
    label = {"reason": "kinesis_batch", "source": f"{shard}:{start}..{end}"}
    try:
        # By name: replay runs in the stream's account, the audit stack's (the stream's ARN is
        # only needed across accounts).
        it = kinesis.get_shard_iterator(StreamName=arn.split(":stream/", 1)[-1], ShardId=shard,
                                        ShardIteratorType="AT_SEQUENCE_NUMBER",
                                        StartingSequenceNumber=start)["ShardIterator"]
        records: list[dict[str, Any]] = []
        for _ in range(MAX_GET_RECORDS_CALLS):
            resp = kinesis.get_records(ShardIterator=it, Limit=1000)
            batch = resp.get("Records", [])
            records += [r for r in batch if int(r["SequenceNumber"]) <= int(end)]
            it = resp.get("NextShardIterator")
            if not it or any(int(r["SequenceNumber"]) >= int(end) for r in batch) or \
                    (not batch and not resp.get("MillisBehindLatest")):
                break
    except Exception as e:  # noqa: BLE001 - reported, the record is kept
        return {**label, "detail": f"cannot read the batch from {arn}: {e}"}
    if not records or records[0]["SequenceNumber"] != start:
        return {**label, "detail": f"the batch is no longer in {arn} (past its retention)"}
    event = {"Records": [{
        "eventSource": "aws:kinesis", "eventSourceARN": arn, "eventID": f"{shard}:{r['SequenceNumber']}",
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.get("PartitionKey"),
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode()}} for r in records]}
    return {**label, "data": event}


def resolve(doc: dict[str, Any], s3: Any) -> dict[str, Any]:
    """A queue message's failure record, read whole from the archive when it points there."""
    archive = doc.get("archive")
    if isinstance(archive, dict):
        obj = s3.get_object(Bucket=archive["bucket"], Key=archive["key"])
        return json.loads(obj["Body"].read())
    return doc


def queue_messages(sqs: Any, url: str, limit: int | None) -> Iterator[dict[str, Any]]:
    seen = 0
    while limit is None or seen < limit:
        n = 10 if limit is None else min(10, limit - seen)
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, WaitTimeSeconds=1,
                                   VisibilityTimeout=300).get("Messages", [])
        if not msgs:
            return
        for m in msgs:
            seen += 1
            yield m


def lambda_runner(client: Any, function: str) -> Callable[[dict[str, Any]], str | None]:
    def run(event: dict[str, Any]) -> str | None:
        resp = client.invoke(FunctionName=function, InvocationType="RequestResponse",
                             Payload=json.dumps(event).encode())
        if resp.get("FunctionError"):
            return f"{resp['FunctionError']}: {resp['Payload'].read()[:500].decode('utf-8', 'replace')}"
        return None
    return run


def local_runner() -> Callable[[dict[str, Any]], str | None]:
    from handlers.processor import App, DeliveryFailed
    app = App.from_env()

    def run(event: dict[str, Any]) -> str | None:
        try:
            out = app.handle(event)
        except DeliveryFailed as e:
            return str(e)
        failed = out.get("batchItemFailures") if isinstance(out, dict) else None
        return f"batchItemFailures: {failed}" if failed else None
    return run


def replay(records: Iterable[tuple[dict[str, Any], Callable[[], None] | None]],
           run: Callable[[dict[str, Any]], str | None], out: TextIO,
           dry_run: bool = False) -> dict[str, int]:
    """Run each record's event; call its ``done`` (delete from the queue) on success."""
    counts = {"replayed": 0, "failed": 0, "skipped": 0}
    for record, done in records:
        event = to_event(record)
        label = f"{record.get('reason')} {record.get('source') or ''} " \
                f"{record.get('log_event_id') or ''}".strip()
        if event is None:
            counts["skipped"] += 1
            print(f"skip   {label}: nothing replayable in the record (kept)", file=out)
            continue
        if dry_run:
            counts["replayed"] += 1
            print(f"would  {label}", file=out)
            continue
        error = run(event)
        if error:
            counts["failed"] += 1
            print(f"FAILED {label}: {error} (kept)", file=out)
            continue
        counts["replayed"] += 1
        print(f"ok     {label}", file=out)
        if done is not None:
            done()
    return counts


def cmd_replay(args: argparse.Namespace, out: TextIO | None = None,
               client_factory: Callable[[str], Any] | None = None) -> int:
    out = out or sys.stdout
    if client_factory is None:
        import boto3
        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        client_factory = session.client
    if args.function:
        run = lambda_runner(client_factory("lambda"), args.function)
    else:
        run = local_runner()
    s3 = client_factory("s3")
    records: list[tuple[dict[str, Any], Callable[[], None] | None]] = []
    if args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        records = [(resolve(d, s3), None) for d in docs]
    else:
        sqs = client_factory("sqs")
        for m in queue_messages(sqs, args.queue_url, args.max):
            def done(h: str = m["ReceiptHandle"]) -> None:
                sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=h)
            doc = json.loads(m["Body"])
            if isinstance(doc, dict) and isinstance(doc.get("KinesisBatchInfo"), dict):
                doc = kinesis_batch(doc, client_factory("kinesis"))
            records.append((resolve(doc, s3), None if args.dry_run else done))
    counts = replay(records, run, out, dry_run=args.dry_run)
    print(f"{counts['replayed']} replayed, {counts['failed']} failed, {counts['skipped']} skipped",
          file=out)
    return 1 if counts["failed"] else 0


def register(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Add ``replay`` to the trailwatch CLI (sets ``handler`` on the parsed arguments)."""
    p = subparsers.add_parser(
        "replay", parents=parents or [], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="re-drive failure records (queue or S3 archive) into the event processor",
        description=DESCRIPTION.replace("``", ""))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queue-url", metavar="URL",
                     help="the failure queue (stack output FailureQueueUrl) or Lambda's "
                          "on-failure queue (FailedInvocationsQueueUrl); messages are deleted "
                          "once their event ran without error")
    src.add_argument("--file", metavar="PATH",
                     help="failure records in a file (one JSON record, or JSON lines); archived "
                          "records are read from S3")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--function", metavar="NAME|ARN",
                     help="invoke the deployed processor (stack output ProcessorFunctionArn)")
    how.add_argument("--local", action="store_true",
                     help="run the processor in this process with its environment variables "
                          "(ALERT_TOPIC_ARN, FAILURE_QUEUE_URL, ...)")
    p.add_argument("--max", type=int, metavar="N", help="replay at most N queue messages")
    p.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    if not parents:
        p.add_argument("--region", help="AWS region")
        p.add_argument("--profile", help="AWS profile to use")
    p.set_defaults(handler=cmd_replay)
