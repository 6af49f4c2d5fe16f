"""Cross-invocation deduplication of alerts with Powertools' Idempotency utility on DynamoDB.

Enabled by ``IDEMPOTENCY_TABLE_NAME`` (the template's ``AlertIdempotency=enabled`` creates the
table, keyed on ``id`` with TTL on ``expiration``). Each sink is wrapped in :class:`IdempotentSink`:
before publishing, the wrapper claims ``"<sink>:<alert_id>"`` in the table (Powertools
``save_inprogress``); an alert whose claim finds a COMPLETED record within the window
(``IDEMPOTENCY_WINDOW_SECONDS``, default 24 h) is not published again. After publishing, delivered
alerts are saved as COMPLETED and undelivered ones are deleted so the retry publishes them.

Keys are per sink, so a retry after a partial failure (SNS delivered, EventBridge not) publishes
only where it is missing. The wrapper never loses an alert to protect against a duplicate:
  * a claim held IN PROGRESS by an invocation that crashed (or one running now) does not suppress
    the alert: it is published again (a duplicate at worst);
  * if the table cannot be read or written, the alert is published anyway and the error logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_WINDOW = 24 * 3600
IN_PROGRESS_MS = 15 * 60 * 1000     # Lambda's maximum timeout: a crashed claim expires after it

log = logging.getLogger(__name__)


def persistence_layer(table: str, client: Any = None) -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


class IdempotentSink:
    """Wraps a sink (``name``, ``publish(alerts) -> undelivered``) with cross-invocation dedup."""

    def __init__(self, inner: Any, persistence: Any, window_seconds: int = DEFAULT_WINDOW,
                 remaining_ms: Callable[[], int] = lambda: IN_PROGRESS_MS) -> None:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        self.inner = inner
        self.name = inner.name
        self.persistence = persistence
        self.remaining_ms = remaining_ms
        self.suppressed = 0          # alerts not published again (counted per sink, for tests/logs)
        persistence.configure(IdempotencyConfig(event_key_jmespath="key",
                                                expires_after_seconds=int(window_seconds)),
                              function_name=f"trailwatch-alerts-{inner.name}")

    def _data(self, alert: dict[str, Any]) -> dict[str, str]:
        return {"key": f"{self.name}:{alert['alert_id']}"}

    def _claim(self, alert: dict[str, Any]) -> str:
        """"claimed" (publish, then settle), "done" (suppress) or "unclaimed" (publish anyway)."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
        )

        data = self._data(alert)
        try:
            self.persistence.save_inprogress(data, remaining_time_in_millis=self.remaining_ms())
            return "claimed"
        except IdempotencyItemAlreadyExistsError as e:
            old = e.old_data_record
            if old is None:
                try:
                    old = self.persistence.get_record(data)
                except Exception:   # noqa: BLE001 - gone or unreadable: publish
                    old = None
            return "done" if old is not None and old.status == "COMPLETED" else "unclaimed"
        except Exception as e:  # noqa: BLE001 - the table must never silence an alert
            log.error("idempotency table unavailable; publishing without dedup: %s", e)
            return "unclaimed"

    def publish(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not alerts:
            return []
        fresh: list[dict[str, Any]] = []
        for alert in alerts:
            state = self._claim(alert)
            if state == "done":
                self.suppressed += 1
            else:
                fresh.append(alert)
        undelivered = self.inner.publish(fresh) if fresh else []
        failed = {u["id"] for u in undelivered}
        for alert in fresh:
            data = self._data(alert)
            try:
                if alert["alert_id"] in failed:
                    self.persistence.delete_record(data, RuntimeError("not delivered"))
                else:
                    self.persistence.save_success(data, {"published": True})
            except Exception as e:  # noqa: BLE001 - at worst the next delivery duplicates it
                log.error("idempotency record not settled for %s: %s", data["key"], e)
        return undelivered


def wrap_sinks(sinks: list[Any], table: str | None, client_factory: Callable[[str], Any],
               window: int = DEFAULT_WINDOW) -> list[Any]:
    """A table (``IDEMPOTENCY_TABLE_NAME``, checked by :mod:`handlers.settings`) -> every sink
    wrapped, suppressing for ``window`` seconds (``IDEMPOTENCY_WINDOW_SECONDS``); no table ->
    the sinks unchanged."""
    if not table or not sinks:
        return sinks
    client = client_factory("dynamodb")
    return [IdempotentSink(s, persistence_layer(table, client), window) for s in sinks]
