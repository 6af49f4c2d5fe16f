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
data (the subscription data, or the whole bad Kinesis entry / invocation event), a log-event
failure keeps message, log_event_id, timestamp and the stream it came from. A record too
large for the queue is in the S3 failure archive and its queue message carries
archive: {"bucket", "key"}. This command turns each record back into the invocation event the
processor receives and runs it, through the deployed function (--function) or in this process
(--local, with the processor's environment variables). A queue message is deleted only after
its event ran without a function error; what still cannot be processed is routed again as a new
failure record, so nothing is lost either way.

Lambda's own failure records are replayed too. An asynchronous invocation that exhausted its
retries (direct mode) is in the on-failure queue (stack output FailedInvocationsQueueUrl) with
its event as requestPayload. A stream batch that exhausted its retries (kinesis and
destination modes) is in the failure archive bucket under aws/lambda/ with the whole batch as
payload (--bucket; each object is deleted once its batch ran without error). A record
with only the batch's position (KinesisBatchInfo, from a queue destination) is read back from
the stream while the stream still holds it.
"""

REPLAY_FILTER = "trailwatch-replay"


LAMBDA_PREFIX = "aws/lambda/"     # where an event source mapping's S3 destination writes
MAX_GET_RECORDS = 100             # GetRecords calls to read one discarded batch back


def _invocation_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The event inside one of Lambda's own invocation records: ``requestPayload`` (asynchronous
    invocation, on-failure destination) or ``payload`` (event source mapping, S3 destination:
    the whole batch, as an object or as its JSON text)."""
    event = record.get("requestPayload", record.get("payload"))
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            return None
    if isinstance(event, dict) and (isinstance(event.get("awslogs"), dict)
                                    or isinstance(event.get("Records"), list)):
        return event
    return None


def to_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The invocation event that re-drives one failure record (None: nothing replayable)."""
    if isinstance(record.get("requestContext"), dict):     # Lambda's own invocation record
        return _invocation_event(record)
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


class BatchExpired(Exception):
    """The stream no longer holds (all of) a discarded batch."""


def stream_batch(kinesis: Any, info: dict[str, Any]) -> dict[str, Any]:
    """A discarded batch read back from its stream as the Kinesis event Lambda had sent, from its
    ``KinesisBatchInfo`` (shard, first and last sequence numbers, size). Raises
    :class:`BatchExpired` when the stream no longer holds the batch's first record."""
    arn, shard = info["streamArn"], info["shardId"]
    start, end = info["startSequenceNumber"], int(info["endSequenceNumber"])
    size = int(info.get("batchSize") or 10_000)
    name = arn.split(":stream/", 1)[1]
    try:
        it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard,
                                        ShardIteratorType="AT_SEQUENCE_NUMBER",
                                        StartingSequenceNumber=start)["ShardIterator"]
    except Exception as e:   # trimmed shard, deleted stream, no access: nothing to read
        raise BatchExpired(f"cannot read shard {shard} of {arn} at {start}: {e}") from None
    records: list[dict[str, Any]] = []
    for _ in range(MAX_GET_RECORDS):
        if not it or len(records) >= size:
            break
        resp = kinesis.get_records(ShardIterator=it, Limit=min(10_000, size - len(records)))
        for r in resp.get("Records", []):
            if int(r["SequenceNumber"]) > end:
                it = None
                break
            arrived = r.get("ApproximateArrivalTimestamp")
            records.append({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.get("PartitionKey"),
                            "sequenceNumber": r["SequenceNumber"],
                            "data": base64.b64encode(r["Data"]).decode(),
                            "approximateArrivalTimestamp":
                                arrived.timestamp() if hasattr(arrived, "timestamp") else arrived},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": f"{shard}:{r['SequenceNumber']}", "eventName": "aws:kinesis:record",
                "eventSourceARN": arn, "awsRegion": arn.split(":")[3]})
        else:
            if not resp.get("Records") and not resp.get("MillisBehindLatest"):
                break
            it = resp.get("NextShardIterator")
    if not records or records[0]["kinesis"]["sequenceNumber"] != start:
        raise BatchExpired(f"shard {shard} of {arn} no longer holds {start} (the stream's "
                           "retention has passed)")
    if int(records[-1]["kinesis"]["sequenceNumber"]) != end and len(records) < size:
        # Replaying part of the batch and deleting its record would lose the rest.
        raise BatchExpired(f"read back only {len(records)} of the batch's {size} record(s) from "
                           f"shard {shard} of {arn} (up to {end}); run replay again later")
    return {"Records": records}


def resolve(doc: dict[str, Any], s3: Any, kinesis: Any = None) -> dict[str, Any]:
    """A message's failure record, read whole from the archive when it points there; a stream
    batch known only by its position is read back from the stream (kept as it is when the stream
    no longer holds it: it is then reported, never deleted)."""
    archive = doc.get("archive")
    if isinstance(archive, dict):
        obj = s3.get_object(Bucket=archive["bucket"], Key=archive["key"])
        return json.loads(obj["Body"].read())
    info = doc.get("KinesisBatchInfo")
    if isinstance(info, dict) and "payload" not in doc and kinesis is not None:
        try:
            return dict(doc, payload=stream_batch(kinesis, info))
        except BatchExpired as e:
            return dict(doc, expired=str(e))
    return doc


