"""The failure queue (SQS) and its S3 archive: unprocessable payloads and records, whole.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from handlers.clients import default_client_factory
from handlers.jsonsafe import dumps as safe_dumps
from handlers.sinks.base import ClientFactory, _Lazy, _RetryingSink, pack

SQS_MAX_BYTES = 262_144          # FAILURE_QUEUE_MAX_BYTES default: queues created with 256 KiB keep it
SQS_MAX_BATCH_BYTES = 1_048_576  # SendMessageBatch total (and the largest MaximumMessageSize)
SQS_MAX_BATCH = 10


class FailureQueue(_RetryingSink):
    """SQS queue for records and payloads trailwatch could not process (never dropped, never cut).

    Each failure record is serialised losslessly (:func:`handlers.jsonsafe.dumps`). A record that
    does not fit the queue's ``MaximumMessageSize`` (``max_bytes``, env ``FAILURE_QUEUE_MAX_BYTES``)
    is written whole to the S3 failure archive (``archive_bucket``, env
    ``FAILURE_ARCHIVE_BUCKET``) and the queue message is a pointer: the record's small keys plus
    ``archive: {"bucket", "key"}``. Without an archive bucket such a record is undeliverable (the
    invocation fails and Lambda's retry/on-failure destination keeps the event).
    """

    name = "failure_queue"
    POINTER_KEYS = ("reason", "detail", "source", "sequence_number", "log_event_id", "timestamp",
                    "owner", "log_group", "log_stream")

    def __init__(self, queue_url: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep, max_bytes: int = SQS_MAX_BYTES,
                 archive_bucket: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(sleep, clock)
        self.queue_url = queue_url
        self.client = _Lazy("sqs", client_factory)
        self.s3 = _Lazy("s3", client_factory)
        self.max_bytes = max_bytes
        self.archive_bucket = archive_bucket or None
        self.wall_clock = wall_clock

    @staticmethod
    def body(failure: dict[str, Any]) -> bytes:
        """The whole record as JSON: lossless for any value, and only characters SQS accepts."""
        return safe_dumps(failure)

    def pointer(self, failure: dict[str, Any], bucket: str, key: str, size: int) -> bytes:
        cap = max(64, min(1024, self.max_bytes // 16))
        doc: dict[str, Any] = {}
        for k in self.POINTER_KEYS:
            if k in failure:
                v = safe_dumps(failure[k])
                doc[k] = failure[k] if len(v) <= cap else \
                    {"trailwatch_truncated": True, "original_bytes": len(v),
                     "preview": v[: cap // 8].decode("ascii", "ignore")}
        doc["archive"] = {"bucket": bucket, "key": key}
        doc["archived_bytes"] = size
        return safe_dumps(doc)

    def archive(self, body: bytes) -> tuple[str, str]:
        assert self.archive_bucket
        day = time.strftime("%Y/%m/%d", time.gmtime(self.wall_clock()))
        key = f"failures/{day}/{hashlib.sha256(body).hexdigest()}.json"   # same record, same key
        self.s3().put_object(Bucket=self.archive_bucket, Key=key, Body=body,
                             ContentType="application/json")
        return self.archive_bucket, key

    def send(self, failures: Sequence[dict[str, Any]],
             deadline: float | None = None) -> list[dict[str, str]]:
        if not failures:
            return []
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        bad: list[dict[str, str]] = []
        for n, failure in enumerate(failures):
            ident = f"f{n}"
            try:
                body = self.body(failure)
                if len(body) > self.max_bytes:
                    if not self.archive_bucket:
                        raise ValueError(f"record of {len(body)} bytes exceeds the queue's "
                                         f"{self.max_bytes} (FAILURE_QUEUE_MAX_BYTES) and no "
                                         f"FAILURE_ARCHIVE_BUCKET is set")
                    if deadline is not None and self.clock() >= deadline:
                        raise TimeoutError("deadline: not archived before the time ran out")
                    bucket, key = self.archive(body)
                    body = self.pointer(failure, bucket, key, len(body))
            except Exception as e:  # noqa: BLE001 - this record's failure, not the batch's
                bad.append({"id": ident, "error": f"{type(e).__name__}: {e}"})
                continue
            entries[ident] = {"Id": ident, "MessageBody": body.decode("utf-8")}
            sizes.append((ident, len(body)))
        return bad + self._deliver(entries, pack(sizes, SQS_MAX_BATCH, min(SQS_MAX_BATCH_BYTES, max(self.max_bytes, 1))), deadline)

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().send_message_batch(QueueUrl=self.queue_url,
                                                Entries=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])]
