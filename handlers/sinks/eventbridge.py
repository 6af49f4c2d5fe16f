"""The EventBridge alert bus: one entry per alert, within the entry and request size limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from handlers.alerts import detail_type, fit
from handlers.clients import default_client_factory
from handlers.sinks.base import ClientFactory, _Lazy, _prepare_each, _RetryingSink, pack

EVENTBRIDGE_MAX_ENTRY_BYTES = 262_144   # API text; AWS raised event size to 1 MB in 2026: configurable
EVENTBRIDGE_MAX_REQUEST_BYTES = 262_144
EVENTBRIDGE_MAX_BATCH = 10
EVENT_SOURCE = "trailwatch"      # contract name; detail-type is one per kind (alerts.DETAIL_TYPES)


def eventbridge_entry_size(entry: dict[str, Any]) -> int:
    """AWS's documented PutEvents entry-size calculation."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if entry.get(key):
            size += len(entry[key].encode("utf-8"))
    for res in entry.get("Resources") or ():
        size += len(res.encode("utf-8"))
    return size


class EventBridgeSink(_RetryingSink):
    name = "eventbridge"

    def __init__(self, bus_name: str, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep,
                 max_entry_bytes: int = EVENTBRIDGE_MAX_ENTRY_BYTES,
                 max_request_bytes: int = EVENTBRIDGE_MAX_REQUEST_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sleep, clock)
        self.bus_name = bus_name
        self.client = _Lazy("events", client_factory)
        self.max_entry_bytes = max_entry_bytes
        # A request must at least hold one maximal entry.
        self.max_request_bytes = max(max_request_bytes, max_entry_bytes)

    def prepare(self, alerts: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        for alert in alerts:
            dtype = detail_type(alert)
            resources = [r for r in alert.get("resources") or () if isinstance(r, str)]
            fixed = eventbridge_entry_size({"Source": EVENT_SOURCE, "DetailType": dtype,
                                            "Resources": resources})
            body = fit(alert, self.max_entry_bytes - fixed)
            entry = {"Source": EVENT_SOURCE, "DetailType": dtype, "Resources": resources,
                     "Detail": body.decode("utf-8"), "EventBusName": self.bus_name}
            entries[alert["alert_id"]] = entry
            # = eventbridge_entry_size(entry): the Detail's UTF-8 bytes are the body itself
            sizes.append((alert["alert_id"], fixed + len(body)))
        return entries, sizes

    def publish(self, alerts: Sequence[dict[str, Any]],
                deadline: float | None = None) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes, bad = _prepare_each(self.prepare, alerts)
        return bad + self._deliver(entries, pack(sizes, EVENTBRIDGE_MAX_BATCH,
                                                  self.max_request_bytes), deadline)

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().put_events(Entries=[entries[i] for i in ids])
        if not resp.get("FailedEntryCount"):
            return []
        # Result entries are in request order.
        return [(ident, f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}")
                for ident, r in zip(ids, resp.get("Entries", []), strict=False) if r.get("ErrorCode")]