def bucket_records(s3: Any, bucket: str, prefix: str, limit: int | None
                   ) -> Iterator[tuple[dict[str, Any], Callable[[], None]]]:
    """Lambda's invocation records in the failure archive bucket, each with its deletion."""
    seen = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if limit is not None and seen >= limit:
                return
            seen += 1
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"reason": "unreadable", "key": obj["Key"]}
            if not isinstance(doc, dict):
                doc = {"reason": "unreadable", "key": obj["Key"]}
            doc.setdefault("key", obj["Key"])

            def done(key: str = obj["Key"]) -> None:
                s3.delete_object(Bucket=bucket, Key=key)
            yield doc, done


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
        body = resp["Payload"].read()
        if resp.get("FunctionError"):
            return f"{resp['FunctionError']}: {body[:500].decode('utf-8', 'replace')}"
        try:      # a Kinesis batch reports the records it could not deliver, without an error
            failed = json.loads(body).get("batchItemFailures")
        except (ValueError, AttributeError):
            failed = None
        return f"batchItemFailures: {failed}" if failed else None
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


def _label(record: dict[str, Any]) -> str:
    ctx = record.get("requestContext")
    if isinstance(ctx, dict):            # Lambda's own record: what failed, and where it is
        where = record.get("key") or (record.get("KinesisBatchInfo") or {}).get("shardId")
        return " ".join(str(p) for p in (f"lambda:{ctx.get('condition')}", ctx.get("requestId"),
                                         where) if p)
    return f"{record.get('reason')} {record.get('source') or ''} " \
           f"{record.get('log_event_id') or ''}".strip()


def replay(records: Iterable[tuple[dict[str, Any], Callable[[], None] | None]],
           run: Callable[[dict[str, Any]], str | None], out: TextIO,
           dry_run: bool = False) -> dict[str, int]:
    """Run each record's event; call its ``done`` (delete from the queue) on success."""
    counts = {"replayed": 0, "failed": 0, "skipped": 0}
    for record, done in records:
        event = to_event(record)
        label = _label(record)
        if record.get("expired"):
            counts["skipped"] += 1
            print(f"skip   {label}: {record['expired']} (kept)", file=out)
            continue
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
    kinesis = client_factory("kinesis")
    records: list[tuple[dict[str, Any], Callable[[], None] | None]] = []
    if getattr(args, "bucket", None):
        records = [(resolve(d, s3, kinesis), None if args.dry_run else done)
                   for d, done in bucket_records(s3, args.bucket, args.prefix, args.max)]
    elif args.file:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        records = [(resolve(d, s3, kinesis), None) for d in docs]
    else:
        sqs = client_factory("sqs")
        for m in queue_messages(sqs, args.queue_url, args.max):
            def done(h: str = m["ReceiptHandle"]) -> None:
                sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=h)
            records.append((resolve(json.loads(m["Body"]), s3, kinesis),
                            None if args.dry_run else done))
    counts = replay(records, run, out, dry_run=args.dry_run)
    print(f"{counts['replayed']} replayed, {counts['failed']} failed, {counts['skipped']} skipped",
          file=out)
    return 1 if counts["failed"] else 0


def register(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Add ``replay`` to the trailwatch CLI (sets ``handler`` on the parsed arguments)."""
    p = subparsers.add_parser(
        "replay", parents=parents or [], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="re-drive failure records (queues or S3 archive) into the event processor",
        description=DESCRIPTION)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queue-url", metavar="URL",
                     help="the failure queue (stack output FailureQueueUrl) or Lambda's "
                          "on-failure queue (FailedInvocationsQueueUrl); messages are deleted "
                          "once their event ran without error")
    src.add_argument("--file", metavar="PATH",
                     help="failure records in a file (one JSON record, or JSON lines); archived "
                          "records are read from S3")
    src.add_argument("--bucket", metavar="NAME",
                     help="the failure archive bucket (stack output FailureArchiveBucketName): "
                          "stream batches that exhausted their retries; objects are deleted "
                          "once their batch ran without error")
    p.add_argument("--prefix", default=LAMBDA_PREFIX, metavar="PREFIX",
                   help=f"with --bucket: where Lambda writes the batches (default {LAMBDA_PREFIX})")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--function", metavar="NAME|ARN",
                     help="invoke the deployed processor (stack output ProcessorFunctionArn)")
    how.add_argument("--local", action="store_true",
                     help="run the processor in this process with its environment variables "
                          "(ALERT_TOPIC_ARN, FAILURE_QUEUE_URL, ...)")
    p.add_argument("--max", type=int, metavar="N",
                   help="replay at most N queue messages (or bucket objects)")
    p.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    if not parents:
        p.add_argument("--region", help="AWS region")
        p.add_argument("--profile", help="AWS profile to use")
    p.set_defaults(handler=cmd_replay)
