"""Lambda entry point: ``handlers/processor.py::lambda_handler``.

A thin shell around the pure pipeline: it reads configuration from the environment once (cold
start), routes what cannot be processed to the failure queue, publishes alerts to the configured
sinks and records Powertools metrics (EMF). Environment (contract names):

``ALERT_TOPIC_ARN``                  SNS topic for alerts (optional)
``ALERT_BUS_NAME``                   EventBridge bus for alerts (optional; neither -> alerts are logged)
``FAILURE_QUEUE_URL``                SQS queue for unprocessable payloads/records (optional: logged)
``DELIVERY_LAG_THRESHOLD_SECONDS``   one ``delivery_delayed`` alert per invocation above it (900)
``RULES_FILE``                       JSON file with extra rules in the filter-pattern language
``CLOCK_SKEW_TOLERANCE_SECONDS``     negative lag tolerated before counting clock skew (60)
``MAX_DECOMPRESSED_BYTES``           decompression cap per payload (8 MiB)
``EVENTBRIDGE_MAX_ENTRY_BYTES``      EventBridge entry limit (262144; AWS raised it to 1 MB in 2026)
``TRAIL_NAME``                       tamper rules: the trail to watch (handlers/tamper.py; unset: not watched)
``TRAIL_LOG_GROUP_NAME``             tamper rules: the trail's log group and trailwatch's CIS resources on it
``DELIVERY_ROLE_NAME``               tamper rules: the role CloudTrail assumes to write the log group
``AWS_LAMBDA_FUNCTION_NAME``         tamper rules: the processor itself (set by Lambda)
``SECURITY_HUB_FINDINGS``            ``enabled`` -> alerts also imported as ASFF findings (Security Hub)
``CHAT_TOPIC_ARN``                   SNS topic for Amazon Q Developer chat notifications (optional)
``ALERT_AGGREGATION_THRESHOLD``      > N matches of one rule by one principal per invocation -> one
                                     aggregated alert (20; 0 disables)
``IDEMPOTENCY_TABLE_NAME``           DynamoDB table: no alert published twice within the window
``IDEMPOTENCY_WINDOW_SECONDS``       that window (86400)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from handlers import canary as canary_mod
from handlers import emf
from handlers.alerts import DEFAULT_AGGREGATION_THRESHOLD, delivery_delayed_alert
from handlers.pipeline import (DEFAULT_LAG_THRESHOLD, DEFAULT_MAX_DECOMPRESSED,
                               DEFAULT_SKEW_TOLERANCE, PayloadError, Pipeline, Settings,
                               decode_subscription_data, iter_sources)
from handlers.dedupe import wrap_sinks
from handlers.routing import aggregate_for, routing_sinks
from handlers.rules import builtin_rules, load_rules_file
from handlers.sinks import (EVENTBRIDGE_MAX_ENTRY_BYTES, EventBridgeSink, FailureQueue, SnsSink,
                            default_client_factory)

SERVICE = "trailwatch"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Trailwatch")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class DeliveryFailed(RuntimeError):
    """Raised so Lambda retries the invocation (alert ids make the retry safe downstream)."""


def _num(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw in (None, ""):
        return default
    try:
        return float(raw)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


class App:
    aggregation_threshold = int(DEFAULT_AGGREGATION_THRESHOLD)

    def __init__(self, pipeline: Pipeline, sinks: list[Any], failure_queue: FailureQueue | None,
                 metrics_sink: Any = None, log: Any = None,
                 emit: Callable[[bytes], None] | None = None) -> None:
        self.pipeline = pipeline
        self.sinks = sinks
        self.failure_queue = failure_queue
        self.metrics = metrics_sink if metrics_sink is not None else metrics
        self.log = log if log is not None else logger
        self.emit = emit if emit is not None else emf.stdout_writer()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 client_factory: Callable[[str], Any] = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, **kw: Any) -> App:
        env = os.environ if env is None else env
        settings = Settings(
            lag_threshold=_num(env, "DELIVERY_LAG_THRESHOLD_SECONDS", DEFAULT_LAG_THRESHOLD),
            skew_tolerance=_num(env, "CLOCK_SKEW_TOLERANCE_SECONDS", DEFAULT_SKEW_TOLERANCE),
            max_decompressed_bytes=int(_num(env, "MAX_DECOMPRESSED_BYTES",
                                            DEFAULT_MAX_DECOMPRESSED)),
        )
        rules = builtin_rules(env)
        if env.get("RULES_FILE"):
            rules += load_rules_file(env["RULES_FILE"])
        sinks: list[Any] = []
        if env.get("ALERT_TOPIC_ARN"):
            sinks.append(SnsSink(env["ALERT_TOPIC_ARN"], client_factory, sleep))
        if env.get("ALERT_BUS_NAME"):
            sinks.append(EventBridgeSink(env["ALERT_BUS_NAME"], client_factory, sleep,
                                         max_entry_bytes=int(_num(env, "EVENTBRIDGE_MAX_ENTRY_BYTES",
                                                                  EVENTBRIDGE_MAX_ENTRY_BYTES))))
        sinks += routing_sinks(env, client_factory, sleep)
        sinks = wrap_sinks(sinks, env, client_factory)
        fq = FailureQueue(env["FAILURE_QUEUE_URL"], client_factory, sleep) \
            if env.get("FAILURE_QUEUE_URL") else None
        app = cls(Pipeline(rules, settings, clock), sinks, fq, **kw)
        app.aggregation_threshold = int(_num(env, "ALERT_AGGREGATION_THRESHOLD",
                                             DEFAULT_AGGREGATION_THRESHOLD))
        return app

    # ------------------------------------------------------------------------------ handle
    def handle(self, event: Any) -> dict[str, Any]:
        try:
            mode, sources = iter_sources(event)
        except PayloadError as e:
            mode, sources = "awslogs", []
            unsupported = e
        else:
            unsupported = None

        counts = dict(payloads=0, payload_errors=0, control_messages=0, log_events=0, records=0,
                      oversize=0, malformed=0, clock_skew=0, no_event_time=0, delayed=0,
                      alerts=0, failures_routed=0)
        failures: list[tuple[str, dict[str, Any]]] = []
        alerts: dict[str, dict[str, Any]] = {}        # alert_id -> alert (first one wins)
        # Kinesis: which records each alert came from, so a failed publish fails only those.
        origin: dict[str, set[str]] | None = {} if mode == "kinesis" else None
        delayed: list[dict[str, Any]] = []
        delayed_sources: set[str] = set()
        delivery_lags: list[float] = []
        receipt_lags: list[float] = []
        canaries: list[dict[str, Any]] = []

        if unsupported is not None:
            counts["payload_errors"] += 1
            self.log.error("unsupported invocation event", extra={"reason": unsupported.kind,
                                                                   "detail": unsupported.detail})
            failures.append(("event", {"reason": unsupported.kind, "detail": unsupported.detail,
                                       "source": "event", "event_keys": sorted(event)
                                       if isinstance(event, dict) else None}))

        max_bytes = self.pipeline.settings.max_decompressed_bytes
        for source_id, data in sources:
            counts["payloads"] += 1
            try:
                env = decode_subscription_data(data, max_bytes)
            except PayloadError as e:
                counts["payload_errors"] += 1
                self.log.error("undecodable subscription payload",
                               extra={"source": source_id, "reason": e.kind, "detail": e.detail})
                failures.append((source_id, {"reason": e.kind, "detail": e.detail,
                                             "source": source_id,
                                             "data": data if isinstance(data, str) else None}))
                continue
            message_type = env["messageType"]
            if message_type == "CONTROL_MESSAGE":
                counts["control_messages"] += 1
                continue
            if message_type != "DATA_MESSAGE":
                counts["payload_errors"] += 1
                failures.append((source_id, {"reason": "unknown_message_type",
                                             "detail": message_type, "source": source_id}))
                continue
            res = self.pipeline.process_envelope(env)
            counts["log_events"] += res.log_events
            counts["records"] += res.records
            counts["oversize"] += res.oversize
            counts["malformed"] += res.malformed
            counts["clock_skew"] += res.skewed
            counts["no_event_time"] += res.no_event_time
            delivery_lags += res.delivery_lags
            receipt_lags += res.receipt_lags
            canaries += res.canaries
            for f in res.failures:
                self.log.error("unprocessable log event", extra={
                    "reason": f["reason"], "detail": f["detail"], "log_event_id": f["log_event_id"],
                    "log_group": f["log_group"], "log_stream": f["log_stream"]})
                failures.append((source_id, f))
            for alert in res.alerts:
                alerts.setdefault(alert["alert_id"], alert)
                if origin is not None:
                    origin.setdefault(alert["alert_id"], set()).add(source_id)
            if res.delayed:
                delayed += res.delayed
                delayed_sources.add(source_id)

        counts["delayed"] = len(delayed)
        canary_mod.report(canaries, self.log, self.emit, NAMESPACE, SERVICE,
                          int(self.pipeline.clock() * 1000))
        if delayed:
            alert = delivery_delayed_alert(delayed, self.pipeline.settings.lag_threshold)
            alerts.setdefault(alert["alert_id"], alert)
            if origin is not None:
                origin.setdefault(alert["alert_id"], set()).update(delayed_sources)

        failed_sources = self._route_failures(failures)
        counts["failures_routed"] = len(failures)
        if failed_sources and mode == "awslogs":
            self._record_metrics(counts, delivery_lags, receipt_lags)
            raise DeliveryFailed(f"could not write {len(failures)} unprocessable item(s) to the "
                                 f"failure queue; failing the invocation so Lambda retries it")

        counts["alerts"] = len(alerts)
        undelivered = self._publish(aggregate_for(list(alerts.values()), origin,
                                                  self.aggregation_threshold))
        self._record_metrics(counts, delivery_lags, receipt_lags)

        if mode == "kinesis":
            assert origin is not None
            for ident in undelivered:
                failed_sources |= origin[ident]
            return {"batchItemFailures": [{"itemIdentifier": s} for s, _ in sources
                                          if s in failed_sources]}
        if undelivered:
            raise DeliveryFailed("some alerts could not be published after retries; failing the "
                                 "invocation so Lambda retries it (alert ids make that safe)")
        # Percentiles are CloudWatch's job (the EMF samples above); the response carries the max.
        counts["max_delivery_lag_seconds"] = round(max(delivery_lags), 3) if delivery_lags else None
        return counts

    def _route_failures(self, failures: list[tuple[str, dict[str, Any]]]) -> set[str]:
        if not failures:
            return set()
        if self.failure_queue is None:
            for _, f in failures:
                self.log.error("unprocessable item (no FAILURE_QUEUE_URL configured)",
                               extra={"failure": f})
            return set()
        undelivered = self.failure_queue.send([f for _, f in failures])
        for u in undelivered:
            self.log.error("failure queue write failed", extra=u)
        return {failures[int(u["id"][1:])][0] for u in undelivered}

    def _publish(self, alerts: list[dict[str, Any]]) -> set[str]:
        """Send every alert to every sink; return the ids some sink could not deliver."""
        if not alerts:
            return set()
        if not self.sinks:
            for alert in alerts:
                self.log.warning("alert", extra={"alert": alert})
            return set()
        failed: set[str] = set()
        for sink in self.sinks:
            for u in sink.publish(alerts):
                self.log.error("alert not delivered", extra={"sink": sink.name, **u})
                failed.add(u["id"])
        return failed

    def _record_metrics(self, counts: dict[str, int], delivery_lags: list[float],
                        receipt_lags: list[float]) -> None:
        m = self.metrics
        count = MetricUnit.Count
        for name, key in (("Payloads", "payloads"), ("PayloadErrors", "payload_errors"),
                          ("ControlMessages", "control_messages"), ("LogEvents", "log_events"),
                          ("CloudTrailRecords", "records"), ("OversizeEvents", "oversize"),
                          ("MalformedEvents", "malformed"), ("ClockSkewEvents", "clock_skew"),
                          ("DelayedEvents", "delayed"), ("Alerts", "alerts")):
            # Zero counters are skipped (alarms treat missing data as not breaching); LogEvents
            # is always sent so the dashboard shows the invocation.
            if counts[key] or key == "log_events":
                m.add_metric(name=name, unit=count, value=counts[key])
        # One sample per record so CloudWatch can compute p50/p95 (DeliveryLag = CloudTrail's
        # delivery time - eventTime; ReceiptLag = our receive time - delivery time).
        now_ms = int(self.pipeline.clock() * 1000)
        for doc in emf.documents({"DeliveryLag": delivery_lags, "ReceiptLag": receipt_lags},
                                 "Seconds", NAMESPACE, SERVICE, now_ms):
            self.emit(doc)


_APP: App | None = None


def get_app() -> App:
    global _APP
    if _APP is None:
        _APP = App.from_env()
    return _APP


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_app().handle(event)
