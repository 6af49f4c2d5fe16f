"""What every sink shares: lazy clients, byte-exact batch packing and the bounded retry loop.

Every sink packs its requests within the service's documented limits *in bytes* (moto does not
enforce them, so these functions do), retries partial failures with bounded backoff, and returns
the ids it could not deliver so the caller can fail the invocation (or the Kinesis record).

boto3 is imported lazily, on the first publish: a cold start that raises no alert never pays
for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

ClientFactory = Callable[[str], Any]


_LAZY_LOCK = threading.Lock()


class _Lazy:
    def __init__(self, service: str, factory: ClientFactory) -> None:
        self.service = service
        self.factory = factory
        self._client: Any = None

    def __call__(self) -> Any:
        if self._client is None:
            with _LAZY_LOCK:   # sinks publish from several threads; build the client once
                if self._client is None:
                    self._client = self.factory(self.service)
        return self._client


def pack(items: Sequence[tuple[str, int]], max_count: int, max_total: int) -> list[list[str]]:
    """Greedy batching of (id, size) pairs so each batch has <= max_count items and total bytes."""
    batches: list[list[str]] = []
    cur: list[str] = []
    total = 0
    for ident, size in items:
        if size > max_total:
            raise ValueError(f"item {ident} is {size} bytes, larger than a whole batch ({max_total})")
        if cur and (len(cur) == max_count or total + size > max_total):
            batches.append(cur)
            cur, total = [], 0
        cur.append(ident)
        total += size
    if cur:
        batches.append(cur)
    return batches


class _RetryingSink:
    """Send entries in batches; retry the ones a partial failure reports, with bounded backoff.

    A whole call that raises (``ClientError`` after botocore's own retries, a timeout, a bug in a
    batch) fails that batch's entries, which are retried like partial failures. With a
    ``deadline`` (on ``clock``), no call starts and no backoff sleeps past it: what is left is
    reported undelivered, so the caller can fail the invocation before Lambda kills it.

    Errors no retry can cure are *permanent*: a whole call that fails with an error code in
    ``permanent_call_errors``, or an entry the service reports with a code in
    ``permanent_entry_errors``. Those entries are not retried; they are reported with
    ``"permanent": True``, and the processor logs and counts them (``AlertsRejected``, alarmed)
    without failing the invocation. Everything else is transient (retried within the deadline).
    """

    name = "sink"
    max_attempts = 4
    base_delay = 0.2
    max_delay = 2.0
    permanent_call_errors: frozenset[str] = frozenset()
    permanent_entry_errors: frozenset[str] = frozenset()

    def __init__(self, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sleep = sleep
        self.clock = clock
        self.calls = 0

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _deliver(self, entries: dict[str, Any], batches: list[list[str]],
                 deadline: float | None = None) -> list[dict[str, Any]]:
        pending = [i for b in batches for i in b]
        errors: dict[str, str] = {}
        permanent: dict[str, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                if deadline is not None and self.clock() + delay >= deadline:
                    break
                self.sleep(delay)
            failed: list[str] = []
            for batch in self._rebatch(pending, batches, attempt):
                if deadline is not None and self.clock() >= deadline:
                    for ident in batch:
                        failed.append(ident)
                        errors.setdefault(ident, "deadline: not sent before the invocation's "
                                                 "time ran out")
                    continue
                self.calls += 1
                try:
                    results = self._send_batch(batch, entries)
                except Exception as e:  # noqa: BLE001 - a whole-call failure is this batch's
                    code, message = _error_code(e)
                    if code in self.permanent_call_errors:
                        for ident in batch:
                            permanent[ident] = f"{code}: {message}"
                        continue
                    results = [(ident, f"{type(e).__name__}: {e}") for ident in batch]
                for ident, err in results:
                    if err.split(":", 1)[0] in self.permanent_entry_errors:
                        permanent[ident] = err
                        continue
                    failed.append(ident)
                    errors[ident] = err
            pending = failed
            if not failed:
                break
        return [{"id": i, "error": errors.get(i, "deadline")} for i in pending] + \
            [{"id": i, "error": err, "permanent": True} for i, err in permanent.items()]

    def _rebatch(self, pending: list[str], batches: list[list[str]], attempt: int) -> list[list[str]]:
        if attempt == 0:
            return batches
        keep = set(pending)
        return [[i for i in b if i in keep] for b in batches if any(i in keep for i in b)]


def _error_code(exc: BaseException) -> tuple[str, str]:
    """(code, message) of a botocore ``ClientError`` (its ``response``), else ("", "")."""
    err = getattr(exc, "response", None)
    err = err.get("Error") if isinstance(err, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("Code") or ""), str(err.get("Message") or "")


def _prepare_each(prepare: Callable[[Sequence[dict[str, Any]]], tuple[dict[str, Any], list[Any]]],
                  alerts: Sequence[dict[str, Any]]
                  ) -> tuple[dict[str, Any], list[tuple[str, int]], list[dict[str, str]]]:
    """``prepare`` over all alerts; if it raises, alert by alert, so one alert that cannot be
    prepared (e.g. ``AlertTooLarge``) is that alert's failure, not its batch's."""
    try:
        entries, sizes = prepare(alerts)
        return entries, sizes, []
    except Exception:  # noqa: BLE001 - isolate the bad alert below
        pass
    entries, sizes, bad = {}, [], []
    for alert in alerts:
        try:
            e, sz = prepare([alert])
        except Exception as exc:  # noqa: BLE001
            bad.append({"id": str(alert.get("alert_id")), "error": f"{type(exc).__name__}: {exc}"})
            continue
        entries.update(e)
        sizes += sz
    return entries, sizes, bad
